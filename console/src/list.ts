// The job list: refreshed every 3 s without a reload. Rows are kept by job id and updated in
// place, so focus and the keyboard position survive each refresh. A queued job's position and
// estimated start come from its own GET (the list carries no queue view).

import { ApiError, type Api } from "./api";
import { byId, h, replace } from "./dom";
import { clock, fromNow, finishEstimate, usd } from "./format";
import { hint } from "./hints";
import { TERMINAL, type JobList, type JobView } from "./types";

export const POLL_MS = 3000;

interface Row {
  tr: HTMLTableRowElement;
  status: HTMLTableCellElement;
  duration: HTMLTableCellElement;
  cost: HTMLTableCellElement;
  cancel: HTMLButtonElement;
}

export class JobTable {
  private rows = new Map<string, Row>();
  private timer: number | undefined;
  private queued = new Map<string, JobView>();
  onUpdate: (jobs: JobView[]) => void = () => undefined;

  constructor(
    private readonly api: Api,
    private readonly say: (message: string) => void,
  ) {}

  start(): void {
    if (this.timer === undefined) {
      void this.refresh();
      this.timer = window.setInterval(() => void this.refresh(), POLL_MS);
    }
  }

  async refresh(): Promise<void> {
    try {
      const list = await this.api.request<JobList>("GET", "/jobs?limit=50");
      await this.queuePositions(list.jobs);
      this.render(list.jobs);
      byId("jobs-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
      this.onUpdate(list.jobs);
    } catch (err) {
      byId("jobs-updated").textContent = err instanceof ApiError ? `not updated: ${err.code}` : "not updated";
    }
  }

  private async queuePositions(jobs: JobView[]): Promise<void> {
    const queued = jobs.filter((j) => j.status === "queued").slice(0, 10);
    const views = await Promise.all(
      queued.map((j) => this.api.request<JobView>("GET", `/jobs/${j.job_id}`).catch(() => j)),
    );
    this.queued = new Map(views.map((v) => [v.job_id, v]));
  }

  private render(jobs: JobView[]): void {
    const body = byId<HTMLTableSectionElement>("job-rows");
    byId("no-jobs").hidden = jobs.length > 0;
    const wanted = jobs.map((job) => this.row(this.queued.get(job.job_id) ?? job));
    for (const [id, row] of this.rows) if (!jobs.some((j) => j.job_id === id)) row.tr.remove();
    wanted.forEach((tr, i) => {
      if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] ?? null);
    });
  }

  private row(job: JobView): HTMLTableRowElement {
    let row = this.rows.get(job.job_id);
    if (!row) {
      row = this.newRow(job);
      this.rows.set(job.job_id, row);
    }
    row.tr.dataset.status = job.status;
    replace(row.status, ...statusCell(job));
    row.duration.textContent = job.result ? clock(job.result.duration_seconds) : "–";
    row.cost.textContent = usd(job.result?.cost_usd);
    row.cancel.hidden = TERMINAL.includes(job.status);
    return row.tr;
  }

  private newRow(job: JobView): Row {
    const cancel = h("button", { type: "button", class: "cancel", "aria-label": `Cancel ${job.input.filename}` }, "Cancel");
    cancel.addEventListener("click", () => void this.cancel(job.job_id));
    const link = h("a", { href: `#/jobs/${job.job_id}` }, job.input.filename);
    const cells = [h("td", { class: "file" }, link), h("td", { class: "status" }), h("td", { "data-label": "Duration" }), h("td", { "data-label": "Cost" })];
    const created = h("td", { "data-label": "Created" }, new Date(job.created_at).toLocaleString());
    const tr = h("tr", { "data-job": job.job_id }, ...cells, created, h("td", { class: "actions" }, cancel));
    return { tr, status: cells[1], duration: cells[2], cost: cells[3], cancel };
  }

  async cancel(jobId: string): Promise<void> {
    try {
      await this.api.request("POST", `/jobs/${jobId}/cancel`);
      this.say("Job cancelled.");
    } catch (err) {
      if (err instanceof ApiError) this.say(`${err.code}: ${err.message}`);
    }
    await this.refresh();
  }
}

/** Status, progress with its estimate, queue position, or the error with its code and hint. */
export function statusCell(job: JobView): (Node | string)[] {
  const badge = h("span", { class: `badge ${job.status}` }, job.status);
  if (job.status === "running") {
    const eta = finishEstimate(job.started_at, job.progress);
    const bar = h("progress", { max: 100, value: job.progress, "aria-label": "progress" });
    return [badge, " ", bar, h("span", { class: "muted" }, ` ${job.progress}%${eta ? `, done ${fromNow(eta)}` : ""}`)];
  }
  if (job.status === "queued" && job.queue) {
    const start = job.queue.estimated_start_at ? `, starts ${fromNow(job.queue.estimated_start_at)}` : "";
    return [badge, h("span", { class: "muted" }, ` #${job.queue.position} in queue${start}`)];
  }
  if (job.error) {
    const help = hint(job.error.code);
    const out: (Node | string)[] = [badge, " ", h("code", { class: "error-code" }, job.error.code)];
    out.push(h("span", { class: "error-message" }, ` ${job.error.message}`));
    if (help) out.push(h("span", { class: "hint" }, ` ${help}`));
    return out;
  }
  return [badge];
}
