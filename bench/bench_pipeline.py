"""Pipeline overhead: what the service adds around the transcription, on the local stack.

1. API latency, in process: `lambdas.api.handler.handler` called with API Gateway proxy events
   against moto in this process (no HTTP, no network), many calls per route, routes interleaved
   call by call so background load hits all alike: POST /jobs, GET /jobs/{id} (a pending job),
   GET /jobs/{id} (a succeeded one: with its presigned result URLs), GET /jobs, POST
   /jobs/{id}/cancel, and an unknown route (404 with no AWS call: the framework's floor). The
   first call of each route (cold start: imports, clients) and a few warm-up calls are left
   out; the first is reported apart. Per call: wall time, the thread's CPU time, and the time
   inside AWS SDK calls (botocore + moto), so the handler's own work is its wall time minus
   that. Each round starts from an empty moto (moto's query and conditional-write costs grow
   with its table; DynamoDB's do not).
2. The local stack with warm workers (`LocalStack`, `LocalConfig(max_workers=W)`, the worker
   defaults K and B, idle exit raised to 300 s so workers stay up): start it, run warm-up jobs
   until each of the W workers has transcribed one (the engine loads at a worker's first job),
   then
   - isolated jobs, one at a time, a 9.6 s espeak file each: create (POST /jobs over HTTP),
     upload (presigned POST to moto's S3), then GET every `--poll` s until it succeeded. From
     the job's own timestamps (written by the intake and the worker, same machine clock, ms):
     upload done -> queued (S3 notification, the uploads queue, on_upload), queued -> claim
     (the worker's long poll of the jobs queue, the claim), claim -> commit minus the job's
     compute_seconds (download, probe, outputs, commit), commit (finished_at) -> the first GET
     that shows `succeeded` (an upper bound: it includes the GET and up to one poll interval),
     and end to end (POST /jobs to that GET) minus compute_seconds;
   - throughput: N such jobs submitted back to back; jobs per minute from the first POST to
     the last commit (and from the first claim to the last commit, as bench_throughput.py).
   Rounds alternate W = 1 and W = 2 (1, 2, 2, 1, ...). The first warm-up job of each round
   is a scale from zero (scaler tick + worker process start; the claim comes before the model
   load) and is reported apart.

Why upload -> claim can be short on the local stack although `Timings.local()` polls every 1 s
and scales every 1 s: both pollers are SQS *long* polls (the stack's uploads poller,
WaitTimeSeconds 1; the idle worker's receive, `poll_seconds` 1), and moto answers a waiting
ReceiveMessage as soon as a message arrives (a condition variable), so a warm worker sees a job
within milliseconds of the intake sending it; the 1 s figures bound only how long a poll waits
when nothing comes. The scaler's tick is on the path only when no worker runs (the cold
figure). The intake records the job as queued before it sends its message, so the worker that
receives the message claims at once; until December 2026 it sent first and a worker that received
the message in between put it back for 5 s: a warm claim >= LATE_CLAIM_S after queued_at (a "late
claim") was that path, and none is expected now.

Goals held against the figures: upload done -> claim <= 1 s (warm worker); p99 of the in-process
API latency <= 20 ms on every route. Results: bench/results/pipeline-cpu.json (the local stack's
workers run on the CPU). A measurement, not a test.

    python -m bench.bench_pipeline                     # 5-8 min on 2 shared cores
    python -m bench.bench_pipeline --budget-minutes 5  # no stack round past 5 min (one per W always runs)
    python -m bench.bench_pipeline --quick --out /tmp/p.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from batchscribe_cli.client import parse_time
from bench.provenance import load_average, record, stat

RESULTS = Path(__file__).resolve().parent / "results"
GOALS = {"upload_to_claim_s": 1.0, "api_p99_ms": 20.0}
OWNER_ARN = "arn:aws:iam::111111111111:user/bench"
SPEECH_10S = (  # 9.6 s with harness.audio.speak
    "The weather today is sunny and warm. We will meet at the office after lunch. Please send me the report by Friday."
)
# A warm worker's claim this long or longer after queued_at is a late claim: the old 5 s
# give-back of a message that arrived before its job was queued showed as one (none expected
# since the intake records, then sends).
LATE_CLAIM_S = 4.0


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]


def _seconds(stamp: str) -> float:
    return parse_time(stamp).timestamp()


# ---- 1. API latency in process ------------------------------------------------------------


def api_event(
    method: str, path: str, body: Any = None, query: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """An API Gateway REST proxy event from the benchmark's caller."""
    from batchscribe_cli.local import json_request

    return json_request(method, path, body, user_arn=OWNER_ARN, query=query, headers=headers)


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _moto_api() -> Iterator[Any]:
    """moto in this process with the stack's table, bucket and queues; the API's settings in
    the environment. Powertools as deployed (metrics flushed per call, to a discarded stdout
    here), logs at WARNING, no X-Ray."""
    import boto3
    from moto import mock_aws

    from batchscribe import aws
    from batchscribe.resources import Names
    from batchscribe.settings import ApiSettings, powertools_env
    from batchscribe_cli.provision import provision

    fake = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_SESSION_TOKEN": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        **powertools_env(log_level="WARNING"),
    }
    with _environ(fake), mock_aws():
        os.environ.pop("AWS_ENDPOINT_URL", None)
        p = provision(boto3.Session(region_name="us-east-1"), Names(prefix="b" + uuid.uuid4().hex[:8]))
        settings = ApiSettings(table_name=p.table, bucket_name=p.bucket, max_upload_bytes=50 * 1024 * 1024)
        with _environ(settings.to_env()):
            aws.reset()
            try:
                yield p
            finally:
                aws.reset()


ROUTES = (
    "POST /jobs",
    "GET /jobs/{id}",
    "GET /jobs/{id} succeeded",
    "GET /jobs",
    "POST /jobs/{id}/cancel",
    "unknown route (404, no AWS call)",
)


def _forget_moto_instances() -> None:
    """moto keeps a reference to every model object it made (for its dashboard); drop them
    between calls, as the local stack does, so its growing heap does not slow later calls."""
    from moto.core.model_instances import model_data

    for models in list(model_data.values()):
        for model in list(models.values()):
            del model.instances_tracked[:]


@contextmanager
def _aws_call_timer() -> Iterator[dict[str, float]]:
    """Time spent in AWS SDK calls (botocore's serialise, moto's handling, parse) and their
    count, while the block runs; the rest of a handler call is its own work."""
    from botocore.client import BaseClient

    spent = {"s": 0.0, "calls": 0.0}
    original = BaseClient._make_api_call

    def timed(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return original(self, operation_name, api_params)
        finally:
            spent["s"] += time.perf_counter() - t0
            spent["calls"] += 1

    BaseClient._make_api_call = timed
    try:
        yield spent
    finally:
        BaseClient._make_api_call = original


def api_round(calls: int, warmup: int) -> dict[str, Any]:
    """One round: a fresh moto, `warmup` + `calls` iterations of every route, interleaved."""
    import warnings

    from batchscribe.repository import JobRepository
    from batchscribe_cli.local import LocalContext
    from harness.jobs import succeed_job

    warnings.filterwarnings("ignore", message="No application metrics to publish")
    times: dict[str, list[float]] = {r: [] for r in ROUTES}
    own: dict[str, list[float]] = {r: [] for r in ROUTES}
    cpu: dict[str, list[float]] = {r: [] for r in ROUTES}
    aws_calls: dict[str, list[float]] = {r: [] for r in ROUTES}
    cold: dict[str, float] = {}
    with _moto_api() as p, _aws_call_timer() as spent:
        from lambdas.api.handler import handler

        ctx = LocalContext()
        sink = io.StringIO()

        def call(route: str, event: dict[str, Any], expect: int, i: int) -> dict[str, Any]:
            before_s, before_n = spent["s"], spent["calls"]
            with contextlib.redirect_stdout(sink):  # the metrics' EMF line, CloudWatch's in Lambda
                t0, c0 = time.perf_counter(), time.thread_time()
                resp = handler(event, ctx)
                ms = (time.perf_counter() - t0) * 1000
                cpu_ms = (time.thread_time() - c0) * 1000
            sink.seek(0)
            sink.truncate()
            if resp["statusCode"] != expect:
                raise RuntimeError(f"{route}: HTTP {resp['statusCode']} {resp.get('body', '')[:300]}")
            if route not in cold:
                cold[route] = ms
            elif i > warmup:
                times[route].append(ms)
                cpu[route].append(cpu_ms)
                own[route].append(ms - (spent["s"] - before_s) * 1000)
                aws_calls[route].append(spent["calls"] - before_n)
            return dict(json.loads(resp["body"]))

        def create(i: int) -> str:
            body: dict[str, Any] = {"filename": "talk.wav", "content_type": "audio/wav", "size_bytes": 320_044}
            body["options"] = {"language": "en"}
            headers = {"Idempotency-Key": uuid.uuid4().hex}
            return str(call("POST /jobs", api_event("POST", "/jobs", body, headers=headers), 201, i)["job_id"])

        # a succeeded job, made through the repository (what the intake and a worker do)
        done = create(0)
        succeed_job(JobRepository(p.table), done, segments=4)
        for i in range(warmup + calls + 1):
            job = create(i)
            call("GET /jobs/{id}", api_event("GET", f"/jobs/{job}"), 200, i)
            call("GET /jobs/{id} succeeded", api_event("GET", f"/jobs/{done}"), 200, i)
            call("GET /jobs", api_event("GET", "/jobs"), 200, i)
            call("POST /jobs/{id}/cancel", api_event("POST", f"/jobs/{job}/cancel"), 200, i)
            call("unknown route (404, no AWS call)", api_event("GET", "/nothing-here"), 404, i)
            _forget_moto_instances()
    return {"times_ms": times, "cpu_ms": cpu, "own_ms": own, "aws_calls": aws_calls, "cold_ms": cold}


def api_latency(calls: int, rounds: int, warmup: int, log: Callable[[str], None]) -> dict[str, Any]:
    results = []
    for r in range(rounds):
        results.append(api_round(calls, warmup))
        line = "  ".join(
            f"{route.split(' (')[0]} p50 {percentile(t, 50):.1f} p99 {percentile(t, 99):.1f}"
            for route, t in results[-1]["times_ms"].items()
        )
        log(f"  API round {r + 1}: {line} ms")
    routes: dict[str, Any] = {}
    for route in ROUTES:
        per_round = [res["times_ms"][route] for res in results]
        pooled = [x for t in per_round for x in t]
        routes[route] = {
            "calls": len(pooled),
            "p50_ms": stat([percentile(t, 50) for t in per_round], 2),
            "p90_ms": stat([percentile(t, 90) for t in per_round], 2),
            "p99_ms": stat([percentile(t, 99) for t in per_round], 2),
            "max_ms": stat([max(t) for t in per_round], 2),
            "pooled": {
                "p50_ms": round(percentile(pooled, 50), 2),
                "p90_ms": round(percentile(pooled, 90), 2),
                "p99_ms": round(percentile(pooled, 99), 2),
                "max_ms": round(max(pooled), 2),
                "mean_ms": round(statistics.fmean(pooled), 2),
            },
            # the first call in this process (imports, settings, clients); later rounds only
            # rebuild the clients
            "cold_first_call_ms": round(results[0]["cold_ms"][route], 1),
            # CPU time of the calling thread (the handler and moto both run on it): what other
            # processes' load on the machine does not inflate
            "cpu_p50_ms": stat([percentile(res["cpu_ms"][route], 50) for res in results], 2),
            "cpu_p99_ms": stat([percentile(res["cpu_ms"][route], 99) for res in results], 2),
            # the handler's own work: its time minus the time inside AWS SDK calls (moto here)
            "own_p50_ms": stat([percentile(res["own_ms"][route], 50) for res in results], 2),
            "own_p99_ms": stat([percentile(res["own_ms"][route], 99) for res in results], 2),
            "aws_calls_per_request": statistics.median(x for res in results for x in res["aws_calls"][route]),
        }
    worst = max(routes[r]["pooled"]["p99_ms"] for r in ROUTES)
    worst_own = max(routes[r]["own_p99_ms"]["median"] for r in ROUTES)
    return {
        "calls_per_route_per_round": calls,
        "warmup_calls": warmup,
        "rounds": rounds,
        "routes": routes,
        "goal_p99_ms": GOALS["api_p99_ms"],
        "worst_pooled_p99_ms": worst,
        "goal_met": worst <= GOALS["api_p99_ms"],
        "worst_own_p99_ms": worst_own,
        "goal_met_own_work": worst_own <= GOALS["api_p99_ms"],
    }


# ---- 2. the local stack ------------------------------------------------------------------


def measure_job(client: Any, path: Path, poll: float, timeout: float = 300) -> dict[str, Any]:
    """One job, alone: create, upload, GET every `poll` s until it ends; its timings."""
    t0 = time.time()
    job = client.create_job(path, {"language": "en"})
    t1 = time.time()
    client.upload(job["upload"], path)
    t2 = time.time()
    deadline = t2 + timeout
    gets = 0
    while True:
        final = client.get(job["job_id"])
        seen = time.time()
        gets += 1
        if final["status"] in ("succeeded", "failed", "cancelled"):
            break
        if seen > deadline:
            raise TimeoutError(f"job {job['job_id']} still {final['status']}")
        time.sleep(poll)
    if final["status"] != "succeeded":
        raise RuntimeError(f"job {job['job_id']} {final['status']}: {final.get('error')}")
    queued, started, finished = (_seconds(final[k]) for k in ("queued_at", "started_at", "finished_at"))
    compute = float(final["result"]["compute_seconds"])
    return {
        "job_id": job["job_id"],
        "audio_s": float(final["result"]["duration_seconds"]),
        "compute_s": compute,
        "create_s": t1 - t0,
        "upload_s": t2 - t1,
        "upload_to_queued_s": queued - t2,
        "queued_to_claim_s": started - queued,
        "upload_to_claim_s": started - t2,
        "claim_to_commit_s": finished - started,
        "worker_overhead_s": finished - started - compute,
        "commit_to_visible_s": seen - finished,
        "end_to_end_s": seen - t0,
        "end_to_end_minus_compute_s": seen - t0 - compute,
        "gets": gets,
        "late_claim": started - queued >= LATE_CLAIM_S,
    }


def _worker_of(stack: Any, job_id: str) -> str | None:
    from batchscribe.repository import JobRepository

    return JobRepository(stack.resources.table).get(job_id).worker


def stack_round(
    workers: int, path: Path, isolated: int, jobs: int, poll: float, data_dir: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    from batchscribe.settings import Timings
    from batchscribe_cli.client import Client
    from batchscribe_cli.local import LocalConfig, LocalStack

    config = LocalConfig(
        port=0,
        max_workers=workers,
        data_dir=data_dir,
        timings=Timings.local().replace(idle_exit_seconds=300),
        quiet=True,
    )
    t_start = time.perf_counter()
    with LocalStack(config) as stack:
        startup = time.perf_counter() - t_start
        client = Client(stack.url, owner=f"bench-w{workers}")
        # warm-up: every worker transcribes a job (the engine loads at a worker's first job)
        cold = measure_job(client, path, poll=0.1)
        seen = {_worker_of(stack, cold["job_id"])}
        tries = 0
        while len(seen) < workers:
            tries += 1
            if tries > 20:
                raise RuntimeError(f"only {len(seen)} of {workers} workers took a warm-up job")
            batch = [client.submit(path, {"language": "en"})["job_id"] for _ in range(workers)]
            for job_id in batch:
                if client.wait(job_id, poll=0.2, timeout=300)["status"] != "succeeded":
                    raise RuntimeError(f"warm-up job {job_id} did not succeed")
                seen.add(_worker_of(stack, job_id))
        assert stack.compute is not None
        running = stack.compute.active(stack.pool)
        single = [measure_job(client, path, poll) for _ in range(isolated)]
        t0 = time.time()
        ids = [client.submit(path, {"language": "en"})["job_id"] for _ in range(jobs)]
        submitted = time.time() - t0
        done = [client.wait(i, poll=0.25, timeout=600) for i in ids]
        if any(j["status"] != "succeeded" for j in done):
            raise RuntimeError(f"throughput jobs did not all succeed: {[j['status'] for j in done]}")
        first_claim = min(_seconds(j["started_at"]) for j in done)
        last = max(_seconds(j["finished_at"]) for j in done)
        result: dict[str, Any] = {
            "workers": workers,
            "workers_running": running,
            "warmup_jobs": 1 + tries * workers,
            "stack_start_s": round(startup, 3),
            "cold": cold,
            "isolated": single,
            "throughput": {
                "jobs": jobs,
                "submit_s": round(submitted, 3),
                "seconds": round(last - t0, 3),
                "jobs_per_minute": round(jobs / (last - t0) * 60, 2),
                "claim_to_commit_jobs_per_minute": round(jobs / (last - first_claim) * 60, 2),
                "compute_s_sum": round(sum(j["result"]["compute_seconds"] for j in done), 3),
            },
            "load_average": load_average(),
        }
    u = statistics.median(j["upload_to_claim_s"] for j in single) if single else float("nan")
    log(
        f"  stack W={workers}: start {startup:.1f} s, cold upload->claim {cold['upload_to_claim_s']:.2f} s, "
        f"warm upload->claim median {u * 1000:.0f} ms, {result['throughput']['jobs_per_minute']:.1f} jobs/min "
        f"({jobs} jobs), load {result['load_average']}"
    )
    return result


ISOLATED_FIGURES = (
    "create_s",
    "upload_s",
    "upload_to_queued_s",
    "queued_to_claim_s",
    "upload_to_claim_s",
    "claim_to_commit_s",
    "compute_s",
    "worker_overhead_s",
    "commit_to_visible_s",
    "end_to_end_s",
    "end_to_end_minus_compute_s",
)


def summarise_stack(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    isolated = [j for r in rounds for j in r["isolated"]]
    out: dict[str, Any] = {
        "isolated_jobs": len(isolated),
        "isolated": {k: stat([j[k] for j in isolated], 4) for k in ISOLATED_FIGURES} if isolated else {},
        "cold_upload_to_claim_s": stat([r["cold"]["upload_to_claim_s"] for r in rounds], 3),
        "stack_start_s": stat([r["stack_start_s"] for r in rounds], 3),
        "by_workers": {},
    }
    for w in sorted({r["workers"] for r in rounds}):
        mine = [r for r in rounds if r["workers"] == w]
        jobs = [j for r in mine for j in r["isolated"]]
        out["by_workers"][str(w)] = {
            "rounds": len(mine),
            "jobs_per_minute": stat([r["throughput"]["jobs_per_minute"] for r in mine], 2),
            "claim_to_commit_jobs_per_minute": stat(
                [r["throughput"]["claim_to_commit_jobs_per_minute"] for r in mine], 2
            ),
            "isolated_jobs": len(jobs),
            "late_claims": sum(1 for j in jobs if j["late_claim"]),
            "upload_to_claim_s": stat([j["upload_to_claim_s"] for j in jobs], 4) if jobs else None,
            "end_to_end_minus_compute_s": stat([j["end_to_end_minus_compute_s"] for j in jobs], 4) if jobs else None,
        }
    ws = out["by_workers"]
    if "1" in ws and "2" in ws:
        # paired in time: each W=2 round against the W=1 round next to it (1, 2, 2, 1, ...)
        ones = [r for r in rounds if r["workers"] == 1]
        twos = [r for r in rounds if r["workers"] == 2]
        ratios = [
            b["throughput"]["jobs_per_minute"] / a["throughput"]["jobs_per_minute"]
            for a, b in zip(ones, twos, strict=False)
        ]
        out["two_vs_one_worker_ratio"] = stat(ratios, 3)
    if isolated:
        u = out["isolated"]["upload_to_claim_s"]
        out["goal_upload_to_claim_s"] = GOALS["upload_to_claim_s"]
        p95 = percentile([j["upload_to_claim_s"] for j in isolated], 95)
        out["upload_to_claim_p95_s"] = round(p95, 4)
        out["goal_met_median"] = u["median"] <= GOALS["upload_to_claim_s"]
        out["goal_met_p95"] = p95 <= GOALS["upload_to_claim_s"]
        out["goal_met_every_job"] = u["max"] <= GOALS["upload_to_claim_s"]
        out["late_claims"] = sum(1 for j in isolated if j["late_claim"])
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-calls", type=int, default=100, help="timed calls per route per API round")
    parser.add_argument("--api-rounds", type=int, default=3, help="rounds, each on a fresh moto")
    parser.add_argument("--api-warmup", type=int, default=10, help="calls per route left out at a round's start")
    parser.add_argument("--repeats", type=int, default=2, help="stack rounds per worker count (W=1, W=2)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--isolated", type=int, default=6, help="one-at-a-time jobs per stack round")
    parser.add_argument("--jobs", type=int, default=8, help="jobs submitted back to back per stack round")
    parser.add_argument("--poll", type=float, default=0.025, help="GET interval while an isolated job runs (s)")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="start no further stack round (after one per worker count) that would end past this",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    parser.add_argument(
        "--out", type=Path, default=None, help="default bench/results/pipeline-cpu.json (--quick: a temporary file)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.api_calls, args.api_rounds, args.api_warmup = 10, 1, 2
        args.repeats, args.isolated, args.jobs = 1, 1, 2
    # a quick run's figures mean nothing: they never replace the recorded ones unless asked
    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "pipeline-quick.json" if args.quick else RESULTS / "pipeline-cpu.json"
    return args


def log(line: str) -> None:
    print(line, flush=True)


def stack_rounds(args: argparse.Namespace, started: float, api_s: float) -> tuple[list[dict[str, Any]], list[int]]:
    """The local stack rounds, worker counts alternating (1, 2, 2, 1, ...); the rounds run and
    the worker counts of those the budget left out."""
    from harness.audio import speak

    order: list[int] = []
    for i in range(args.repeats):
        order += args.workers if i % 2 == 0 else list(reversed(args.workers))
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        path = speak(SPEECH_10S, Path(tmp) / "speech-10s.wav")
        log(f"local stack rounds (workers): {order}; {args.isolated} isolated + {args.jobs} back-to-back jobs each")
        for n, w in enumerate(order):
            elapsed = time.perf_counter() - started
            per_round = (elapsed - api_s) / max(1, len(rounds))
            if (
                args.budget_minutes is not None
                and n >= len(args.workers)
                and elapsed + per_round > args.budget_minutes * 60
            ):
                log(f"  budget of {args.budget_minutes:g} min: rounds {order[n:]} not run")
                return rounds, order[n:]
            rounds.append(stack_round(w, path, args.isolated, args.jobs, args.poll, Path(tmp) / f"data-{n}", log))
    return rounds, []


def print_summary(record_: dict[str, Any], out: Path) -> None:
    api = record_["api"]
    s = record_["stack"] or {"isolated": {}, "by_workers": {}}
    for route, r in api["routes"].items():
        log(
            f"{route:<34} p50 {r['pooled']['p50_ms']:6.2f} ms  p99 {r['pooled']['p99_ms']:6.2f} ms  "
            f"({r['calls']} calls)"
        )
    log(f"API p99 <= {GOALS['api_p99_ms']:.0f} ms on every route: {'met' if api['goal_met'] else 'NOT met'}")
    if s["isolated"]:
        u = s["isolated"]["upload_to_claim_s"]
        log(
            f"upload done -> claim (warm): median {u['median'] * 1000:.0f} ms, "
            f"p95 {s['upload_to_claim_p95_s'] * 1000:.0f} ms, max {u['max'] * 1000:.0f} ms ({u['runs']} jobs): "
            f"goal <= 1 s at p95 {'met' if s['goal_met_p95'] else 'NOT met'}; "
            f"{s['late_claims']} late claim(s) (>= {LATE_CLAIM_S:.0f} s after queued)"
        )
    for w, r in s["by_workers"].items():
        log(f"W={w}: {r['jobs_per_minute']['median']:.1f} jobs/min (median of {r['rounds']})")
    log(f"recorded in {out}")


def main(argv: list[str] | None = None) -> None:
    from gpu_container.worker.main import default_batching

    args = parse_args(argv)
    started, load_start = time.perf_counter(), load_average()
    log(f"API handler in process: {args.api_rounds} round(s) x {args.api_calls} calls per route")
    api = api_latency(args.api_calls, args.api_rounds, args.api_warmup, log)
    rounds, skipped = stack_rounds(args, started, time.perf_counter() - started)
    k, b = default_batching("cpu", "tiny.en")
    result: dict[str, Any] = {
        "benchmark": "pipeline",
        **record(started, load_start, argv),
        "setup": {
            "engine": "faster-whisper/tiny.en on CPU (the local stack's worker)",
            "worker_held_jobs": k,
            "worker_batch_size": b,
            "timings": "Timings.local(), idle_exit_seconds=300",
            "speech_file": "espeak speech, 9.6 s",
            "poll_s": args.poll,
            "order": [r["workers"] for r in rounds],
            "skipped_for_budget": skipped,
        },
        "api": api,
        "stack": summarise_stack(rounds) if rounds else None,
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_summary(result, args.out)


if __name__ == "__main__":
    main()
