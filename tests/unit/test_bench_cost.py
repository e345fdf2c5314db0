"""The cost model (bench/cost.py) on the recorded price and throughput tables: pure arithmetic, no I/O
beyond reading the two JSON files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import cost
from bench.cost import Curve, FileMix, LoadInputs


@pytest.fixture(scope="module")
def prices() -> dict:
    return cost.load_prices()


@pytest.fixture(scope="module")
def tp() -> cost.Throughput:
    return cost.load_throughput(measured=[])


def _load(prices: dict, tp: cost.Throughput, instance: str, jobs_per_day: float, **kw: object) -> dict:
    inst = cost.instances(prices)[instance]
    curve = tp.curve(inst.gpu, "large-v3-turbo", "ctranslate2")
    li = LoadInputs(jobs_per_day, **kw)  # type: ignore[arg-type]
    return cost.load_cost(inst, curve, tp, FileMix(), cost.cold_start(prices), prices, li)


def test_every_price_and_curve_says_when_and_where_it_comes_from(prices: dict) -> None:
    for name, inst in prices["instances"].items():
        assert inst["as_of"] and inst["source"].startswith("https://"), name
        assert 0 < inst["spot"]["typical_per_hour"] < inst["on_demand_per_hour"], name
    for name, api in prices["managed_apis"].items():
        assert api["as_of"] and api["source"].startswith("https://"), name
    data = json.loads(cost.THROUGHPUT.read_text())
    measured = [c for c in data["curves"] if not c["estimated"]]
    assert {c["gpu"] for c in measured} == {"H100"}
    assert all("random weights with real model dimensions" in c["label"] for c in measured)
    estimated = [c for c in data["curves"] if c["estimated"]]
    assert {c["gpu"] for c in estimated} == {"T4", "A10G", "L4", "L40S"}
    assert all(c["rule"] == "estimate_rule" for c in estimated) and data["estimate_rule"]


def test_curve_interpolates_and_saturates() -> None:
    c = Curve("X", "m", "e", ((1, 100.0), (32, 1000.0), (64, 1200.0)), estimated=True)
    assert c.xrt(0) == 0
    assert c.xrt(1) == 100
    assert 100 < c.xrt(8) < 1000
    assert c.xrt(64) == c.xrt(500) == 1200  # flat past the largest batch
    xs = [c.xrt(b) for b in range(1, 80)]
    assert xs == sorted(xs)


def test_estimated_gpus_are_slower_than_the_measured_h100(tp: cost.Throughput) -> None:
    for engine in ("ctranslate2", "pytorch"):
        h100 = tp.curve("H100", "large-v3-turbo", engine)
        for gpu in ("T4", "A10G", "L4", "L40S"):
            est = tp.curve(gpu, "large-v3-turbo", engine)
            assert est.estimated
            assert est.peak < h100.peak
    # large-v3's kv cache does not fit 128 windows on a 16 GB T4
    assert tp.curve("T4", "large-v3", "pytorch").max_batch < 64


def test_a_measured_results_file_replaces_the_estimate(tmp_path: Path) -> None:
    measured = tmp_path / "throughput-L4.json"
    measured.write_text(
        json.dumps(
            {
                "gpu": "L4",
                "when": "2027-01-01",
                "rows": [
                    {"shape": "large-v3-turbo", "batch": 1, "x_realtime": 50.0},
                    {"shape": "large-v3-turbo", "batch": 32, "x_realtime": 500.0},
                ],
            }
        )
    )
    tp = cost.load_throughput(measured=[measured])
    curve = tp.curve("L4", "large-v3-turbo", "pytorch")
    assert not curve.estimated and curve.xrt(32) == 500.0
    assert tp.curve("L4", "large-v3-turbo", "ctranslate2").estimated  # only what was measured is replaced
    assert tp.replaced == ["L4/large-v3-turbo/pytorch <- throughput-L4.json"]


def test_cost_per_audio_hour_is_price_over_throughput(prices: dict, tp: cost.Throughput) -> None:
    inst = cost.instances(prices)["g4dn.xlarge"]
    curve = tp.curve("T4", "large-v3-turbo", "ctranslate2")
    s = cost.steady_cost(inst, curve, tp, FileMix(), spot=True)
    assert s["cost_per_audio_hour"] == pytest.approx(
        inst.per_gpu_hour(True) / s["xrt_effective"] * FileMix().padding, rel=1e-3
    )
    od = cost.steady_cost(inst, curve, tp, FileMix(), spot=False)
    assert od["cost_per_audio_hour"] > s["cost_per_audio_hour"]


def test_cost_falls_as_utilisation_rises(prices: dict, tp: cost.Throughput) -> None:
    inst = cost.instances(prices)["g6.xlarge"]
    curve = tp.curve("L4", "large-v3-turbo", "ctranslate2")
    # a fuller batch: higher throughput on the same GPU-hour
    per_batch = [inst.per_gpu_hour(True) / cost.effective_xrt(inst, curve, tp, b) for b in (1, 4, 16, 64)]
    assert per_batch == sorted(per_batch, reverse=True)
    # more load: the cold starts and idle tails are shared by more audio
    by_load = [_load(prices, tp, "g6.xlarge", n)["cost_per_audio_hour"]["compute"] for n in cost.LOADS]
    assert by_load == sorted(by_load, reverse=True)
    assert by_load[0] > 10 * by_load[-1]


def test_cold_start_amortisation_dominates_at_ten_jobs_a_day(prices: dict, tp: cost.Throughput) -> None:
    low = _load(prices, tp, "g4dn.xlarge", 10)
    assert low["regime"] == "sessions"
    assert low["scale_from_zero_per_job"] > 0.95  # nearly every job boots an instance
    assert low["overhead_share"] > 0.9
    c = low["cost_per_audio_hour"]
    assert c["compute"] > 20 * c["compute_steady"]
    high = _load(prices, tp, "g4dn.xlarge", 1_000_000)
    assert high["regime"] == "fleet" and high["overhead_share"] < 0.05


def test_a_shorter_idle_exit_is_cheaper_when_jobs_are_rare(prices: dict, tp: cost.Throughput) -> None:
    short = _load(prices, tp, "g4dn.xlarge", 10, idle_exit_s=30)
    long = _load(prices, tp, "g4dn.xlarge", 10, idle_exit_s=600)
    assert short["cost_per_audio_hour"]["compute"] < long["cost_per_audio_hour"]["compute"]


def test_transcribe_volume_tiers_lower_its_price(prices: dict) -> None:
    api = prices["managed_apis"]["amazon-transcribe"]
    mix = FileMix(min_s=60)  # no file under Transcribe's 15 s minimum
    assert cost.managed_per_audio_hour(api, 100, mix) == pytest.approx(1.44)
    assert cost.managed_per_audio_hour(api, 1e6, mix) < 0.6


def test_break_even_is_the_first_volume_we_are_cheaper(prices: dict) -> None:
    api = {"per_audio_hour": 0.04}
    ours = {1.0: 1.0, 10.0: 0.1, 100.0: 0.01, 1000.0: 0.005}
    first, stays, _ = cost.break_even(ours, api, FileMix())
    assert first == 100.0 and stays
    never, _, _ = cost.break_even({1.0: 1.0}, api, FileMix())
    assert never is None


def test_file_mix_matches_its_documentation() -> None:
    mix = FileMix()
    q = mix.quantiles()
    assert min(q) >= 5 and max(q) <= 4 * 3600
    assert math.isclose(sorted(q)[len(q) // 2], 300, rel_tol=0.01)
    assert 9 * 60 < mix.mean_s < 11 * 60
    assert mix.padding > 1  # windows are padded to 30 s


def test_run_records_inputs_command_and_machine(prices: dict, tp: cost.Throughput) -> None:
    result = cost.run(prices, tp)
    assert {"when", "command", "machine", "inputs", "steady_state", "by_load", "break_even"} <= set(result)
    turbo_spot = [r for r in result["steady_state"] if r["model"] == "large-v3-turbo"]
    assert len(turbo_spot) == 2 * len(prices["instances"])
    transcribe = [b for b in result["break_even"] if b["api"] == "amazon-transcribe" and b["spot"]]
    assert all(b["break_even_jobs_per_day"] is not None for b in transcribe)


# ---- DynamoDB writes per job (issue 20): metered per step, grown with the held time ----------


def test_write_units_grow_with_the_time_a_worker_holds_the_job() -> None:
    """The model's WRU per job is the metered fixed steps plus a heartbeat every 5 s (and an
    index move about once a bucket): a job held 10 minutes is the metered one, to the unit."""
    data = json.loads(cost.WRITES.read_text())
    for (design, proj), w in cost.load_write_costs().items():
        metered = data["designs"][design]["projections"][proj]
        assert w.per_job(metered["life"]["held_s"]) == pytest.approx(metered["wru_per_job"], abs=1), (design, proj)
        assert w.per_job(1200) - w.per_job(600) == pytest.approx(w.per_running_hour / 6)


def test_heartbeats_that_keep_the_index_entry_cost_fewer_writes() -> None:
    """Before: 4 WRU a beat (the table, the owner index, and the sweep entry deleted and put
    again). After: 2 a beat on the declared table (the sweep index carries nothing a beat
    changes), 3 where the index carries every attribute, plus one move a bucket."""
    costs = cost.load_write_costs()
    before, after, after_all = costs[("before", "declared")], costs[("after", "declared")], costs[("after", "all")]
    assert (before.per_beat, before.per_move, before.bucket_s) == (4, 0, None)
    assert (after.per_beat, after.per_move, after.bucket_s) == (2, 2, 45)
    assert (after_all.per_beat, after_all.per_move) == (3, 1)
    assert after.per_running_hour < after_all.per_running_hour < before.per_running_hour
    assert after.per_running_hour == pytest.approx(720 * 2 + 80 * 2)


def test_the_serverless_cost_of_a_job_counts_its_heartbeat_writes(prices: dict, tp: cost.Throughput) -> None:
    item = prices["per_job"]["items"][cost.WRITES_ITEM]
    assert item["count"] is None  # no assumed count: the model counts them
    assert cost.per_job_usd(prices, 3600) - cost.per_job_usd(prices, 0) == pytest.approx(
        cost.write_cost().per_running_hour * item["unit_usd"]
    )
    busy = _load(prices, tp, "g4dn.xlarge", 1_000_000)
    assert busy["held_seconds_per_job"] > busy["gpu_seconds_per_job"]  # held by a worker with others
    assert busy["dynamodb_wru_per_job"] == pytest.approx(
        cost.write_cost().per_job(busy["held_seconds_per_job"]), abs=0.1
    )


def test_the_host_cap_reads_the_measured_host_ceiling_when_there_is_one(prices: dict, tmp_path: Path) -> None:
    """bench_host_ceiling.py's long-file figure (the worker's whole host path per core) replaces
    throughput.json's step sum, and an instance's cap is it times its vCPUs less the reserved."""
    ceiling = tmp_path / "host-ceiling.json"
    ceiling.write_text(json.dumps({"long_file": {"xrt_per_core": {"median": 77.0}}}))
    tp = cost.load_throughput(measured=[], host_ceiling=ceiling)
    without = cost.load_throughput(measured=[], host_ceiling=tmp_path / "absent.json")
    assert tp.host_xrt_per_vcpu == 77.0 and "host-ceiling.json" in tp.host_source
    assert without.host_xrt_per_vcpu == json.loads(cost.THROUGHPUT.read_text())["host_pipeline"]["xrt_per_vcpu"]
    inst = cost.instances(prices)["g4dn.xlarge"]  # 4 vCPUs, 1 GPU
    assert cost.host_cap(inst, tp) == pytest.approx((4 - tp.host_reserved_vcpus) * 77.0)
    curve = tp.curve("H100", "large-v3-turbo", "ctranslate2")
    assert cost.effective_xrt(cost.instances(prices)["g4dn.xlarge"], curve, tp, 64) <= cost.host_cap(inst, tp)
