"""The scale simulation (bench/simulate.py) on tiny simulated windows: properties of the model, not
timings."""

from __future__ import annotations

import pytest

from bench.cost import WINDOW_S
from bench.simulate import Job, Load, Params, Simulation, World


@pytest.fixture(scope="module")
def world() -> World:
    return World.load()


def run(world: World, load: Load, **kw: object) -> dict:
    return Simulation(Params(**kw), load, world).run()  # type: ignore[arg-type]


BUSY = Load(60_000, "poisson", window_s=1200, warmup_s=300)  # ~830 jobs in 20 simulated minutes


def test_every_job_completes_exactly_once_through_spot_interruptions(world: World) -> None:
    r = run(world, BUSY, max_vcpus=40, interruption_rate_per_hour=6.0)  # a reclaim every ~10 min per instance
    assert r["spot_interruptions"] > 5 and r["requeues"] > 0
    assert r["completed"] == r["jobs"] > 500
    assert r["completed_exactly_once"]
    assert r["max_receives"] >= 2  # given-back jobs were claimed again


def test_the_simulation_is_deterministic_for_a_seed(world: World) -> None:
    a = run(world, BUSY, max_vcpus=24, seed=7)
    b = run(world, BUSY, max_vcpus=24, seed=7)
    c = run(world, BUSY, max_vcpus=24, seed=8)
    for r in (a, b, c):
        r.pop("wall_s", None)
    assert a == b
    assert a["latency_s"] != c["latency_s"]


def test_more_workers_lower_p95_under_load(world: World) -> None:
    few = run(world, BUSY, max_vcpus=16, interruption_rate_per_hour=0)
    many = run(world, BUSY, max_vcpus=64, interruption_rate_per_hour=0)
    assert few["peak_workers"] == 4 and many["peak_workers"] > 4
    assert many["latency_s"]["p95"] < few["latency_s"]["p95"] / 2


def test_the_scaler_never_exceeds_the_quota(world: World) -> None:
    r = run(world, BUSY, max_vcpus=20, interruption_rate_per_hour=0)
    assert r["peak_workers"] == 5 and r["peak_vcpus"] == 20


def test_cold_starts_dominate_at_ten_jobs_a_day(world: World) -> None:
    r = run(world, Load(10, "poisson", window_s=5 * 86400), interruption_rate_per_hour=0)
    assert r["jobs"] > 20
    assert r["workers_started"] >= 0.9 * r["jobs"]  # nearly every job scales from zero
    assert r["busy_fraction"] < 0.1  # the billed time is mostly boot, pull, load and the idle tail
    assert r["latency_s"]["p50"] > 150  # and the latency is mostly the cold start


def test_cost_falls_as_utilisation_rises(world: World) -> None:
    quiet = run(world, Load(500, "poisson", window_s=2 * 86400), interruption_rate_per_hour=0)
    busy = run(world, BUSY, max_vcpus=40, interruption_rate_per_hour=0)
    assert busy["gpu_utilisation"] > quiet["gpu_utilisation"]
    assert busy["cost_per_audio_hour"]["whole_run"]["spot"] < quiet["cost_per_audio_hour"]["whole_run"]["spot"] / 5


def test_the_worker_throughput_follows_the_curve_and_rises_with_held_jobs(world: World) -> None:
    sim = Simulation(Params(instance="g6.xlarge"), BUSY, world)
    one = [Job(0.0, 4 * WINDOW_S)]
    four = [Job(0.0, 4 * WINDOW_S) for _ in range(4)]
    many = [Job(0.0, 4 * WINDOW_S) for _ in range(40)]
    assert sum(sim.allocate(one)) == pytest.approx(sim.curve.xrt(4))
    assert sum(sim.allocate(four)) == pytest.approx(sim.curve.xrt(16))
    assert sum(sim.allocate(one)) < sum(sim.allocate(four)) < sum(sim.allocate(many))
    # past the largest batch the windows are shared fairly and the total stays at the curve's peak
    rates = sim.allocate(many)
    assert sum(rates) == pytest.approx(sim.curve.xrt(sim.curve.max_batch))
    assert max(rates) == pytest.approx(min(rates))


def test_a_burst_drains_and_reports_its_drain_time(world: World) -> None:
    r = run(world, Load(24_000, "burst", burst_jobs=400), max_vcpus=40)
    assert r["completed"] == r["jobs"] == 400 and r["completed_exactly_once"]
    assert r["drain_s"] >= r["latency_s"]["max"] > 0


def test_an_overloaded_fleet_is_flagged_as_a_growing_queue(world: World) -> None:
    starved = run(world, Load(60_000, "poisson", window_s=2400, warmup_s=300), max_vcpus=8)
    ample = run(world, Load(60_000, "poisson", window_s=2400, warmup_s=300), max_vcpus=64)
    assert starved["latency_s"]["growing"]
    assert starved["latency_s"]["p95_last_third"] > starved["latency_s"]["p95_first_third"]
    assert not ample["latency_s"]["growing"]
