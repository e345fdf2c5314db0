"""The pipeline benchmark's summary (bench/bench_pipeline.py), on made-up rounds: no stack runs."""

from __future__ import annotations

from typing import Any

from bench import bench_pipeline


def test_pipeline_summary_pairs_rounds_of_one_and_two_workers() -> None:
    def round_(workers: int, per_minute: float, claim: float) -> dict[str, Any]:
        job = dict.fromkeys(bench_pipeline.ISOLATED_FIGURES, 0.5)
        job.update(upload_to_claim_s=claim, late_claim=claim >= bench_pipeline.LATE_CLAIM_S)
        return {
            "workers": workers,
            "stack_start_s": 1.0,
            "cold": {"upload_to_claim_s": 2.0},
            "isolated": [job],
            "throughput": {"jobs_per_minute": per_minute, "claim_to_commit_jobs_per_minute": per_minute},
        }

    # rounds run 1, 2, 2, 1: each W=2 round is paired with the W=1 round beside it
    s = bench_pipeline.summarise_stack(
        [round_(1, 10, 0.05), round_(2, 30, 5.2), round_(2, 15, 0.04), round_(1, 20, 0.06)]
    )

    assert s["two_vs_one_worker_ratio"]["values"] == [3.0, 0.75]
    assert s["by_workers"]["1"]["jobs_per_minute"]["median"] == 15
    assert s["late_claims"] == 1 and not s["goal_met_every_job"] and s["goal_met_median"]
    assert s["upload_to_claim_p95_s"] == 5.2 and not s["goal_met_p95"]  # nearest rank of 4: the slowest
    assert (s["by_workers"]["2"]["late_claims"], s["by_workers"]["2"]["isolated_jobs"]) == (1, 2)
