// Sending a file as the CLI does: one presigned POST for a small file, parts PUT to presigned
// URLs for a large one (each part's ETag kept, then completed through the API). Progress is the
// bytes the browser has sent; cancel stops the transfer, drops the parts and cancels the job.

import { ApiError, type Api } from "./api";
import type { JobView, MultipartTicket } from "./types";

export type Progress = (sent: number, total: number) => void;

export class Upload {
  private xhr: XMLHttpRequest | null = null;
  private cancelled = false;
  private multipart = false;

  constructor(
    private readonly api: Api,
    private readonly job: JobView,
    private readonly file: File,
    private readonly multipartBytes: number,
  ) {}

  async run(progress: Progress): Promise<void> {
    const ticket = this.job.upload;
    if (this.file.size <= this.multipartBytes && ticket) {
      const form = new FormData();
      for (const [k, v] of Object.entries(ticket.fields)) form.append(k, v);
      form.append("file", this.file);
      await this.send("POST", ticket.url, form, (n) => progress(n, this.file.size));
    } else {
      this.multipart = true;
      await this.parts(progress);
    }
    progress(this.file.size, this.file.size);
  }

  /** Stop the transfer; the job is cancelled (and its parts dropped) so nothing waits for it. */
  async cancel(): Promise<void> {
    this.cancelled = true;
    this.xhr?.abort();
    const id = this.job.job_id;
    if (this.multipart) await this.api.request("POST", `/jobs/${id}/multipart/abort`).catch(() => undefined);
    await this.api.request("POST", `/jobs/${id}/cancel`);
  }

  private async parts(progress: Progress): Promise<void> {
    const id = this.job.job_id;
    let ticket = await this.api.request<MultipartTicket>("POST", `/jobs/${id}/multipart`);
    const etags = new Map(ticket.uploaded.map((p) => [p.part_number, p.etag]));
    let done = ticket.uploaded.reduce((n, p) => n + (p.size ?? 0), 0);
    while (etags.size < ticket.part_count) {
      for (const part of ticket.parts) {
        const start = (part.part_number - 1) * ticket.part_size;
        const blob = this.file.slice(start, start + ticket.part_size);
        const xhr = await this.send("PUT", part.url, blob, (n) => progress(done + n, this.file.size));
        const etag = xhr.getResponseHeader("ETag");
        if (!etag) throw new ApiError(0, "upload_failed", "S3 gave no ETag for a part (its CORS must expose ETag)");
        etags.set(part.part_number, etag);
        done += blob.size;
      }
      if (etags.size < ticket.part_count) ticket = await this.api.request("POST", `/jobs/${id}/multipart`);
    }
    const parts = [...etags].sort((a, b) => a[0] - b[0]).map(([part_number, etag]) => ({ part_number, etag }));
    await this.api.request("POST", `/jobs/${id}/multipart/complete`, { parts });
  }

  private send(method: string, url: string, body: Blob | FormData, sent: (n: number) => void): Promise<XMLHttpRequest> {
    return new Promise((resolve, reject) => {
      if (this.cancelled) return reject(new ApiError(0, "upload_cancelled", "cancelled"));
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      xhr.open(method, url);
      xhr.upload.onprogress = (e) => sent(e.loaded);
      xhr.onload = () =>
        xhr.status >= 200 && xhr.status < 300
          ? resolve(xhr)
          : reject(new ApiError(xhr.status, "upload_failed", `S3 refused the upload (HTTP ${xhr.status})`));
      xhr.onerror = () => reject(new ApiError(0, "upload_failed", "the upload was interrupted"));
      xhr.onabort = () => reject(new ApiError(0, "upload_cancelled", "cancelled"));
      xhr.send(body);
    });
  }
}
