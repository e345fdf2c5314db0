// The console's entry: read config.json, sign in where the deployment asks for it, then the
// form, the job list and a job's page (#/jobs/ID), all on the one API.

import { Api } from "./api";
import { CognitoSession } from "./auth";
import { loadConfig } from "./config";
import { byId, h, replace } from "./dom";
import { JobTable } from "./list";
import { JobPage } from "./player";
import { sign } from "./sigv4";
import { SubmitForm } from "./submit";
import type { JobView } from "./types";

function say(message: string): void {
  const notice = byId("notice");
  notice.textContent = message;
  notice.hidden = !message;
}

function route(page: JobPage, table: JobTable): void {
  const match = /^#\/jobs\/([\w-]+)$/.exec(location.hash);
  byId("home").hidden = !!match;
  byId("job").hidden = !match;
  if (match) void page.open(match[1]);
  else {
    page.close();
    void table.refresh();
  }
}

/** A job this page submitted that just succeeded opens its transcript, unless a job is open already. */
function openWhenDone(form: SubmitForm, jobs: JobView[]): void {
  for (const job of jobs) {
    if (!form.submitted.has(job.job_id) || !["succeeded", "failed", "cancelled"].includes(job.status)) continue;
    form.submitted.delete(job.job_id);
    if (job.status === "succeeded" && !location.hash.startsWith("#/jobs/")) location.hash = `#/jobs/${job.job_id}`;
  }
}

async function signedIn(session: CognitoSession): Promise<boolean> {
  if (await session.start()) {
    const out = h("button", { type: "button" }, "Sign out");
    out.addEventListener("click", () => session.signOut());
    replace(byId("account"), out);
    return true;
  }
  const button = h("button", { type: "button", class: "primary" }, "Sign in");
  button.addEventListener("click", () => void session.signIn());
  replace(byId("account"), button);
  byId("home").hidden = true;
  say("Sign in to transcribe and see your jobs.");
  return false;
}

async function main(): Promise<void> {
  const cfg = await loadConfig();
  const session = cfg.cognito ? new CognitoSession(cfg.cognito) : null;
  if (session && !(await signedIn(session))) return;
  const api = new Api(cfg, session);
  const table = new JobTable(api, say);
  const form = new SubmitForm(api, cfg.multipartBytes);
  const page = new JobPage(api);
  table.onUpdate = (jobs) => openWhenDone(form, jobs);
  await form.init();
  window.addEventListener("hashchange", () => route(page, table));
  route(page, table);
  table.start();
}

// the SigV4 signer, for the browser test that holds it to botocore's signature
(window as unknown as { batchscribe: unknown }).batchscribe = { sign };

main().catch((err: unknown) => say(`The console could not start: ${String(err)}`));
