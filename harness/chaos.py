"""The chaos run: N jobs through the local stack while faults are injected at random, then one
table that says whether every job ended in one consistent terminal state and nothing was lost.

    make chaos                                   # python -m harness.chaos --jobs 50 --seed 1
    python -m harness.chaos --jobs 8 --minutes 2 --seed 2   # about the reduced run the tests use

Faults (seeded; each kind on its own schedule while jobs are in flight):
- AWS calls from the handlers and the workers fail, stall, or succeed while the caller is told
  they failed (harness/faults.py: a wrapper the harness installs, no production path);
- duplicate deliveries: job messages and upload notifications sent again;
- a worker SIGKILLed or SIGTERMed mid-job; a worker SIGSTOPped past its lease, then resumed (its
  lease expires while it is alive: its later writes must be fenced off);
- a cancel racing a job's completion;
- a job message deleted from the queue (the sweeper must re-drive the queued job);
- the local stack stopped and started again on the same data folder.

The job mix: spoken files of 3 to 40 s in wav, mp3 and ogg, plus poison files (random bytes
named .wav, text named .mp3, a video without audio) that must fail with their codes. About a
quarter of the spoken files go in by URL (`source_url`) instead of an upload, from a file server
that answers 503 or cuts the body off halfway at random: their workers must retry the fetch.

The table: submitted, succeeded, failed by code, cancelled, stuck (not terminal at the end),
lost (a job the API no longer knows), committed twice (a job whose log shows two commits),
inconsistent (a terminal job whose record and outputs disagree), attempts per job, p50/p95
latency. Exit status 1 if stuck, lost, committed twice or inconsistent is not 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from batchscribe.models import JobMessage
from batchscribe.settings import Timings
from batchscribe_cli.client import ApiError, Client, parse_time
from batchscribe_cli.local import LocalConfig, LocalStack
from harness import faults
from harness.audio import SENTENCES, convert, make_video_only, speak

POISON = {"noise.wav": "invalid_media", "notes.mp3": "invalid_media", "clip.mp4": "no_audio"}
OWNER = "chaos"
SETTLE_SECONDS = 150  # after the faults stop, at least this long for every job to end
SUBMIT_PATIENCE_SECONDS = 120  # one submission retried this long through faults and restarts
# what the local stack's own threads call (SQS event sources, the transition watcher)
LOCAL_INFRA_CALLS = ("ReceiveMessage", "DeleteMessage", "Scan", "Query", "GetQueueAttributes")


@dataclass
class Submitted:
    job_id: str
    name: str
    expect: str | None  # the failure code a poison file must end with; None: must succeed
    submitted_at: float
    by_url: bool = False


class FlakySource:
    """Serves the media folder to the URL jobs, failing at random (seeded): half of the
    failures answer 503, the other half send half the body and close the connection."""

    def __init__(self, folder: Path, seed: int, fail_rate: float = 0.3) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.lstrip("/").split("?", 1)[0]
                path = folder / name
                if "/" in name or not path.is_file():
                    self.send_error(404)
                    return
                with outer.lock:
                    draw = outer.rng.random()
                if draw < fail_rate / 2:
                    outer.counts["source URL answered 503"] += 1
                    self.send_error(503)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if draw < fail_rate:
                    outer.counts["source URL cut off mid-body"] += 1
                    data = data[: len(data) // 2]
                    self.close_connection = True
                with contextlib.suppress(OSError):
                    self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="flaky-source", daemon=True).start()

    def url(self, path: Path) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{path.name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Report:
    submitted: int = 0
    by_url: int = 0
    succeeded: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    cancelled: int = 0
    stuck: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    committed_twice: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)
    attempts: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.stuck or self.lost or self.committed_twice or self.inconsistent)

    def table(self) -> str:
        def pct(q: float) -> str:
            if not self.latencies:
                return "-"
            ordered = sorted(self.latencies)
            return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.1f} s"

        failed = ", ".join(f"{code} {n}" for code, n in sorted(self.failed.items())) or "0"
        attempts = ", ".join(f"{a}: {n}" for a, n in sorted(self.attempts.items()))
        injected = ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items()))
        rows = [
            ("submitted", f"{self.submitted} ({self.by_url} by URL)"),
            ("succeeded", str(self.succeeded)),
            ("failed (by code)", f"{sum(self.failed.values())} ({failed})"),
            ("cancelled", str(self.cancelled)),
            ("stuck", "; ".join([str(len(self.stuck)), *self.stuck])),
            ("lost", str(len(self.lost))),
            ("committed twice", str(len(self.committed_twice))),
            ("inconsistent", str(len(self.inconsistent))),
            ("attempts per job", attempts),
            ("latency p50 / p95", f"{pct(0.5)} / {pct(0.95)}"),
            ("faults injected", injected),
            ("wall time", f"{self.seconds:.0f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def make_media(folder: Path, n: int, rng: random.Random) -> list[tuple[Path, str | None]]:
    """n files: spoken speech of 3 to 40 s (wav, mp3, ogg), every seventh a poison file."""
    folder.mkdir(parents=True, exist_ok=True)
    out: list[tuple[Path, str | None]] = []
    poisons = list(POISON.items())
    for i in range(n):
        if i % 7 == 6:
            name, code = poisons[(i // 7) % len(poisons)]
            path = folder / f"{i:03d}-{name}"
            if name.endswith(".mp4"):
                make_video_only(path)
            elif name.endswith(".wav"):
                path.write_bytes(os.urandom(8192))
            else:
                path.write_text("these are notes, not audio\n" * 40)
            out.append((path, code))
            continue
        text = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 12)))
        wav = speak(text, folder / f"{i:03d}.wav")
        kind = rng.choice(["wav", "mp3", "ogg"])
        out.append((wav if kind == "wav" else convert(wav, wav.with_suffix(f".{kind}")), None))
    return out


class Chaos:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = work
        self.plan = faults.FaultPlan(
            error_rate=args.error_rate,
            latency_rate=args.latency_rate,
            max_latency=1.0,
            ambiguous_rate=args.ambiguous_rate,
            seed=args.seed,
        )
        self.config = LocalConfig(
            port=0,
            max_workers=args.workers,
            data_dir=work / "data",
            timings=Timings.local().replace(idle_exit_seconds=8),
            quiet=not args.verbose,
        )
        self.stack: LocalStack | None = None
        self.source: FlakySource | None = None
        self.jobs: dict[str, Submitted] = {}
        self.report = Report()
        self.lock = threading.Lock()
        self.done = threading.Event()

    # ---- the stack ---------------------------------------------------------------------

    def start_stack(self) -> LocalStack:
        # the workers inherit this process's environment: they inject the same faults
        os.environ.update(faults.worker_env(self.plan, self.work / "faults"))
        stack = LocalStack(self.config)
        stack.start()
        # the Lambda handlers in this process too, but not the stack's emulation of AWS itself
        faults.install(replace(self.plan, spared=LOCAL_INFRA_CALLS))
        self.stack = stack
        return stack

    def client(self) -> Client:
        assert self.stack is not None
        return Client(self.stack.url, owner=OWNER, timeout=60)

    # ---- submitting ----------------------------------------------------------------------

    def submit_all(self, media: list[tuple[Path, str | None]]) -> None:
        """Submit over the first third of the run, in random order and at random intervals."""
        order = list(media)
        self.rng.shuffle(order)
        spread = self.args.minutes * 60 / 3
        for path, expect in order:
            if self.done.is_set():
                return
            by_url = expect is None and self.source is not None and self.rng.random() < 0.25
            deadline = time.time() + SUBMIT_PATIENCE_SECONDS
            while True:  # the API itself may be restarting (or slow on a loaded machine)
                try:
                    if by_url:
                        assert self.source is not None
                        job = self.client().create_from_url(
                            self.source.url(path),
                            {"language": "en"},
                            size_bytes=path.stat().st_size,
                            idempotency_key=f"chaos-{self.args.seed}-{path.name}",  # a retry: the same job
                        )
                    else:
                        job = self.client().submit(path, {"language": "en"})
                    break
                except (ApiError, OSError) as exc:
                    if time.time() >= deadline:
                        raise RuntimeError(f"could not submit {path.name}: {exc}") from exc
                    time.sleep(1)
            with self.lock:
                self.jobs[job["job_id"]] = Submitted(job["job_id"], path.name, expect, time.time(), by_url)
                self.report.submitted += 1
                self.report.by_url += by_url
            time.sleep(self.rng.uniform(0, 2 * spread / max(1, len(order))))

    # ---- faults --------------------------------------------------------------------------

    def chaos_loop(self, until: float) -> None:
        actions: list[tuple[str, Callable[[], bool]]] = [
            ("duplicate job message", self.duplicate_message),
            ("duplicate upload notification", self.duplicate_notification),
            ("worker SIGKILL", lambda: self.signal_worker(signal.SIGKILL)),
            ("worker SIGTERM", lambda: self.signal_worker(signal.SIGTERM)),
            ("worker paused past its lease", self.pause_worker),
            ("cancel racing completion", self.cancel_running),
            ("job message lost", self.lose_message),
        ]
        restarts_left = self.args.restarts
        while time.time() < until and not self.done.is_set():
            time.sleep(self.rng.uniform(0.5, self.args.fault_every))
            if restarts_left and self.rng.random() < 0.08 and len(self.jobs) > 3:
                restarts_left -= 1
                self.restart_stack()
                self.report.faults["local stack restarted"] += 1
                continue
            name, action = self.rng.choice(actions)
            try:
                if action():
                    self.report.faults[name] += 1
            except Exception as exc:  # a fault that could not be applied is not a finding
                if self.args.verbose:
                    print(f"chaos: {name}: {type(exc).__name__}: {exc}", file=sys.stderr)

    def _sqs(self) -> Any:
        from batchscribe import aws

        return aws.client("sqs")

    def _some_job(self, statuses: tuple[str, ...], spoken_only: bool = False) -> dict[str, Any] | None:
        """A job of this run in one of `statuses` (with `spoken_only`, not a poison file)."""
        with self.lock:
            ids = [job_id for job_id, sub in self.jobs.items() if not (spoken_only and sub.expect is not None)]
        self.rng.shuffle(ids)
        for job_id in ids[:10]:
            try:
                job = self.client().get(job_id)
            except Exception as exc:  # a fault of this run, or a restart: try another job
                if self.args.verbose:
                    print(f"chaos: get {job_id[:8]}: {exc}", file=sys.stderr)
                continue
            if job["status"] in statuses:
                return dict(job)
        return None

    def duplicate_message(self) -> bool:
        assert self.stack is not None and self.stack.resources is not None
        job = self._some_job(("queued", "running", "succeeded", "failed", "cancelled"))
        if job is None:
            return False
        body = JobMessage(job_id=job["job_id"]).model_dump_json()
        self._sqs().send_message(QueueUrl=self.stack.resources.jobs_queue_url, MessageBody=body)
        return True

    def duplicate_notification(self) -> bool:
        assert self.stack is not None and self.stack.resources is not None
        job = self._some_job(("queued", "running", "succeeded"))
        if job is None:
            return False
        from batchscribe import keys

        # the upload key the server made for this job (owner key from the record)
        record = self.stack_record(job["job_id"])
        key = keys.upload_key(record["owner_key"], job["job_id"])
        note = {"Records": [{"eventName": "ObjectCreated:Post", "s3": {"object": {"key": key}}}]}
        self._sqs().send_message(QueueUrl=self.stack.resources.uploads_queue_url, MessageBody=json.dumps(note))
        return True

    def stack_record(self, job_id: str) -> dict[str, Any]:
        from batchscribe.repository import JobRepository

        assert self.stack is not None and self.stack.resources is not None
        return JobRepository(self.stack.resources.table).get(job_id).model_dump()

    def signal_worker(self, sig: signal.Signals) -> bool:
        assert self.stack is not None and self.stack.compute is not None
        pids = self.stack.compute.pids()
        if not pids or self._some_job(("running",)) is None:
            return False
        os.kill(self.rng.choice(pids), sig)
        return True

    def pause_worker(self) -> bool:
        assert self.stack is not None and self.stack.compute is not None
        pids = self.stack.compute.pids()
        if not pids or self._some_job(("running",)) is None:
            return False
        pid = self.rng.choice(pids)
        os.kill(pid, signal.SIGSTOP)
        pause = self.config.timings.lease_seconds + 2

        def resume() -> None:
            time.sleep(pause)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

        threading.Thread(target=resume, daemon=True).start()
        return True

    def cancel_running(self) -> bool:
        # a poison file is never cancelled: the run checks that it fails with its own code
        job = self._some_job(("running",), spoken_only=True)
        if job is None:
            return False
        time.sleep(self.rng.uniform(0, 1.5))  # near (or at) its commit
        with contextlib.suppress(ApiError):  # it finished first: the race went the other way
            self.client().cancel(job["job_id"])
        return True

    def lose_message(self) -> bool:
        assert self.stack is not None and self.stack.resources is not None
        resp = self._sqs().receive_message(
            QueueUrl=self.stack.resources.jobs_queue_url, MaxNumberOfMessages=1, VisibilityTimeout=30
        )
        messages = resp.get("Messages", [])
        if not messages:
            return False
        self._sqs().delete_message(
            QueueUrl=self.stack.resources.jobs_queue_url, ReceiptHandle=messages[0]["ReceiptHandle"]
        )
        return True

    def restart_stack(self) -> None:
        assert self.stack is not None
        faults.uninstall()
        self.stack.stop()
        self.start_stack()

    # ---- the end -----------------------------------------------------------------------

    def settle(self, deadline: float) -> None:
        """Wait (faults off) until every job is terminal, or the deadline."""
        faults.uninstall()
        terminal = {"succeeded", "failed", "cancelled"}
        while time.time() < deadline:
            states = [self._status(job_id) for job_id in list(self.jobs)]
            if all(s in terminal or s == "lost" for s in states):
                return
            time.sleep(2)

    def _status(self, job_id: str) -> str:
        try:
            return str(self.client().get(job_id)["status"])
        except ApiError as exc:
            return "lost" if exc.status == 404 else "unknown"

    def audit(self) -> None:
        import boto3

        assert self.stack is not None and self.stack.resources is not None
        s3 = boto3.client("s3")
        bucket = self.stack.resources.bucket
        for job_id, sub in self.jobs.items():
            try:
                job = self.client().get(job_id)
            except ApiError as exc:
                if exc.status == 404:
                    self.report.lost.append(job_id)
                continue
            status = job["status"]
            self.report.attempts[job["attempt"]] += 1
            if status not in ("succeeded", "failed", "cancelled"):
                how = "by URL" if sub.by_url else "uploaded"
                self.report.stuck.append(f"{job_id} {status} attempt {job['attempt']} ({sub.name}, {how})")
                continue
            record = self.stack_record(job_id)
            log_key = f"outputs/{record['owner_key']}/{job_id}/log.txt"
            try:
                log = s3.get_object(Bucket=bucket, Key=log_key)["Body"].read().decode()
            except Exception:
                log = ""
            if sum(1 for line in log.splitlines() if line.split(" ", 2)[1:2] == ["succeeded"]) > 1:
                self.report.committed_twice.append(job_id)
            finished = job.get("finished_at")
            if finished:
                self.report.latencies.append((parse_time(finished) - parse_time(job["created_at"])).total_seconds())
            if status == "succeeded":
                self.report.succeeded += 1
                outputs = (record.get("result") or {}).get("outputs", {})
                missing = [k for k in outputs.values() if not _exists(s3, bucket, k)]
                if sub.expect is not None or not outputs or missing or job.get("error"):
                    self.report.inconsistent.append(job_id)
            elif status == "failed":
                code = (job.get("error") or {}).get("code", "?")
                self.report.failed[code] += 1
                if job.get("result") is not None:
                    self.report.inconsistent.append(job_id)
            else:
                self.report.cancelled += 1
                if job.get("result") is not None:
                    self.report.inconsistent.append(job_id)
            if sub.expect is not None and status == "failed" and job["error"]["code"] != sub.expect:
                self.report.inconsistent.append(job_id)
        for k, v in (("AWS call failed", faults.COUNTS.errors), ("AWS call stalled", faults.COUNTS.delays)):
            if v:
                self.report.faults[f"{k} (API side)"] += v
        if self.source is not None:
            self.report.faults.update(self.source.counts)
        if faults.COUNTS.ambiguous:
            self.report.faults["AWS call done but reported failed (API side)"] += faults.COUNTS.ambiguous

    def run(self) -> Report:
        media = make_media(self.work / "media", self.args.jobs, self.rng)
        started = time.time()  # the run's clock starts with the stack, not with making its media
        saved_env = dict(os.environ)  # start_stack adds the workers' fault plan to it
        self.source = FlakySource(self.work / "media", self.args.seed)
        self.start_stack()
        try:
            until = started + self.args.minutes * 60 * 0.7
            submitter = threading.Thread(target=self.submit_all, args=(media,), daemon=True)
            submitter.start()
            self.chaos_loop(until)
            submitter.join()
            # a job hit by the last faults still gets the time its recovery takes (a lost
            # message resent, a dead-lettered batch back after its visibility, a new worker)
            self.settle(max(started + self.args.minutes * 60, time.time() + SETTLE_SECONDS))
            self.audit()
        finally:
            self.done.set()
            faults.uninstall()
            if self.stack is not None:
                self.stack.stop()
            if self.source is not None:
                self.source.close()
            os.environ.clear()
            os.environ.update(saved_env)  # nothing started after the run injects faults
        self.report.seconds = time.time() - started
        return self.report


def _exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except Exception:
        return False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=50)
    p.add_argument(
        "--minutes",
        type=float,
        default=10,
        help=f"the run's bound: faults in the first 70 %%, then time to settle (at least {SETTLE_SECONDS} s)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--restarts", type=int, default=1, help="local stack restarts during the run")
    p.add_argument("--fault-every", type=float, default=4.0, help="seconds between faults, at most")
    p.add_argument("--error-rate", type=float, default=0.03)
    p.add_argument("--latency-rate", type=float, default=0.05)
    p.add_argument("--ambiguous-rate", type=float, default=0.01)
    p.add_argument("--json", help="also write the report here")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="batchscribe-chaos-") as tmp:
        report = Chaos(args, Path(tmp)).run()
    print(report.table())
    if args.json:
        data = {
            "ok": report.ok,
            "submitted": report.submitted,
            "succeeded": report.succeeded,
            "failed": dict(report.failed),
            "cancelled": report.cancelled,
            "stuck": report.stuck,
            "lost": report.lost,
            "committed_twice": report.committed_twice,
            "inconsistent": report.inconsistent,
            "attempts": {str(k): v for k, v in report.attempts.items()},
            "latency_p50": statistics.median(report.latencies) if report.latencies else None,
            "faults": dict(report.faults),
            "seconds": round(report.seconds, 1),
            "args": vars(args),
        }
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
