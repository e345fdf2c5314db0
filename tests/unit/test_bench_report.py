"""bench/RESULTS.md from the recorded results, and the provenance every result carries."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench import provenance, report


def test_report_writes_every_recorded_section(tmp_path: Path) -> None:
    """RESULTS.md comes from whatever result files exist; each section renders."""
    out = tmp_path / "RESULTS.md"

    report.main(["--out", str(out)])

    text = out.read_text()
    for section in report.SECTIONS:
        if (report.RESULTS / section.results_file).exists():
            assert f"<!-- section: {section.name} " in text


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        (str(provenance.ROOT / "bench" / "cost.py"), "python -m bench.cost --quick"),  # what `python -m` sets
        (str(provenance.ROOT / "scripts" / "soak.py"), "python -m scripts.soak --quick"),
        ("/usr/bin/pytest", "python /usr/bin/pytest --quick"),  # not a module of this repository
    ],
)
def test_a_result_records_the_command_as_it_runs(monkeypatch: pytest.MonkeyPatch, argv0: str, expected: str) -> None:
    monkeypatch.setattr(sys, "argv", [argv0, "--quick"])

    assert provenance.command() == expected


def test_a_result_records_the_arguments_it_was_given() -> None:
    assert provenance.command(["--jobs", "2"]).endswith(" --jobs 2")


def test_the_machine_is_read_without_importing_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """hardware() is in every record: importing torch for the GPU's name cost seconds a call."""
    monkeypatch.delitem(sys.modules, "torch", raising=False)

    machine = provenance.hardware()

    assert "torch" not in sys.modules
    assert machine["cores"] >= 1 and machine["cpu"] and machine["python"] and machine["platform"]
