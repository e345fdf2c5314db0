// The form: files chosen or dropped, the job options, one button. Each file becomes a job
// (POST /jobs, as the CLI creates them) and uploads with its own progress bar and Cancel.

import { ApiError, type Api } from "./api";
import { byId, h, replace } from "./dom";
import { bytes } from "./format";
import { hint } from "./hints";
import { Upload } from "./upload";
import type { Format, JobOptions, JobView, ModelList } from "./types";

declare const __LANGUAGES__: string[]; // from docs/openapi.json, at build time

// what the browser may not name (file.type is "" for some): the API decides what it accepts
const TYPES: Record<string, string> = {
  mp3: "audio/mpeg", wav: "audio/wav", m4a: "audio/mp4", mp4: "video/mp4", ogg: "audio/ogg", oga: "audio/ogg",
  opus: "audio/ogg", flac: "audio/flac", webm: "audio/webm", aac: "audio/aac", mov: "video/quicktime",
  mkv: "video/x-matroska", txt: "text/plain",
};

export function contentType(file: File): string {
  const ext = file.name.split(".").pop()?.toLowerCase() ?? "";
  return file.type || TYPES[ext] || "application/octet-stream";
}

export class SubmitForm {
  private chosen: File[] = [];
  /** Jobs this page submitted: the first to succeed opens its transcript. */
  readonly submitted = new Set<string>();

  constructor(
    private readonly api: Api,
    private readonly multipartBytes: number,
  ) {}

  async init(): Promise<void> {
    const language = byId<HTMLSelectElement>("opt-language");
    for (const code of __LANGUAGES__) language.append(h("option", { value: code, selected: code === "auto" }, code));
    const input = byId<HTMLInputElement>("files");
    input.addEventListener("change", () => this.choose(Array.from(input.files ?? [])));
    const drop = byId("drop");
    drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      this.choose(Array.from(e.dataTransfer?.files ?? []));
    });
    byId("submit-form").addEventListener("submit", (e) => {
      e.preventDefault();
      void this.submit();
    });
    await this.models();
  }

  private async models(): Promise<void> {
    try {
      const list = await this.api.request<ModelList>("GET", "/models");
      const select = byId<HTMLSelectElement>("opt-model");
      for (const m of list.models) {
        const note = m.english_only ? " (English only)" : "";
        select.append(h("option", { value: m.name }, `${m.name}${note}`));
      }
    } catch {
      /* the default model still works */
    }
  }

  private choose(files: File[]): void {
    this.chosen = files;
    replace(byId("chosen"), ...files.map((f) => h("li", {}, `${f.name} (${bytes(f.size)})`)));
    byId<HTMLButtonElement>("transcribe").disabled = files.length === 0;
  }

  options(): { options: JobOptions; priority: string } {
    const checked = (id: string) => byId<HTMLInputElement>(id).checked;
    const formats = Array.from(document.querySelectorAll<HTMLInputElement>("input[name=format]"))
      .filter((c) => c.checked || c.value === "json") // the page reads the json to show the transcript
      .map((c) => c.value as Format);
    const prompt = byId<HTMLTextAreaElement>("opt-prompt").value.trim();
    const options: JobOptions = {
      language: byId<HTMLSelectElement>("opt-language").value,
      formats,
      word_timestamps: checked("opt-words"),
      channels: checked("opt-split") ? "split" : "mix",
    };
    if (checked("opt-own")) options.share_windows = false;
    const model = byId<HTMLSelectElement>("opt-model").value;
    if (model) options.model = model;
    if (prompt) options.initial_prompt = prompt;
    return { options, priority: byId<HTMLSelectElement>("opt-priority").value };
  }

  private async submit(): Promise<void> {
    const files = this.chosen;
    this.choose([]);
    byId<HTMLInputElement>("files").value = "";
    await Promise.all(files.map((f) => this.send(f)));
  }

  private async send(file: File): Promise<void> {
    const bar = h("progress", { max: file.size || 1, value: 0, "aria-label": `upload of ${file.name}` });
    const state = h("span", { class: "state" }, "starting…");
    const cancel = h("button", { type: "button", class: "cancel" }, "Cancel");
    const li = h("li", { class: "upload", "data-file": file.name }, h("span", { class: "name" }, file.name), bar, state, cancel);
    byId("uploads").prepend(li);
    let upload: Upload | null = null;
    let stopped = false;
    cancel.addEventListener("click", () => {
      stopped = true;
      cancel.disabled = true;
      state.textContent = "cancelling…";
      void upload?.cancel().then(
        () => (state.textContent = "cancelled"),
        (err: unknown) => (state.textContent = err instanceof ApiError ? err.code : "cancel failed"),
      );
    });
    try {
      const job = await this.create(file);
      li.dataset.job = job.job_id;
      if (stopped) return void (await this.api.request("POST", `/jobs/${job.job_id}/cancel`));
      upload = new Upload(this.api, job, file, this.multipartBytes);
      state.textContent = "uploading";
      await upload.run((sent, total) => {
        bar.value = sent;
        state.textContent = `${Math.floor((100 * sent) / (total || 1))}%`;
      });
      this.submitted.add(job.job_id);
      state.textContent = "uploaded";
      cancel.remove();
      li.dataset.done = "true";
    } catch (err) {
      if (stopped) return;
      const e = err instanceof ApiError ? err : new ApiError(0, "error", String(err));
      const help = hint(e.code);
      replace(state, h("code", { class: "error-code" }, e.code), ` ${e.message}`, help ? ` ${help}` : "");
      li.classList.add("failed");
      cancel.remove();
    }
  }

  private create(file: File): Promise<JobView> {
    const { options, priority } = this.options();
    const body = { filename: file.name, content_type: contentType(file), size_bytes: file.size, options, priority };
    return this.api.request<JobView>("POST", "/jobs", body, { "Idempotency-Key": crypto.randomUUID() });
  }
}
