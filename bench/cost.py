"""Cost model: what an audio hour costs on Batchscribe's GPU workers, against managed APIs.

    python -m bench.cost                      # writes bench/results/cost.json, prints the markdown section
    python -m bench.cost --refresh-estimates  # recomputes the estimated curves in bench/throughput.json

Inputs, each with its date and source:
- `bench/prices.json`: EC2 on-demand and typical Spot prices, GPU specifications, managed API
  prices, cold-start components, per-job serverless costs and fixed monthly costs.
- `bench/throughput.json`: x realtime per GPU as a function of batch size (30 s windows in one
  batch), per model shape and engine. H100 figures are measured (random weights with the real
  model dimensions); T4, A10G, L4 and L40S are scaled estimates (`"estimated": true`). A later GPU
  run replaces an estimate: drop `bench/results/throughput-<gpu>.json` (format in
  `load_throughput`) and the measured curve wins over the estimate for that GPU, model and engine.

The model, in three steps:
1. Steady state: a worker whose batch is full. Cost per audio hour = price per GPU-hour ÷
   (x realtime at that batch) x padding, where padding = window-seconds computed per audio second
   (Whisper pads every 30 s window, so a 5 s file costs a 30 s window). The x realtime is the
   GPU curve capped by the host: decoding, log-mel and VAD run on the instance's CPUs
   (bench/results/host-ceiling.json: the worker's whole host path with a zero-cost model, x realtime
   per core on long files, `python -m bench.bench_host_ceiling`; throughput.json's `host_pipeline`
   step sum where that file is absent).
2. Load: Poisson arrivals of `jobs_per_day` with the file-length mix `FileMix`. Below one busy
   worker (λ·S < 1) each job runs alone (batch = its own windows) on a single worker that pays
   a cold start (boot + image pull + model load) whenever a job finds no worker alive, and an
   idle tail (`idle_exit_s`, then the compute environment's scale-in lag) after its last job.
   Above it, the fleet is taken as continuously busy with `jobs_per_worker` jobs per worker
   (what the scaler aims at), plus Spot interruptions (each a replacement cold start and the
   held jobs' lost progress). `bench/simulate.py` (`python -m bench.simulate`) checks this against a
   discrete-event run.
3. All in: compute + per-job serverless costs (API Gateway, Lambda, S3, DynamoDB, SQS, events,
   logs) + fixed monthly costs spread over the month's audio. DynamoDB's write request units
   grow with the time a worker holds the job (a heartbeat every few seconds): `WriteCost`, from
   the steps `bench/writes.py` meters (bench/results/writes.json), gives them for the job's held
   time in each regime. Break-even: the lowest volume at
   which all-in cost per audio hour is at most each managed API's price at that volume.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from statistics import NormalDist
from typing import Any

from batchscribe.whisper_models import SAMPLE_RATE, WINDOW_SECONDS
from bench.provenance import ROOT, command, hardware

BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PRICES = BENCH / "prices.json"
THROUGHPUT = BENCH / "throughput.json"
HOST_CEILING = RESULTS / "host-ceiling.json"  # python -m bench.bench_host_ceiling
WRITES = RESULTS / "writes.json"
WRITES_ITEM = "dynamodb_write_request_units"  # the per-job item WriteCost counts
WRITE_DESIGN = ("after", "declared")  # this tree's heartbeats, the sweep index as resources declares it
REFERENCE_HELD_S = 600.0  # a job held 10 minutes: the figure shown beside the per-job services

WINDOW_S = WINDOW_SECONDS
MODELS = ("large-v3-turbo", "large-v3")
ENGINES = ("ctranslate2", "pytorch")  # faster-whisper runs CTranslate2: the worker's default engine
DEFAULT_ENGINE = "ctranslate2"
DEFAULT_MODEL = "large-v3-turbo"
LOADS = (10, 100, 1_000, 10_000, 100_000, 1_000_000)  # jobs per day
DAYS_PER_MONTH = 30.44


# ---------------------------------------------------------------------------------------------
# Throughput curves


@dataclass(frozen=True)
class Curve:
    """x realtime of one GPU for one model shape and engine, against the number of 30 s windows
    in a batch. Log-log interpolation between points; flat past the largest batch."""

    gpu: str
    model: str
    engine: str
    points: tuple[tuple[float, float], ...]
    estimated: bool
    label: str = ""
    source: str = ""

    @property
    def max_batch(self) -> float:
        return self.points[-1][0]

    @property
    def peak(self) -> float:
        return max(x for _, x in self.points)

    def xrt(self, windows: float) -> float:
        """x realtime (window-seconds computed per second) with `windows` windows in the batch."""
        if windows <= 0:
            return 0.0
        b = min(windows, self.max_batch)
        b0, x0 = self.points[0]
        if b <= b0:
            return x0 * b / b0
        for (b1, x1), (b2, x2) in zip(self.points, self.points[1:], strict=False):
            if b == b2:
                return x2
            if b < b2:
                t = math.log(b / b1) / math.log(b2 / b1)
                return math.exp(math.log(x1) + t * (math.log(x2) - math.log(x1)))
        return self.points[-1][1]


@dataclass
class Throughput:
    curves: dict[tuple[str, str, str], Curve]
    host_xrt_per_vcpu: float
    host_reserved_vcpus: float
    replaced: list[str] = field(default_factory=list)
    host_source: str = "throughput.json host_pipeline (decode + log-mel + VAD, one thread each)"

    def curve(self, gpu: str, model: str, engine: str) -> Curve:
        return self.curves[(gpu, model, engine)]


def _points(raw: dict[str, float] | Sequence[Sequence[float]]) -> tuple[tuple[float, float], ...]:
    items = raw.items() if isinstance(raw, dict) else ((p[0], p[1]) for p in raw)
    return tuple(sorted((float(b), float(x)) for b, x in items))


def curves_from_file(data: dict[str, Any]) -> list[Curve]:
    """Curves from a measured results file naming its GPU. Two shapes are accepted:

        {"gpu": "L4", "when": "...", "label": "...", "source": "...",
         "curves": [{"model": "large-v3-turbo", "engine": "ctranslate2", "points": {"1": 40.0, "32": 120.0}}]}

    or the JSON lines of shared/gpu-reference/shape_bench_*.py collected under "rows"
    ({"gpu": "L4", "rows": [{"shape": ..., "batch": ..., "x_realtime": ..., "engine"?: ...}, ...]}; rows
    without "engine" are PyTorch's)."""
    gpu = data["gpu"]
    label = data.get("label", f"measured on {gpu}, {data.get('when', 'date not recorded')}")
    source = data.get("source", "")
    out = []
    for c in data.get("curves", []):
        out.append(Curve(gpu, c["model"], c["engine"], _points(c["points"]), False, label, source))
    grouped: dict[tuple[str, str], dict[str, float]] = {}
    for row in data.get("rows", []):
        if "x_realtime" not in row:
            continue
        key = (row["shape"], row.get("engine", "pytorch"))
        grouped.setdefault(key, {})[str(row["batch"])] = row["x_realtime"]
    for (model, engine), pts in grouped.items():
        out.append(Curve(gpu, model, engine, _points(pts), False, label, source))
    return out


def load_throughput(
    path: Path = THROUGHPUT, measured: Iterable[Path] | None = None, host_ceiling: Path | None = HOST_CEILING
) -> Throughput:
    """The curves of throughput.json, with any measured `bench/results/throughput-*.json`
    naming its GPU replacing the entry (estimated or not) for the same GPU, model and engine
    (other files there, such as bench_throughput.py's CPU worker runs, carry no curves).
    The host's x realtime per vCPU is the worker's whole host path on long files from
    `host_ceiling` (bench_host_ceiling.py's result) where it exists, else throughput.json's
    sum of three steps."""
    data = json.loads(path.read_text())
    curves = {}
    for c in data["curves"]:
        curve = Curve(
            c["gpu"], c["model"], c["engine"], _points(c["points"]), c["estimated"], c.get("label", ""), c["source"]
        )
        curves[(curve.gpu, curve.model, curve.engine)] = curve
    replaced = []
    for f in sorted(measured if measured is not None else RESULTS.glob("throughput-*.json")):
        result = json.loads(Path(f).read_text())
        if not result.get("gpu"):
            continue
        for curve in curves_from_file(result):
            curves[(curve.gpu, curve.model, curve.engine)] = curve
            replaced.append(f"{curve.gpu}/{curve.model}/{curve.engine} <- {Path(f).name}")
    host = data["host_pipeline"]
    tp = Throughput(curves, host["xrt_per_vcpu"], host["reserved_vcpus"], replaced)
    if host_ceiling is not None and host_ceiling.exists():
        tp.host_xrt_per_vcpu = float(json.loads(host_ceiling.read_text())["long_file"]["xrt_per_core"]["median"])
        tp.host_source = f"{host_ceiling.name}: the worker's host path with a zero-cost model, long files"
    return tp


def memory_cap(gpu: dict[str, Any], shape: dict[str, Any]) -> float:
    """Largest batch (windows) that fits the GPU's memory, by the rule in throughput.json's
    `estimate_rule`."""
    usable = 0.9 * gpu["memory_gb"] - 1.0 - shape["weights_gb"]
    per_window = shape["text_layers"] * 2 * 1500 * shape["width"] * 2 / 1e9 + 0.04
    return max(1.0, usable / per_window)


def estimate_curve(measured: Curve, gpu_name: str, gpus: dict[str, Any], shape: dict[str, Any]) -> Curve:
    ref, gpu = gpus[measured.gpu], gpus[gpu_name]
    bw = ref["memory_bandwidth_gbs"] / gpu["memory_bandwidth_gbs"]
    tf = ref["fp16_tensor_tflops_dense"] / gpu["fp16_tensor_tflops_dense"]
    cap = min(measured.max_batch, memory_cap(gpu, shape))
    batches = [b for b, _ in measured.points if b <= cap]
    if cap not in batches:
        batches.append(math.floor(cap))
    pts: list[tuple[float, float]] = []
    for b in batches:
        c = min(1.0, max(0.0, math.log2(b) / 7))
        x = round(measured.xrt(b) / ((1 - c) * bw + c * tf), 1)
        pts.append((b, max(x, pts[-1][1]) if pts else x))  # a larger batch is never slower
    return Curve(
        gpu_name,
        measured.model,
        measured.engine,
        tuple(pts),
        True,
        f"estimated from the {measured.gpu} curve by the scaling rule",
        f"scaled from {measured.gpu}/{measured.model}/{measured.engine}; specs in bench/prices.json gpus",
    )


def refresh_estimates(path: Path = THROUGHPUT, prices_path: Path = PRICES) -> None:
    """Rewrite the estimated curves of throughput.json from its measured H100 curves."""
    data = json.loads(path.read_text())
    gpus = json.loads(prices_path.read_text())["gpus"]
    measured = [c for c in data["curves"] if not c["estimated"]]
    out = list(measured)
    have = {(c["gpu"], c["model"], c["engine"]) for c in measured}
    for c in measured:
        if c["gpu"] != data["estimate_from"]:
            continue
        curve = Curve(c["gpu"], c["model"], c["engine"], _points(c["points"]), False)
        for gpu_name in data["estimate_for"]:
            if (gpu_name, c["model"], c["engine"]) in have:
                continue  # a measurement exists: no estimate
            est = estimate_curve(curve, gpu_name, gpus, data["model_shapes"][c["model"]])
            out.append(
                {
                    "gpu": est.gpu,
                    "model": est.model,
                    "engine": est.engine,
                    "estimated": True,
                    "rule": "estimate_rule",
                    "points": {str(int(b)): x for b, x in est.points},
                    "label": est.label,
                    "source": est.source,
                }
            )
    data["curves"] = out
    path.write_text(json.dumps(data, indent=2) + "\n")


def measure_host(seconds: float = 120.0, repeats: int = 3) -> dict[str, Any]:
    """x realtime of the worker's CPU-side steps on one thread of this machine: PyAV mp3 decode and
    resample to 16 kHz mono (as gpu_container/worker/media.py), 128-bin log-mel (faster-whisper's
    FeatureExtractor, large-v3 shapes), Silero VAD (faster-whisper's). Needs the dev venv."""
    import io
    import time

    import av
    import numpy as np
    from faster_whisper.feature_extractor import FeatureExtractor
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sr = 44100
    rng = np.random.default_rng(0)
    t = np.arange(int(sr * seconds)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)  # on/off, like speech and pauses
    x = (tone + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp3") as out:
        stream = out.add_stream("mp3", rate=sr)
        stream.bit_rate = 128000
        for i in range(0, len(x), 1152):
            frame = av.AudioFrame.from_ndarray(x[None, i : i + 1152], format="flt", layout="mono")
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = buf.getvalue()

    def decode() -> Any:
        chunks = []
        with av.open(io.BytesIO(data), mode="r") as container:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):
                for o in resampler.resample(frame):
                    chunks.append(o.to_ndarray().reshape(-1))
        return np.concatenate(chunks)

    audio = decode()
    mel = FeatureExtractor(feature_size=128)

    def best(f: Any) -> float:
        f()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            f()
            times.append(time.perf_counter() - started)
        return seconds / sorted(times)[len(times) // 2]

    steps = {
        "decode_mp3_resample": best(decode),
        "log_mel_128": best(lambda: mel(audio)),
        "silero_vad": best(lambda: get_speech_timestamps(audio, VadOptions())),
    }
    combined = 1 / sum(1 / v for v in steps.values())
    return {
        "xrt_per_vcpu": round(combined, 1),
        "steps_xrt_per_vcpu": {k: round(v, 1) for k, v in steps.items()},
        "measured_on": hardware(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command(),
    }


# ---------------------------------------------------------------------------------------------
# Prices, instances, file mix, cold start


@dataclass(frozen=True)
class Instance:
    name: str
    gpu: str
    gpus: int
    vcpus: int
    on_demand: float
    spot: float
    extras_per_hour: float  # public IPv4 + root EBS, per instance

    def per_gpu_hour(self, spot: bool) -> float:
        return ((self.spot if spot else self.on_demand) + self.extras_per_hour) / self.gpus

    @property
    def vcpus_per_gpu(self) -> float:
        return self.vcpus / self.gpus


def load_prices(path: Path = PRICES) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def instances(prices: dict[str, Any]) -> dict[str, Instance]:
    extras = prices["per_instance_extras"]
    ebs = extras["root_ebs_gb"]
    per_hour = extras["public_ipv4_per_hour"]["value"] + ebs["value"] * ebs["per_gb_month"] / (DAYS_PER_MONTH * 24)
    return {
        name: Instance(
            name, i["gpu"], i["gpus"], i["vcpus"], i["on_demand_per_hour"], i["spot"]["typical_per_hour"], per_hour
        )
        for name, i in prices["instances"].items()
    }


def host_cap(inst: Instance, tp: Throughput) -> float:
    """x realtime the instance's CPUs can feed one GPU: the host path's x realtime per vCPU
    (`Throughput.host_source`), times the vCPUs less those that drive the GPU and the worker loop."""
    return max(1.0, inst.vcpus_per_gpu - tp.host_reserved_vcpus) * tp.host_xrt_per_vcpu


def effective_xrt(inst: Instance, curve: Curve, tp: Throughput, windows: float) -> float:
    return min(curve.xrt(windows), host_cap(inst, tp))


@dataclass(frozen=True)
class FileMix:
    """File lengths: lognormal, median `median_s`, log-sd `sigma`, clipped to [min_s, max_s].
    Default: median 5 min, sigma 1.2 (mean ~10 min; 5 % of files over 36 min), 5 s to 4 h (the
    deployment's max_duration_minutes)."""

    median_s: float = 300.0
    sigma: float = 1.2
    min_s: float = 5.0
    max_s: float = 4 * 3600.0

    def sample(self, rng: random.Random) -> float:
        return min(self.max_s, max(self.min_s, rng.lognormvariate(math.log(self.median_s), self.sigma)))

    def quantiles(self, n: int = 2000) -> list[float]:
        """n deterministic, equally likely file lengths (midpoint quantiles)."""
        return list(_quantiles(self, n))

    @property
    def mean_s(self) -> float:
        return _mix_means(self)[0]

    @property
    def mean_windows(self) -> float:
        return _mix_means(self)[1]

    @property
    def padding(self) -> float:
        """Window-seconds computed per audio second."""
        return self.mean_windows * WINDOW_S / self.mean_s


@cache
def _mix_means(mix: FileMix) -> tuple[float, float]:
    q = _quantiles(mix, 2000)
    return sum(q) / len(q), sum(windows(a) for a in q) / len(q)


@cache
def _quantiles(mix: FileMix, n: int) -> tuple[float, ...]:
    nd = NormalDist(math.log(mix.median_s), mix.sigma)
    return tuple(min(mix.max_s, max(mix.min_s, math.exp(nd.inv_cdf((i + 0.5) / n)))) for i in range(n))


def windows(audio_s: float) -> int:
    return max(1, math.ceil(audio_s / WINDOW_S - 1e-9))


@dataclass(frozen=True)
class Triangular:
    low: float
    mode: float
    high: float

    @property
    def mean(self) -> float:
        return (self.low + self.mode + self.high) / 3

    def sample(self, rng: random.Random) -> float:
        return rng.triangular(self.low, self.high, self.mode)


@dataclass(frozen=True)
class ColdStart:
    scheduling: Triangular  # not billed
    boot: Triangular
    pull_mb_per_s: Triangular
    image_gb: float
    model_load: Triangular
    scale_in_lag_s: float
    billing_minimum_s: float

    @property
    def mean_pull_s(self) -> float:
        # E[size / rate] for a triangular rate, by midpoint quadrature
        n = 200
        q = [
            self.pull_mb_per_s.low + (self.pull_mb_per_s.high - self.pull_mb_per_s.low) * (i + 0.5) / n
            for i in range(n)
        ]
        lo, mo, hi = self.pull_mb_per_s.low, self.pull_mb_per_s.mode, self.pull_mb_per_s.high
        pdf = [2 * (x - lo) / ((hi - lo) * (mo - lo)) if x < mo else 2 * (hi - x) / ((hi - lo) * (hi - mo)) for x in q]
        total = sum(pdf)
        return sum(p * self.image_gb * 1000 / x for p, x in zip(pdf, q, strict=True)) / total

    @property
    def mean_billed_s(self) -> float:
        return self.boot.mean + self.mean_pull_s + self.model_load.mean

    def sample_billed(self, rng: random.Random) -> float:
        return (
            self.boot.sample(rng) + self.image_gb * 1000 / self.pull_mb_per_s.sample(rng) + self.model_load.sample(rng)
        )


def cold_start(prices: dict[str, Any], model: str = DEFAULT_MODEL) -> ColdStart:
    c = prices["cold_start"]

    def tri(d: dict[str, float]) -> Triangular:
        return Triangular(d["low"], d["mode"], d["high"])

    return ColdStart(
        scheduling=tri(c["batch_scheduling_s"]),
        boot=tri(c["boot_and_ecs_agent_s"]),
        pull_mb_per_s=tri(c["image_pull"]["mb_per_s"]),
        image_gb=c["image_pull"]["image_gb"],
        model_load=tri(c["model_load_s"][model]),
        scale_in_lag_s=c["scale_in_lag_s"]["value"],
        billing_minimum_s=c["billing_minimum_s"]["value"],
    )


@dataclass(frozen=True)
class WriteCost:
    """DynamoDB write request units (WRU) of one job, from the steps bench/writes.py metered:
    `fixed` (create, enqueue, claim and its counter, commit and its slot release), `per_beat`
    for each heartbeat while a worker holds the job, and `per_move` more for the beats that move
    its sweep index entry (about one a bucket of half a lease; none where every beat moves it:
    that is in `per_beat`)."""

    design: str
    projections: str
    fixed: float
    per_beat: float
    per_move: float
    heartbeat_s: float
    bucket_s: float | None

    def per_job(self, held_s: float) -> float:
        moves = held_s / self.bucket_s if self.bucket_s else 0.0
        return self.fixed + held_s / self.heartbeat_s * self.per_beat + moves * self.per_move

    @property
    def per_running_hour(self) -> float:
        """WRU per hour a job is held (what a running job costs while it runs)."""
        return self.per_job(3600.0) - self.fixed

    @classmethod
    def from_metered(cls, design: str, projections: str, row: dict[str, Any]) -> WriteCost:
        life, beats = row["life"], {int(k): n for k, n in row["heartbeat_wru"].items()}
        per_beat = max(beats, key=lambda w: beats[w])  # the usual beat
        moving = {w: n for w, n in beats.items() if w != per_beat}
        per_move = sum((w - per_beat) * n for w, n in moving.items()) / max(1, sum(moving.values()))
        beat_total = sum(w * n for w, n in beats.items())
        return cls(
            design=design,
            projections=projections,
            fixed=row["wru_per_job"] - beat_total,
            per_beat=per_beat,
            per_move=per_move,
            heartbeat_s=life["heartbeat_s"],
            bucket_s=life["lease_s"] / 2 if moving else None,
        )


@cache
def load_write_costs(path: Path = WRITES) -> dict[tuple[str, str], WriteCost]:
    """(design, projections) -> WriteCost, from bench/results/writes.json."""
    data = json.loads(path.read_text())
    return {
        (design, proj): WriteCost.from_metered(design, proj, row)
        for design, entry in data["designs"].items()
        for proj, row in entry["projections"].items()
    }


def write_cost(design: tuple[str, str] = WRITE_DESIGN) -> WriteCost:
    return load_write_costs()[design]


def per_job_usd(prices: dict[str, Any], held_s: float = REFERENCE_HELD_S, writes: WriteCost | None = None) -> float:
    """The serverless side of one job held `held_s` seconds by its worker: the per-job items of
    prices.json, DynamoDB's write units counted by `writes` (this tree's, as metered)."""
    writes = writes or write_cost()
    total = 0.0
    for name, item in prices["per_job"]["items"].items():
        count = writes.per_job(held_s) if name == WRITES_ITEM else item["count"]
        total += count * item["unit_usd"]
    return total


def fixed_monthly_usd(prices: dict[str, Any]) -> float:
    return sum(i["usd"] for i in prices["fixed_monthly"]["items"].values())


@cache
def _billed_factor(minimum_s: float, mix: FileMix) -> float:
    """Billed seconds per audio second under a per-request minimum."""
    q = mix.quantiles()
    return sum(max(a, minimum_s) for a in q) / sum(q)


def managed_per_audio_hour(api: dict[str, Any], audio_hours_per_month: float, mix: FileMix) -> float:
    """Effective price per audio hour at a monthly volume: volume tiers and per-request minimums."""
    billed_factor = _billed_factor(float(api.get("minimum_seconds", 0)), mix)
    tiers = api.get("tiers_per_minute")
    if not tiers or audio_hours_per_month <= 0:
        return float(api["per_audio_hour"]) * billed_factor
    minutes = audio_hours_per_month * 60 * billed_factor
    left, cost = minutes, 0.0
    for size, per_min in tiers:
        used = left if size is None else min(left, size)
        cost += used * per_min
        left -= used
        if left <= 0:
            break
    return cost / audio_hours_per_month


# ---------------------------------------------------------------------------------------------
# The model


def steady_cost(inst: Instance, curve: Curve, tp: Throughput, mix: FileMix, spot: bool) -> dict[str, float]:
    """A worker with a full batch: price per GPU-hour ÷ x realtime, times the padding."""
    xrt = effective_xrt(inst, curve, tp, curve.max_batch)
    return {
        "batch": curve.max_batch,
        "xrt_gpu": round(curve.xrt(curve.max_batch), 1),
        "xrt_host_cap": round(host_cap(inst, tp), 1),
        "xrt_effective": round(xrt, 1),
        "per_gpu_hour": round(inst.per_gpu_hour(spot), 4),
        "cost_per_audio_hour": inst.per_gpu_hour(spot) / xrt * mix.padding,
    }


@dataclass(frozen=True)
class LoadInputs:
    jobs_per_day: float
    jobs_per_worker: int = 4
    idle_exit_s: float = 120.0
    spot: bool = True
    interruption_rate_per_hour: float = 0.01


@cache
def _job_stats(curve: Curve, cap: float, mix: FileMix) -> tuple[float, float, float]:
    """Mean audio seconds, mean window-seconds, and mean GPU seconds of a job alone on a worker
    (its own windows make the batch)."""
    q = mix.quantiles(1000)
    mean_audio = sum(q) / len(q)
    mean_work = sum(windows(a) for a in q) * WINDOW_S / len(q)
    solo_s = sum(windows(a) * WINDOW_S / min(curve.xrt(windows(a)), cap) for a in q) / len(q)
    return mean_audio, mean_work, solo_s


def load_cost(
    inst: Instance,
    curve: Curve,
    tp: Throughput,
    mix: FileMix,
    cold: ColdStart,
    prices: dict[str, Any],
    li: LoadInputs,
) -> dict[str, Any]:
    """Cost per audio hour at a Poisson load, cold starts and idle tails included (see the module
    docstring for the two regimes)."""
    lam = li.jobs_per_day / 86400.0
    mean_audio, mean_work, solo_s = _job_stats(curve, host_cap(inst, tp), mix)
    full_xrt = effective_xrt(inst, curve, tp, li.jobs_per_worker * mix.mean_windows)
    full_s = min(solo_s, mean_work / full_xrt)
    cold_s = cold.mean_billed_s
    rho = lam * solo_s
    # how long a worker holds a job (its heartbeats' DynamoDB writes): alone, its own GPU time;
    # in a busy fleet, `jobs_per_worker` share the GPU, so each is held that many times longer
    held_s = solo_s if rho < 1 else li.jobs_per_worker * full_s
    if rho < 1:
        regime = "sessions"
        gpu_s = solo_s
        p_no_overlap = math.exp(-lam * gpu_s)
        idle_s = p_no_overlap * (1 - math.exp(-lam * li.idle_exit_s)) / lam
        p_new_session = p_no_overlap * math.exp(-lam * li.idle_exit_s)
        tail_s = p_new_session * (cold.scale_in_lag_s + cold_s)
        workers = 1.0
    else:
        regime = "fleet"
        gpu_s = full_s
        idle_s = 0.0
        p_new_session = 0.0
        tail_s = 0.0
        workers = lam * gpu_s
    # Spot: each interruption costs a replacement cold start and, on average, half the held work
    interrupt_s = 0.0
    if li.spot and li.interruption_rate_per_hour > 0:
        per_hour = li.interruption_rate_per_hour / 3600
        interrupt_s = per_hour * (gpu_s + idle_s + tail_s) * (cold_s + gpu_s * min(li.jobs_per_worker, 1 + rho) / 2)
    billed_s = gpu_s + idle_s + tail_s + interrupt_s
    # a lone worker holds a whole instance (on a multi-GPU instance the other GPUs idle); a busy
    # fleet packs one worker per GPU
    price = inst.per_gpu_hour(li.spot) * (inst.gpus if regime == "sessions" else 1)
    compute = billed_s / 3600 * price / (mean_audio / 3600)
    audio_h_month = li.jobs_per_day * DAYS_PER_MONTH * mean_audio / 3600
    per_job = per_job_usd(prices, held_s) / (mean_audio / 3600)
    fixed = fixed_monthly_usd(prices) / audio_h_month
    return {
        "jobs_per_day": li.jobs_per_day,
        "audio_hours_per_day": round(li.jobs_per_day * mean_audio / 3600, 2),
        "regime": regime,
        "busy_workers": round(workers, 2),
        "gpu_seconds_per_job": round(gpu_s, 2),
        "billed_seconds_per_job": round(billed_s, 2),
        "scale_from_zero_per_job": round(p_new_session, 4),
        "held_seconds_per_job": round(held_s, 1),
        "dynamodb_wru_per_job": round(write_cost().per_job(held_s), 1),
        "overhead_share": round((billed_s - gpu_s) / billed_s, 4),
        "cost_per_audio_hour": {
            "compute": compute,
            "compute_steady": full_s / 3600 * inst.per_gpu_hour(li.spot) / (mean_audio / 3600),
            "per_job_services": per_job,
            "fixed_monthly": fixed,
            "all_in": compute + per_job + fixed,
        },
    }


def break_even(
    ours: dict[float, float], api: dict[str, Any], mix: FileMix
) -> tuple[float | None, bool, dict[float, float]]:
    """Lowest volume (jobs/day, on the grid of `ours`) from which our all-in cost is at most the API's
    price at the same volume; and whether we stay cheaper at every larger volume of the grid."""
    mean_audio = mix.mean_s
    theirs = {v: managed_per_audio_hour(api, v * DAYS_PER_MONTH * mean_audio / 3600, mix) for v in ours}
    cheaper = [v for v in sorted(ours) if ours[v] <= theirs[v]]
    if not cheaper:
        return None, False, theirs
    first = cheaper[0]
    stays = all(ours[v] <= theirs[v] for v in ours if v >= first)
    return first, stays, theirs


def volume_grid() -> list[float]:
    return [round(10 ** (k / 20), 3) for k in range(-20, 141)]  # 0.1 .. 10^7 jobs/day, 20 per decade


# ---------------------------------------------------------------------------------------------
# The run


def run(
    prices: dict[str, Any] | None = None,
    tp: Throughput | None = None,
    mix: FileMix | None = None,
    jobs_per_worker: int = 4,
    idle_exit_s: float = 120.0,
) -> dict[str, Any]:
    prices = prices or load_prices()
    tp = tp or load_throughput()
    mix = mix or FileMix()
    insts = instances(prices)
    rate = prices["spot_interruption"]["rate_per_instance_hour"]
    steady = []
    for inst in insts.values():
        for model in MODELS:
            for engine in ENGINES:
                curve = tp.curve(inst.gpu, model, engine)
                row: dict[str, Any] = {
                    "instance": inst.name,
                    "gpu": inst.gpu,
                    "model": model,
                    "engine": engine,
                    "estimated": curve.estimated,
                }
                for spot in (True, False):
                    s = steady_cost(inst, curve, tp, mix, spot)
                    row.update({k: s[k] for k in ("batch", "xrt_gpu", "xrt_host_cap", "xrt_effective")})
                    row["spot" if spot else "on_demand"] = {
                        "per_gpu_hour": s["per_gpu_hour"],
                        "cost_per_audio_hour": round(s["cost_per_audio_hour"], 6),
                    }
                steady.append(row)
    by_load = []
    cold = {m: cold_start(prices, m) for m in MODELS}
    for inst in insts.values():
        for engine in ENGINES:
            curve = tp.curve(inst.gpu, DEFAULT_MODEL, engine)
            for spot in (True, False):
                for n in LOADS:
                    li = LoadInputs(n, jobs_per_worker, idle_exit_s, spot, rate)
                    r = load_cost(inst, curve, tp, mix, cold[DEFAULT_MODEL], prices, li)
                    r["cost_per_audio_hour"] = {k: round(v, 6) for k, v in r["cost_per_audio_hour"].items()}
                    by_load.append({"instance": inst.name, "model": DEFAULT_MODEL, "engine": engine, "spot": spot, **r})
    breaks = []
    grid = volume_grid()
    for inst in insts.values():
        for engine in ENGINES:
            curve = tp.curve(inst.gpu, DEFAULT_MODEL, engine)
            for spot in (True, False):
                ours = {
                    v: load_cost(
                        inst,
                        curve,
                        tp,
                        mix,
                        cold[DEFAULT_MODEL],
                        prices,
                        LoadInputs(v, jobs_per_worker, idle_exit_s, spot, rate),
                    )["cost_per_audio_hour"]["all_in"]
                    for v in grid
                }
                steady_ours = steady_cost(inst, curve, tp, mix, spot)["cost_per_audio_hour"]
                for api_name, api in prices["managed_apis"].items():
                    first, stays, theirs = break_even(ours, api, mix)
                    breaks.append(
                        {
                            "api": api_name,
                            "api_per_audio_hour_list": api["per_audio_hour"],
                            "instance": inst.name,
                            "model": DEFAULT_MODEL,
                            "engine": engine,
                            "spot": spot,
                            "break_even_jobs_per_day": first,
                            "cheaper_at_all_larger_volumes": stays,
                            "ratio_at_steady_load": round(api["per_audio_hour"] / steady_ours, 1),
                            "ratio_all_in_at_1m_jobs_per_day": round(
                                theirs[min(grid, key=lambda v: abs(v - 1e6))]
                                / ours[min(grid, key=lambda v: abs(v - 1e6))],
                                1,
                            ),
                        }
                    )
    c = cold[DEFAULT_MODEL]
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command(),
        "machine": hardware(),
        "inputs": {
            "prices": {"file": "bench/prices.json", "recorded": prices["recorded"], "as_of": "see each entry"},
            "throughput": {
                "file": "bench/throughput.json",
                "replaced_by_measurements": tp.replaced,
                "host_xrt_per_vcpu": tp.host_xrt_per_vcpu,
                "host_source": tp.host_source,
                "host_reserved_vcpus": tp.host_reserved_vcpus,
            },
            "file_mix": {
                **asdict(mix),
                "mean_s": round(mix.mean_s, 1),
                "mean_windows": round(mix.mean_windows, 2),
                "padding": round(mix.padding, 4),
            },
            "jobs_per_worker": jobs_per_worker,
            "idle_exit_s": idle_exit_s,
            "spot_interruption_rate_per_hour": rate,
            "cold_start_mean_s": {
                "scheduling_not_billed": round(c.scheduling.mean, 1),
                "boot_and_ecs_agent": round(c.boot.mean, 1),
                "image_pull": round(c.mean_pull_s, 1),
                "model_load": round(c.model_load.mean, 1),
                "billed_total": round(c.mean_billed_s, 1),
                "scale_in_lag": c.scale_in_lag_s,
            },
            "per_job_services_usd": round(per_job_usd(prices), 8),
            "per_job_services_held_s": REFERENCE_HELD_S,
            "dynamodb_writes": _writes_inputs(),
            "fixed_monthly_usd": round(fixed_monthly_usd(prices), 2),
            "managed_apis": {
                k: {"per_audio_hour": v["per_audio_hour"], "as_of": v["as_of"], "source": v["source"]}
                for k, v in prices["managed_apis"].items()
            },
        },
        "steady_state": steady,
        "by_load": by_load,
        "break_even": breaks,
    }


def _writes_inputs() -> dict[str, Any]:
    """What the write model says, per design and projection: the recorded steps' shape."""
    out: dict[str, Any] = {"file": "bench/results/writes.json", "used": "/".join(WRITE_DESIGN)}
    for (design, proj), w in load_write_costs().items():
        out[f"{design}/{proj}"] = {
            "fixed": w.fixed,
            "per_beat": w.per_beat,
            "per_move": w.per_move,
            "heartbeat_s": w.heartbeat_s,
            "bucket_s": w.bucket_s,
            "per_job_held_10_min": round(w.per_job(REFERENCE_HELD_S), 1),
            "per_running_job_hour": round(w.per_running_hour, 1),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refresh-estimates", action="store_true", help="recompute estimated curves, then exit")
    parser.add_argument(
        "--measure-host", action="store_true", help="measure the CPU-side pipeline, record it in throughput.json"
    )
    parser.add_argument("--jobs-per-worker", type=int, default=4)
    parser.add_argument("--idle-exit", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "cost.json")
    args = parser.parse_args(argv)
    if args.refresh_estimates:
        refresh_estimates()
        print(f"estimated curves rewritten in {THROUGHPUT.relative_to(ROOT)}")
        return
    if args.measure_host:
        data = json.loads(THROUGHPUT.read_text())
        data["host_pipeline"].update(measure_host())
        THROUGHPUT.write_text(json.dumps(data, indent=2) + "\n")
        print(json.dumps(data["host_pipeline"], indent=2))
        return
    result = run(jobs_per_worker=args.jobs_per_worker, idle_exit_s=args.idle_exit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    from bench.report import cost_section

    print(cost_section(result))
    print(f"recorded in {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
