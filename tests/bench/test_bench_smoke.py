"""Each benchmark script runs end to end with tiny parameters and writes what report.py reads.

The scripts run as `make bench` runs them (`python -m bench.<script>`, a child process each),
with their results sent to a temporary folder so the recorded bench/results/ stay as they are.
What is checked is the shape of the output (the fields the report and docs/performance.md use are there,
the numbers finite and positive), never a timing: the machine is shared and the sizes are too
small to mean anything.

A minute or two each: marked `bench_smoke`, which the default run leaves out (pyproject's
addopts); CI runs them once, apart (`make bench-smoke`).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import bench_pipeline, report

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.bench_smoke]  # needs espeak-ng and ffmpeg, as the rest of the suite


def run(args: list[str], timeout: float = 300) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def positive(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def assert_figure(fig: dict[str, Any], runs: int | None = None, allow_zero: bool = False) -> None:
    """A recorded figure: median, min, max, runs, finite, min <= median <= max."""
    assert {"median", "min", "max", "runs", "values"} <= fig.keys(), fig
    for k in ("median", "min", "max"):
        assert math.isfinite(fig[k]), fig
        assert fig[k] >= 0 if allow_zero else fig[k] > 0, fig
    assert fig["min"] <= fig["median"] <= fig["max"]
    assert fig["runs"] == len(fig["values"]) >= 1
    if runs is not None:
        assert fig["runs"] == runs


def assert_provenance(result: dict[str, Any], module: str) -> None:
    assert result["command"].startswith(f"python -m bench.{module}")
    assert result["date"] and result["machine"]["cpu"] and positive(result["machine"]["cores"])
    assert len(result["load_average"]["start"]) == 3 and len(result["load_average"]["end"]) == 3


def test_bench_engines_quick(tmp_path: Path) -> None:
    out = tmp_path / "engines-cpu.json"

    stdout = run(["-m", "bench.bench_engines", "--quick", "--device", "cpu", "--out", str(out)])

    result = json.loads(out.read_text())
    assert_provenance(result, "bench_engines")
    assert result["benchmark"] == "engines" and result["device"] == "cpu" and result["repeats"] == 1
    assert result["baseline"] == "openai-whisper"
    assert set(result["variants"]) == {
        "openai-whisper",
        "faster-whisper",
        "faster-whisper-batched",
        "faster-whisper-batched-words",
        "worker-batched",
        "worker-one-lane",
    }
    (name,) = result["files"]
    assert positive(result["files"][name]["audio_seconds"])
    for variant, row in result["variants"].items():
        for key in ("import_s", "load_s", "loaded_rss_mb", "peak_rss_mb"):
            assert_figure(row[key], runs=1)
        f = row["files"][name]
        for key in ("wall_s", "x_realtime", "rtf", "cpu_s", "peak_rss_mb"):
            assert_figure(f[key], runs=1)
        assert 0 <= f["wer"] <= 1, (variant, f["wer"])  # five seconds of clear speech
        for key in ("wall_s", "x_realtime", "cpu_s", "peak_rss_mb"):
            assert_figure(f["vs_openai_whisper"][key], runs=1)
        assert_figure(row["vs_openai_whisper"]["load_s"], runs=1)
    assert result["variants"]["openai-whisper"]["files"][name]["vs_openai_whisper"]["wall_s"]["median"] == 1.0
    assert len(result["rounds"]) == len(result["variants"])
    assert "recorded in" in stdout
    assert "## Engines, measured (cpu)" in report.engines_section(result)


def test_bench_pipeline_quick(tmp_path: Path) -> None:
    out = tmp_path / "pipeline-cpu.json"

    # one worker: a second one's warm-up is the slow part (and the ratio is checked below)
    run(["-m", "bench.bench_pipeline", "--quick", "--workers", "1", "--out", str(out)])

    result = json.loads(out.read_text())
    assert_provenance(result, "bench_pipeline")
    api = result["api"]
    assert set(api["routes"]) == set(bench_pipeline.ROUTES)
    for route in api["routes"].values():
        assert route["calls"] >= 5
        for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "cpu_p50_ms", "cpu_p99_ms", "own_p50_ms", "own_p99_ms"):
            assert_figure(route[key], runs=1)
        assert route["pooled"]["p50_ms"] <= route["pooled"]["p99_ms"] <= route["pooled"]["max_ms"]
    assert api["routes"]["unknown route (404, no AWS call)"]["aws_calls_per_request"] == 0
    assert api["routes"]["GET /jobs/{id}"]["aws_calls_per_request"] >= 1
    assert isinstance(api["goal_met"], bool) and isinstance(api["goal_met_own_work"], bool)

    stack = result["stack"]
    (only,) = result["rounds"]
    assert only["workers"] == only["workers_running"] == 1
    assert only["throughput"]["jobs"] == 2 and positive(only["throughput"]["jobs_per_minute"])
    for key in ("create_s", "upload_s", "upload_to_claim_s", "compute_s", "end_to_end_s", "claim_to_commit_s"):
        assert_figure(stack["isolated"][key], runs=1)
    for key in ("upload_to_queued_s", "queued_to_claim_s", "commit_to_visible_s", "worker_overhead_s"):
        assert all(v > -0.1 for v in stack["isolated"][key]["values"])  # stamps in ms, from two processes
    assert_figure(stack["by_workers"]["1"]["jobs_per_minute"], runs=1)
    assert isinstance(stack["goal_met_every_job"], bool) and stack["late_claims"] == 0
    assert "## Pipeline overhead on the local stack" in report.pipeline_section(result)


def test_bench_throughput_small(tmp_path: Path) -> None:
    # bench_throughput.py writes into bench/results/ itself: point it at tmp_path instead
    code = (
        "import sys; from pathlib import Path; import bench.bench_throughput as b; "
        f"b.RESULTS = b.ROOT = Path({str(tmp_path)!r}); "
        "sys.argv = [b.__file__, '--jobs', '2', '--repeats', '1']; b.main()"  # as `python -m` sets it
    )

    stdout = run(["-c", code])

    (out,) = tmp_path.glob("throughput-*.json")
    result = json.loads(out.read_text())
    assert result["benchmark"] == "throughput" and result["jobs"] == 2
    assert result["command"] == "python -m bench.bench_throughput --jobs 2 --repeats 1"
    assert set(result["summary"]) == {"one-at-a-time", "batched", "batched-k-eq-b"}
    assert set(result["ratios"]) == {"batched", "batched-k-eq-b"} and all(map(positive, result["ratios"].values()))
    for s in result["summary"].values():
        assert positive(s["jobs_per_minute_median"]) and s["min"] <= s["jobs_per_minute_median"] <= s["max"]
        assert s["runs"] == 1 and 0 <= s["wer"] <= 1
    assert positive(result["throughput_ratio"])
    assert re.search(r"throughput ratio: \d+\.\d\d\u00d7$", stdout.strip())
    assert "## Cross-job batching" in report.throughput_section(result)


def test_bench_packing_gap_small(tmp_path: Path) -> None:
    out = tmp_path / "packing-gap.json"
    args = ["--mixes", "1", "--jobs", "3", "--gaps", "0.5", "--baseline", "unpacked", "--out", str(out)]
    stdout = run(["-m", "bench.bench_packing_gap", *args])
    assert f"wrote {out}" in stdout
    result = json.loads(out.read_text())
    assert_provenance(result, "bench_packing_gap")
    summary = result["summary"]
    assert set(summary) == {"unpacked", "0.5"} and result["baseline"] == "unpacked"
    assert "wer_minus_baseline" in summary["0.5"] and "wer_minus_baseline" not in summary["unpacked"]
    for name, s in summary.items():
        assert s["jobs"] == 3 and 0 <= s["wer"] < 0.5 and s["rows"] >= 1 and positive(s["encoder_per_speech"])
        assert len(result["variants"][name]["mixes"][0]["jobs"]) == 3
    assert summary["0.5"]["rows"] < summary["unpacked"]["rows"]  # three short jobs share a row
    worse, better = summary["0.5"]["jobs_worse_than_unpacked"], summary["0.5"]["jobs_better_than_unpacked"]
    assert 0 <= worse + better <= 3
    assert "## The silence between packed pieces" in report.packing_gap_section(result)


def test_bench_batching_small() -> None:
    stdout = run(["-m", "bench.bench_batching", "--jobs", "2", "--repeats", "1", "--batch-size", "2"])

    lines = stdout.strip().splitlines()
    for path in ("sequential", "batched"):
        line = next(x for x in lines if x.strip().startswith(path))
        assert re.search(r"x realtime\)\s+WER \d\.\d{3}", line), line
    ratio = re.fullmatch(r"throughput ratio: (\d+\.\d\d)\u00d7", lines[-1])
    assert ratio and positive(float(ratio[1]))


# What the lent GPU machine lacks and the packed site tree does not bring: the benchmark must not
# import them (a sitecustomize in front of the path refuses them, as that machine would).
ABSENT_ON_DEVICE = ("boto3", "botocore", "moto", "transformers")  # Powertools is packed: the worker needs it


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_bench_gpu_runs_as_the_device_call_runs_it(device: str, tmp_path: Path) -> None:
    """bench/gpu/run.sh, the command `make bench-gpu` prints, on tiny sizes (tiny shape, batches
    of 2, 8 tokens): the device's facts, tiny.en through the worker's whole path on both engines,
    both runners on full batches, the worker's Batches on two mixes filling every batch, the
    tokens decoded counted (CTranslate2 asked for more to decode as many)."""
    blocker = tmp_path / "absent"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        "class Absent(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        f"        if name.split('.')[0] in {ABSENT_ON_DEVICE!r}:\n"
        "            raise ImportError(f'{name} is not on the GPU machine')\n"
        "sys.meta_path.insert(0, Absent())\n"
    )
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": device, "PY": sys.executable, "OUT": str(out), "SITE_TAR": str(tmp_path / "none"),
           "BUDGET": "900", "LIMIT": "900", "PYTHONPATH": str(blocker)}  # fmt: skip

    proc = subprocess.run(["bash", "bench/gpu/run.sh", "--quick"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900, check=False)  # fmt: skip

    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (result_file,) = out.glob("gpu-*-quick.json")
    result = json.loads(result_file.read_text())
    assert result["benchmark"] == "gpu" and result["device"]["device"] == device
    assert result["device"]["versions"]["ctranslate2"] and result["command"].startswith("python -m bench.bench_gpu")
    if device == "cuda":
        assert result["device"]["gpu"] and result["device"]["driver"] and result["device"]["compute_capability"]
    assert {r["engine"] for r in result["correctness"]} == {"faster-whisper", "openai-whisper"}
    assert all(r["model"] == "tiny.en" and r["wer"] <= 0.3 for r in result["correctness"]), result["correctness"]
    rows = result["rows"]
    assert len((out / "bench-gpu.jsonl").read_text().splitlines()) == len(rows)
    assert not [r for r in rows if "skipped" in r or "error" in r]
    for engine in ("faster-whisper", "openai-whisper"):
        mine = [r for r in rows if r.get("engine") == engine]
        (build,) = [r for r in mine if r["step"] == "build"]
        assert build["tokens_target"] == 8 and build["tokens_asked"] >= 8
        runner = [r for r in mine if r["step"] == "runner"]
        assert {(r["beam"], r["batch"]) for r in runner} == {(1, 2), (5, 2)}
        worker = [r for r in mine if r["step"] == "worker"]
        assert len(worker) == 2  # short jobs and long jobs
        for r in runner + worker:
            assert 6 <= r["tokens_mean"] <= 8, r  # decoded, not asked
            assert positive(r["seconds"]) and positive(r["x_realtime_windows_x30"])
        for r in worker:
            assert r["finished"] == r["jobs"] and r["failed"] == 0, r
            assert r["full_batches"] == r["batches_run"] >= 2 and r["windows"] == 2 * r["batches_run"], r
            assert positive(r["x_realtime"])
    (asked,) = [r["tokens_asked"] for r in rows if r.get("engine") == "faster-whisper" and r["step"] == "build"]
    assert asked > 8  # CTranslate2 decodes about half its max_length: asked for more
    assert "== [" in (out / "log.txt").read_text()


def test_bench_host_ceiling_quick(tmp_path: Path) -> None:
    out = tmp_path / "host-ceiling.json"

    stdout = run(["-m", "bench.bench_host_ceiling", "--quick", "--out", str(out)])

    result = json.loads(out.read_text())
    assert_provenance(result, "bench_host_ceiling")
    assert re.fullmatch(r"[0-9a-f]{7,}(\+dirty)?", result["commit"])
    for name, jobs in (("long_file", 1), ("short_jobs", 3)):
        r = result[name]
        assert r["jobs"] == jobs and positive(r["audio_s_per_run"])
        for key in ("xrt_per_core", "xrt_wall", "cpu_s"):
            assert_figure(r[key], runs=1)
    mel = result["log_mel"]
    assert_figure(mel["per_window_ms"])
    assert_figure(mel["batched_ms_per_window"])
    # every window's features were computed, ahead or on the spot (how many ahead depends on how
    # fast the decoding threads went: tests/unit/test_features.py proves the prefetch itself)
    prefetched = result["features_prefetch"]
    assert prefetched["ready_rows"] + prefetched["computed_rows"] >= 2 * 3  # two runs of 3 jobs at least
    assert "x realtime per core" in stdout
    assert "## Host ceiling" in report.host_ceiling_section(result)
    # the cost model reads the long-file figure from such a file
    from bench import cost

    tp = cost.load_throughput(measured=[], host_ceiling=out)
    assert tp.host_xrt_per_vcpu == result["long_file"]["xrt_per_core"]["median"]
