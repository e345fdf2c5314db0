"""`pip install batchscribe` (no extras) into an empty virtual environment gives a working,
light client: no torch, CDK, moto or Whisper, under 150 MB, and none of the development code
(the harness, the benchmarks, the scripts, the tests); it drives a whole job against a local
stack (started here, from the dev environment); and the commands that need an extra say which.

The install downloads from PyPI (pip's cache makes a second run quicker). It builds from a copy
of every top-level package of the repository, as a build from the repository sees them, so that
no build output lands in the working tree."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from batchscribe_cli.local import LocalStack
from tests.e2e.waits import running_stack
from tests.packaging import PRODUCT

REPO = Path(__file__).resolve().parents[2]
DEV_ONLY = ("harness", "bench", "scripts", "tests")  # in the repository, in no wheel
HEAVY = ("torch", "aws_cdk", "moto", "faster_whisper", "ctranslate2", "boto3", "numpy", "whisper")


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    src.mkdir()
    shutil.copy2(REPO / "pyproject.toml", src)
    for package in PRODUCT + DEV_ONLY:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(),
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without the dev virtualenv's traces (PATH, PYTHONPATH, VIRTUAL_ENV)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    dev_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != dev_bin)
    return {**env, **extra}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from running_stack(tmp_path_factory)


@pytest.mark.slow
def test_the_client_install_is_light_and_runs_a_whole_job(client_venv: Path, stack: LocalStack, tmp_path: Path) -> None:
    python, batchscribe = client_venv / "bin" / "python", client_venv / "bin" / "batchscribe"
    probe = "import importlib.util as u, sys; print(*[m for m in sys.argv[1:] if u.find_spec(m)])"
    present = subprocess.run(
        [str(python), "-c", probe, *HEAVY, *DEV_ONLY],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # not the repository, and no PYTHONPATH: only what was installed
        env=_clean_env(),
    )
    assert present.stdout.split() == []  # none of the heavy packages came along, nor the dev-only code

    [site] = list(client_venv.glob("lib/python*/site-packages"))
    assert not [p.name for p in site.iterdir() if p.name in DEV_ONLY]
    assert not list((site / "batchscribe_cli").glob("*chaos*")) + list((site / "batchscribe_cli").glob("*faults*"))
    tools = sum(_du(p) for p in site.iterdir() if re.match(r"(pip|setuptools|_distutils_hack|pkg_resources)", p.name))
    total = _du(site)
    print(f"\nclient install: {total / 1e6:.1f} MB in site-packages ({(total - tools) / 1e6:.1f} MB without pip)")
    assert total < 150e6  # the bar the client install keeps, pip included
    assert total - tools < 80e6  # what it holds today, with room: a new dependency shows here first

    env = _clean_env(BATCHSCRIBE_API=stack.url, BATCHSCRIBE_OWNER="installed")
    sample = REPO / "batchscribe_cli" / "samples" / "sample.mp3"
    out = subprocess.run(
        [str(batchscribe), "submit", str(sample), "--wait", "--format", "json", "--language", "en"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,  # not the repository: only the installed package is importable
    )

    assert out.returncode == 0, out.stderr  # 0: the job succeeded
    transcript = json.loads(out.stdout)  # stdout is the transcript's JSON alone
    assert transcript["segments"] and "thank you" in transcript["text"].lower()
    job_id = re.search(r"job ([0-9a-f]{32}) submitted", out.stderr)
    assert job_id, out.stderr
    status = subprocess.run(
        [str(batchscribe), "status", job_id.group(1)[:8], "--json"], capture_output=True, text=True, env=env
    )
    assert json.loads(status.stdout)["status"] == "succeeded"


@pytest.mark.slow
def test_the_client_install_names_the_extra_a_command_needs(client_venv: Path, tmp_path: Path) -> None:
    batchscribe = str(client_venv / "bin" / "batchscribe")
    for args, extra in (
        (["local", "up", "--port", "0"], "local"),
        (["demo"], "local"),
        (["transcribe", __file__], "worker"),
    ):
        out = subprocess.run([batchscribe, *args], capture_output=True, text=True, env=_clean_env(), cwd=tmp_path)
        assert out.returncode == 3 and "Traceback" not in out.stderr, out.stderr
        assert f"pip install 'batchscribe[{extra}]'" in out.stderr


def test_the_declared_ranges_admit_the_pinned_versions() -> None:
    """The dev environment installs the exact pins; the package's ranges must allow them."""
    pins: dict[str, str] = {}
    for name in ("requirements.txt", "lambdas/requirements.txt", "gpu_container/requirements.txt"):
        for line in (REPO / name).read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                req = Requirement(line.split("#")[0].strip())
                pins[req.name.lower()] = next(iter(req.specifier)).version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    checked = 0
    for req in declared:
        if req.name.lower() in pins:
            assert req.specifier.contains(pins[req.name.lower()]), f"{req} excludes the pin {pins[req.name.lower()]}"
            checked += 1
    assert checked >= 15
    assert not any(r.name == "torch" for r in (Requirement(x) for x in project["dependencies"]))
