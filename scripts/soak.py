"""Soak the local stack: a steady trickle of jobs for a long time, memory sampled throughout.

    python -m scripts.soak --minutes 120 --every 30 --out bench/results/soak   (make soak)

The local stack runs in this process (moto, the API behind its HTTP server, the emulated event
sources, the scaler with real worker processes), so the resident memory sampled here is the
stack's. Jobs cycle through what happens to real ones: transcribed, cancelled while pending,
uploaded larger than declared (`upload_too_large`), never uploaded (`upload_expired` when the
window closes) and transcribed after its queue message was taken away by hand (the sweeper's
redrive must re-send it). At the end every job must be in a terminal status with the outcome
its kind expects, and the resident memory after warm-up must stay within `--max-growth`.

Writes `soak.csv` (one line per sample) and `soak.json` (the summary) under `--out`; exits 1
when memory grew past the bound or any job is stuck or ended otherwise than expected.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from batchscribe.settings import Timings
from batchscribe_cli.cli import SAMPLE
from batchscribe_cli.client import ApiError, Client
from batchscribe_cli.local import LocalConfig, LocalStack

# kind -> the terminal status (and error code) it must end with
EXPECTED: dict[str, tuple[str, str | None]] = {
    "transcribe": ("succeeded", None),
    "lost_message": ("succeeded", None),
    "cancel": ("cancelled", None),
    "too_large": ("failed", "upload_too_large"),
    "never_uploaded": ("failed", "upload_expired"),
}
CYCLE = ("transcribe", "lost_message", "transcribe", "cancel", "transcribe", "too_large", "never_uploaded")


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def clip(seconds: float, folder: Path) -> Path:
    """The first seconds of the bundled sample, small (16 kb/s): the stored uploads then grow
    the emulated bucket by a few kB a job, so the memory curve shows the stack, not the data.
    The whole sample when ffmpeg is missing or seconds is 0."""
    if seconds <= 0 or shutil.which("ffmpeg") is None:
        return SAMPLE
    out = folder / f"sample-{seconds:g}s.mp3"
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-i", str(SAMPLE), "-t", str(seconds), "-b:a", "16k", str(out)],
        check=True,
    )
    return out


def stored(stack: LocalStack) -> tuple[float, int]:
    """(MB of objects in the emulated bucket, items in the jobs table): the user's data, which
    the local stack keeps (and saves) on purpose."""
    from batchscribe import aws

    assert stack.resources is not None
    size = 0
    for page in aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=stack.resources.bucket):
        size += sum(o["Size"] for o in page.get("Contents", []))
    items = aws.client("dynamodb").describe_table(TableName=stack.resources.table)["Table"]["ItemCount"]
    return size / 1e6, int(items)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def moto_tracked() -> int:
    from moto.core.model_instances import model_data

    models: list[Any] = [m for ms in model_data.values() for m in ms.values()]
    return sum(len(m.instances_tracked) for m in models)


@dataclass
class Tracked:
    job_id: str
    kind: str
    created: float
    final: tuple[str, str | None] | None = None  # (status, error code)


@dataclass
class Summary:
    minutes: float
    every_seconds: float
    samples: int
    rss_first_mb: float
    rss_start_mb: float  # after warm-up
    rss_end_mb: float
    rss_max_mb: float
    growth_percent: float
    threads_start: int
    threads_end: int
    fds_start: int
    fds_end: int
    stored_start_mb: float
    stored_end_mb: float
    table_items_end: int
    audio_bytes: int
    jobs: int
    by_kind: dict[str, int]
    outcomes: dict[str, int]
    unexpected: list[str]
    stuck: list[str]
    messages_taken: int
    sweeper: dict[str, int] = field(default_factory=dict)
    workers_started: int = 0
    stop_seconds: float = 0.0
    ok: bool = False


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = (self.out / "soak.log").open("a")
        self.jobs: list[Tracked] = []
        self.taken = 0
        self.sweeper: dict[str, int] = {}
        timings = Timings.local().replace(idle_exit_seconds=args.idle_exit, upload_window_seconds=60)
        config = LocalConfig(
            port=0,
            max_workers=args.workers,
            data_dir=self.out / "data",
            timings=timings,
        )
        self.stack = LocalStack(config, say=self.say)
        self.audio = clip(args.audio_seconds, self.out)

    def say(self, line: str) -> None:
        self.log.write(line + "\n")
        self.log.flush()
        if line.split(" ", 1)[-1].startswith("sweeper: "):
            counts = json.loads(line.split("sweeper: ", 1)[1].replace("'", '"'))
            for k, v in counts.items():
                self.sweeper[k] = self.sweeper.get(k, 0) + v

    # ---- jobs ----------------------------------------------------------------------------

    def submit(self, client: Client, kind: str) -> None:
        size = self.audio.stat().st_size
        if kind == "lost_message":
            threading.Thread(target=self.lose_message, args=(client,), daemon=True).start()
            return
        if kind == "too_large":
            job = client.request(
                "POST", "/jobs", {"filename": self.audio.name, "content_type": "audio/mpeg", "size_bytes": size - 1000}
            )
            client.upload(job["upload"], self.audio)
        elif kind == "never_uploaded":
            job = client.create_job(self.audio)
        elif kind == "cancel":
            job = client.create_job(self.audio)
            client.cancel(job["job_id"])
        else:
            job = client.submit(self.audio, {"language": "en", "formats": ["txt"]})
        self.jobs.append(Tracked(job["job_id"], kind, time.time()))

    def lose_message(self, client: Client) -> None:
        """A queued job whose message is gone (an operator's purge, an expired retention, a
        send that failed): hold the workers back, queue a job, take its message off the queue
        by hand, let the workers come back. The sweeper has to notice and send it again."""
        from batchscribe import aws

        stack = self.stack
        assert stack.resources is not None and stack.compute is not None
        queue = stack.resources.jobs_queue_url
        sqs = aws.client("sqs")
        stack.set_max_workers(0)
        try:
            deadline = time.time() + 120
            while stack.compute.pids() and time.time() < deadline:
                time.sleep(0.5)
            job = client.submit(self.audio, {"language": "en", "formats": ["txt"]})
            self.jobs.append(Tracked(job["job_id"], "lost_message", time.time()))
            while client.get(job["job_id"])["status"] == "pending" and time.time() < deadline:
                time.sleep(0.2)
            while time.time() < deadline:
                resp = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
                mine = [m for m in resp.get("Messages", []) if job["job_id"] in m["Body"]]
                for m in resp.get("Messages", []):
                    if m in mine:
                        sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
                    else:  # another job's: back at once
                        sqs.change_message_visibility(
                            QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                        )
                if mine:
                    self.taken += 1
                    return
        except ApiError as exc:
            self.say(f"soak: lost-message job failed to submit: {exc}")
        finally:
            stack.set_max_workers(self.args.workers)

    def poll(self, client: Client) -> None:
        for t in self.jobs:
            if t.final is None:
                job = client.get(t.job_id)
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    t.final = (job["status"], (job.get("error") or {}).get("code"))

    # ---- the run -------------------------------------------------------------------------

    def run(self) -> Summary:
        a = self.args
        self.stack.start()
        client = Client(self.stack.url, owner="soak")
        started = time.time()
        end = started + a.minutes * 60
        next_job = started
        next_sample = started
        rows: list[dict[str, Any]] = []
        first = rss_mb()
        n = 0
        with (self.out / "soak.csv").open("w", newline="") as f:
            writer = csv.DictWriter(
                f,
                fieldnames=[
                    "t",
                    "rss_mb",
                    "stored_mb",
                    "items",
                    "threads",
                    "fds",
                    "moto_tracked",
                    "jobs",
                    "open_jobs",
                    "workers",
                ],
            )
            writer.writeheader()
            while time.time() < end:
                now = time.time()
                if now >= next_job:
                    try:
                        self.submit(client, CYCLE[n % len(CYCLE)])
                    except ApiError as exc:
                        self.say(f"soak: submit failed: {exc}")
                    n += 1
                    next_job += a.every
                if now >= next_sample:
                    self.poll(client)
                    assert self.stack.compute is not None
                    data_mb, items = stored(self.stack)
                    row = {
                        "t": round(now - started, 1),
                        "rss_mb": round(rss_mb(), 1),
                        "stored_mb": round(data_mb, 2),
                        "items": items,
                        "threads": threading.active_count(),
                        "fds": open_fds(),
                        "moto_tracked": moto_tracked(),
                        "jobs": len(self.jobs),
                        "open_jobs": sum(1 for t in self.jobs if t.final is None),
                        "workers": len(self.stack.compute.pids()),
                    }
                    rows.append(row)
                    writer.writerow(row)
                    f.flush()
                    next_sample += a.sample
                time.sleep(0.5)
            # drain: every job must end (expiry and redrive take at most a few minutes here)
            drain_until = time.time() + a.drain
            while time.time() < drain_until and any(t.final is None for t in self.jobs):
                self.poll(client)
                time.sleep(2)
            self.poll(client)
            final_rss = rss_mb()
            row = {**rows[-1], "t": round(time.time() - started, 1), "rss_mb": round(final_rss, 1)}
            rows.append(row)
            writer.writerow(row)
        assert self.stack.compute is not None
        workers_started = self.stack.compute.started
        t0 = time.time()
        self.stack.stop()
        stop_seconds = time.time() - t0
        warm = [r for r in rows if r["t"] >= a.warmup * 60] or rows
        start_rss = warm[0]["rss_mb"]
        end_rss = rows[-1]["rss_mb"]
        outcomes: dict[str, int] = {}
        unexpected, stuck = [], []
        for t in self.jobs:
            if t.final is None:
                stuck.append(f"{t.job_id} ({t.kind})")
                continue
            status, code = t.final
            label = f"{status}/{code}" if code else status
            outcomes[label] = outcomes.get(label, 0) + 1
            if t.final != EXPECTED[t.kind]:
                unexpected.append(f"{t.job_id} ({t.kind}): {label}")
        by_kind: dict[str, int] = {}
        for t in self.jobs:
            by_kind[t.kind] = by_kind.get(t.kind, 0) + 1
        growth = 100 * (end_rss - start_rss) / start_rss
        summary = Summary(
            minutes=round((time.time() - started) / 60, 1),
            every_seconds=a.every,
            samples=len(rows),
            rss_first_mb=round(first, 1),
            rss_start_mb=start_rss,
            rss_end_mb=end_rss,
            rss_max_mb=max(r["rss_mb"] for r in warm),
            growth_percent=round(growth, 2),
            threads_start=warm[0]["threads"],
            threads_end=rows[-1]["threads"],
            fds_start=warm[0]["fds"],
            fds_end=rows[-1]["fds"],
            stored_start_mb=warm[0]["stored_mb"],
            stored_end_mb=rows[-1]["stored_mb"],
            table_items_end=rows[-1]["items"],
            audio_bytes=self.audio.stat().st_size,
            jobs=len(self.jobs),
            by_kind=by_kind,
            outcomes=outcomes,
            unexpected=unexpected,
            stuck=stuck,
            messages_taken=self.taken,
            sweeper=self.sweeper,
            workers_started=workers_started,
            stop_seconds=round(stop_seconds, 2),
        )
        summary.ok = growth <= a.max_growth and not stuck and not unexpected
        (self.out / "soak.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
        return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=120, help="how long jobs keep coming")
    p.add_argument("--every", type=float, default=30, help="seconds between jobs")
    p.add_argument("--sample", type=float, default=30, help="seconds between memory samples")
    p.add_argument("--warmup", type=float, default=5, help="minutes before the baseline sample")
    p.add_argument("--drain", type=float, default=600, help="seconds to wait for the last jobs to end")
    p.add_argument("--workers", type=int, default=1, help="the local stack's worker cap")
    p.add_argument("--idle-exit", type=float, default=10, help="a worker's idle exit, seconds")
    p.add_argument("--max-growth", type=float, default=10, help="allowed RSS growth after warm-up, percent")
    p.add_argument("--audio-seconds", type=float, default=4, help="clip the sample to this long (0: all 21 s)")
    p.add_argument("--out", default="bench/results/soak", help="where soak.csv, soak.json and soak.log go")
    summary = Soak(p.parse_args(argv)).run()
    print(json.dumps(asdict(summary), indent=2))
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
