// A job's page: the audio beside its transcript. The line being played is highlighted (and its
// word, where the job has word timestamps); a click (or Enter) on a line seeks the audio there;
// channels are labelled; the outputs download in each format; the job's log is shown.

import { ApiError, type Api } from "./api";
import { byId, h, replace } from "./dom";
import { clock } from "./format";
import { statusCell } from "./list";
import { FORMATS, TERMINAL, type InputUrl, type JobView, type Segment, type Transcript } from "./types";

/** The segment playing at `t` (segments are in time order), or -1. */
export function segmentAt(segments: Segment[], t: number): number {
  let lo = 0;
  let hi = segments.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (segments[mid].start <= t) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found >= 0 && t < segments[found].end + 0.25 ? found : -1;
}

export class JobPage {
  private timer: number | undefined;
  private shown: string | null = null;
  private lines: HTMLLIElement[] = [];
  private segments: Segment[] = [];
  private current = -1;
  private word: HTMLElement | null = null;

  constructor(private readonly api: Api) {}

  async open(jobId: string): Promise<void> {
    this.close();
    this.shown = jobId;
    const root = byId("job");
    replace(root, h("p", { class: "muted" }, "Loading…"));
    await this.poll(jobId);
  }

  close(): void {
    window.clearTimeout(this.timer);
    this.shown = null;
    this.lines = [];
    this.segments = [];
  }

  private async poll(jobId: string): Promise<void> {
    if (this.shown !== jobId) return;
    let job: JobView;
    try {
      job = await this.api.request<JobView>("GET", `/jobs/${jobId}`);
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError(0, "error", String(err));
      replace(byId("job"), h("p", { role: "alert" }, h("code", {}, e.code), ` ${e.message}`), back());
      return;
    }
    if (this.shown !== jobId) return;
    if (job.status === "succeeded") return this.render(job);
    this.renderPending(job);
    if (!TERMINAL.includes(job.status)) this.timer = window.setTimeout(() => void this.poll(jobId), 3000);
  }

  private renderPending(job: JobView): void {
    replace(
      byId("job"),
      back(),
      h("h2", {}, job.input.filename),
      h("p", { class: "status-line" }, ...statusCell(job)),
      logBlock(job),
    );
    void this.loadLog(job);
  }

  private async render(job: JobView): Promise<void> {
    const audio = h("audio", { controls: true, preload: "metadata", id: "player" });
    const list = h("ol", { class: "transcript", id: "transcript", "aria-label": "Transcript" });
    const result = job.result;
    const urls = FORMATS.flatMap((f) => {
      const href = result?.urls[f];
      return href ? [[f, href] as const] : [];
    });
    const downloads = h(
      "p",
      { class: "downloads" },
      "Download: ",
      ...urls.map(([f, href]) => h("a", { href, download: "", class: "button", "data-format": f }, f)),
    );
    replace(
      byId("job"),
      back(),
      h("h2", {}, job.input.filename),
      h("p", { class: "muted" }, result ? `${result.language} · ${clock(result.duration_seconds)}` : ""),
      h("div", { class: "player" }, h("div", { class: "listen" }, audio, downloads), list),
      logBlock(job),
    );
    void this.loadLog(job);
    void this.loadAudio(job.job_id, audio);
    await this.loadTranscript(job, list, audio);
  }

  private async loadAudio(jobId: string, audio: HTMLAudioElement): Promise<void> {
    try {
      audio.src = (await this.api.request<InputUrl>("GET", `/jobs/${jobId}/input`)).url;
    } catch (err) {
      const code = err instanceof ApiError ? err.code : "error";
      audio.replaceWith(h("p", { class: "muted" }, `The audio is not available (${code}).`));
    }
  }

  private async loadTranscript(job: JobView, list: HTMLOListElement, audio: HTMLAudioElement): Promise<void> {
    const url = job.result?.urls.json;
    if (!url) return replace(list, h("li", {}, "This job has no json output, so no transcript to show."));
    const t = (await (await fetch(url)).json()) as Transcript;
    this.segments = t.segments;
    this.lines = t.segments.map((seg, i) => this.line(seg, i, audio));
    replace(list, ...this.lines);
    const follow = () => this.follow(audio.currentTime);
    audio.addEventListener("timeupdate", follow);
    audio.addEventListener("seeked", follow);
    const frame = () => {
      follow();
      if (!audio.paused && this.lines.length) requestAnimationFrame(frame);
    };
    audio.addEventListener("play", () => requestAnimationFrame(frame));
  }

  private line(seg: Segment, i: number, audio: HTMLAudioElement): HTMLLIElement {
    const words = seg.words?.length
      ? seg.words.map((w) => h("span", { class: "word", "data-start": w.start, "data-end": w.end }, w.word))
      : [seg.text.trim()];
    const label = seg.channel !== undefined ? h("span", { class: "channel" }, `Channel ${seg.channel + 1}`) : null;
    const li = h(
      "li",
      { tabindex: 0, role: "button", "data-index": i, "data-start": seg.start, "aria-label": `${clock(seg.start)} ${seg.text.trim()}` },
      h("span", { class: "time" }, clock(seg.start)),
      label,
      h("span", { class: "text" }, ...words),
    );
    const seek = () => {
      audio.currentTime = seg.start;
      this.follow(seg.start);
    };
    li.addEventListener("click", seek);
    li.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        seek();
      }
    });
    return li;
  }

  private follow(t: number): void {
    const i = segmentAt(this.segments, t);
    if (i !== this.current) {
      this.lines[this.current]?.classList.remove("current");
      this.lines[this.current]?.removeAttribute("aria-current");
      this.current = i;
      const li = this.lines[i];
      if (li) {
        li.classList.add("current");
        li.setAttribute("aria-current", "true");
        li.scrollIntoView({ block: "nearest" });
      }
    }
    const words = this.lines[i]?.querySelectorAll<HTMLElement>(".word") ?? [];
    const word = Array.from(words).find((w) => Number(w.dataset.start) <= t && t < Number(w.dataset.end)) ?? null;
    if (word !== this.word) {
      this.word?.classList.remove("spoken");
      word?.classList.add("spoken");
      this.word = word;
    }
  }

  private async loadLog(job: JobView): Promise<void> {
    const pre = document.getElementById("log");
    if (!pre || !job.log_url) return;
    try {
      const resp = await fetch(job.log_url);
      pre.textContent = resp.ok ? await resp.text() : `(the log is not available: HTTP ${resp.status})`;
    } catch {
      pre.textContent = "(the log could not be read)";
    }
  }
}

function back(): HTMLElement {
  return h("p", {}, h("a", { href: "#/" }, "← All jobs"));
}

function logBlock(job: JobView): HTMLElement {
  return h(
    "details",
    { class: "log" },
    h("summary", {}, "Log"),
    h("pre", { id: "log", tabindex: 0 }, job.log_url ? "Loading…" : "(no log yet)"),
  );
}
