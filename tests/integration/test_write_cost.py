"""The write cost the cost model uses is this tree's: metering one job's life again on moto (the
real repository, an injected clock) gives the figures recorded in bench/results/writes.json for
the current design, step by step. A change to what a heartbeat, a claim or a commit writes fails
here until `python -m bench.writes --design after` records it again."""

from __future__ import annotations

import json

import pytest

from bench import cost
from bench.writes import Life, meter_job


@pytest.mark.parametrize("projections", ["declared", "all"])
def test_the_recorded_write_cost_is_what_this_tree_writes(projections: str) -> None:
    recorded = json.loads(cost.WRITES.read_text())["designs"][cost.WRITE_DESIGN[0]]["projections"][projections]
    life = Life(**{k: v for k, v in recorded["life"].items() if k != "beats"})
    metered = meter_job(life, projections)
    assert metered["wru_by_step"] == recorded["wru_by_step"]
    assert metered["heartbeat_wru"] == recorded["heartbeat_wru"]
    assert metered["index_writes_by_step"] == recorded["index_writes_by_step"]
