// The API's answers the page reads (docs/openapi.json is the full document).

export type JobStatus = "pending" | "queued" | "running" | "succeeded" | "failed" | "cancelled";
export const TERMINAL: readonly JobStatus[] = ["succeeded", "failed", "cancelled"];
export const FORMATS = ["txt", "srt", "vtt", "json"] as const;
export type Format = (typeof FORMATS)[number];
export const PRIORITIES = ["high", "normal", "low"] as const;

export interface JobOptions {
  language?: string;
  model?: string | null;
  word_timestamps?: boolean;
  formats?: Format[];
  initial_prompt?: string | null;
  channels?: "mix" | "split";
  share_windows?: boolean;
}

export interface UploadTicket {
  url: string;
  fields: Record<string, string>;
}

export interface QueueView {
  position: number;
  estimated_start_at: string | null;
}

export interface ResultView {
  language: string;
  duration_seconds: number;
  cost_usd: number | null;
  urls: Partial<Record<Format, string>>;
}

export interface JobView {
  job_id: string;
  status: JobStatus;
  priority: string;
  progress: number;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  input: { filename: string; content_type: string; size_bytes: number };
  options: JobOptions;
  error: { code: string; message: string } | null;
  result: ResultView | null;
  log_url: string | null;
  queue: QueueView | null;
  upload?: UploadTicket | null;
}

export interface JobList {
  jobs: JobView[];
  next_token: string | null;
}

export interface MultipartTicket {
  part_size: number;
  part_count: number;
  parts: { part_number: number; url: string }[];
  uploaded: { part_number: number; etag: string; size: number | null }[];
}

export interface ModelList {
  models: { name: string; pool: string; english_only: boolean }[];
  default: string | null;
}

export interface InputUrl {
  url: string;
  content_type: string;
}

export interface Word {
  start: number;
  end: number;
  word: string;
}

export interface Segment {
  start: number;
  end: number;
  text: string;
  words?: Word[];
  channel?: number;
}

export interface Transcript {
  language: string;
  duration: number;
  segments: Segment[];
}
