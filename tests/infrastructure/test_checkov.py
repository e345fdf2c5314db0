"""checkov on the synthesized template, offline: no finding is left unacknowledged, and every
acknowledgement (stacks/checkov.py, written into the resources' metadata) answers a finding
checkov really makes, on that resource, with its reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stacks.checkov import ACKNOWLEDGED
from tests.infrastructure.templates import ROOT

pytestmark = pytest.mark.slow
PIN = ROOT / "requirements-checkov.txt"


def checkov() -> str:
    """checkov has an environment of its own (requirements-checkov.txt says why)."""
    for found in (os.environ.get("CHECKOV"), str(ROOT / ".venv-checkov" / "bin" / "checkov"), shutil.which("checkov")):
        if found and Path(found).is_file():
            return found
    pytest.fail(f"checkov is not installed: see {PIN.name} (or set CHECKOV to its executable)")


def _findings(report: dict[str, Any], kind: str, file: str) -> set[tuple[str, str]]:
    """(check, logical id) of one template's failed or skipped checks."""
    return {
        (c["check_id"], c["resource"].split(".", 1)[1])
        for c in report["results"][kind]
        if c["file_path"].endswith(file)
    }


@pytest.fixture(scope="module")
def report(template_json: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One checkov run over the template as synthesized and the same without its acknowledgements."""
    folder = tmp_path_factory.mktemp("checkov")
    (folder / "stack.template.json").write_text(json.dumps(template_json))
    bare = json.loads(json.dumps(template_json))
    for resource in bare["Resources"].values():
        resource.get("Metadata", {}).pop("checkov", None)
    (folder / "bare.template.json").write_text(json.dumps(bare))
    exe = checkov()
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120, check=True)
    assert f"checkov=={version.stdout.strip()}" in PIN.read_text().splitlines(), "run the pinned checkov"
    out = subprocess.run(
        [exe, "-d", str(folder), "--framework", "cloudformation", "--skip-download", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert out.stdout.strip(), out.stderr[-3000:]
    found: dict[str, Any] = json.loads(out.stdout)
    return found


def test_checkov_finds_nothing_unacknowledged(report: dict[str, Any]) -> None:
    assert report["summary"]["parsing_errors"] == 0
    failed = _findings(report, "failed_checks", "stack.template.json")
    assert failed == set(), sorted(failed)
    assert report["summary"]["passed"] > 300  # it did check the template


def test_each_acknowledgement_answers_a_real_finding_with_its_reason(
    report: dict[str, Any], template_json: dict[str, Any]
) -> None:
    """What checkov skipped on the stack is exactly what it finds without the acknowledgements:
    no finding hidden, no acknowledgement left over from a finding that went away."""
    skipped = _findings(report, "skipped_checks", "stack.template.json")
    would_fail = _findings(report, "failed_checks", "bare.template.json")
    assert skipped == would_fail
    written = {
        (skip["id"], logical_id): skip["comment"]
        for logical_id, resource in template_json["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    }
    assert set(written) == skipped
    assert all(len(reason) > 60 for reason in written.values())
    assert {check for check, _ in written} == {a.check for a in ACKNOWLEDGED}
