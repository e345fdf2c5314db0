"""The architecture, enforced: layers point one way (import-linter contracts in
pyproject.toml), and each runtime ships only what it imports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("batchscribe", "batchscribe_cli", "lambdas", "gpu_container", "stacks")
LINTER = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
HANDLERS = ("api", "on_upload", "dead_letter", "sweeper", "reconciler", "scaler", "notify", "webhook")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contracts_hold() -> None:
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(LINTER['contracts'])} kept, 0 broken" in out.stdout


def test_the_contracts_cover_every_package_and_every_lambda() -> None:
    """A new top-level package or Lambda is under the contracts from its first commit."""
    assert set(LINTER["root_packages"]) == {p.parent.name for p in ROOT.glob("*/__init__.py")}
    [independent] = [c for c in LINTER["contracts"] if c["type"] == "independence"]
    handlers = {f"lambdas.{p.parent.name}" for p in (ROOT / "lambdas").glob("*/handler.py")}
    assert set(independent["modules"]) == handlers


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        ("batchscribe/models.py", "import lambdas.api.handler", "app layer -> runtimes"),
        ("batchscribe/repository/jobs.py", "import batchscribe_cli.local", "app layer -> runtimes"),
        ("lambdas/api/handler.py", "import gpu_container.worker.main", "app layer -> runtimes"),
        ("lambdas/sweeper/handler.py", "import lambdas.api.handler", "never another handler"),
        ("lambdas/webhook/handler.py", "import lambdas.notify.handler", "never another handler"),
        ("batchscribe_cli/cli.py", "import harness.chaos", "imports no test, bench or harness code"),
        ("gpu_container/worker/main.py", "import tests.helpers", "imports no test, bench or harness code"),
        ("harness/chaos.py", "import bench.cost", "tests -> bench | scripts -> harness"),
        ("bench/cost.py", "import tests.helpers", "tests -> bench | scripts -> harness"),
        ("batchscribe/settings.py", "import boto3", "without boto3"),
    ],
)
def test_the_contracts_catch_a_wrong_way_import(tmp_path: Path, module: str, bad_import: str, contract: str) -> None:
    """Given a copy of the tree where one module imports against the layers,
    lint-imports fails naming the broken contract."""
    for package in LINTER["root_packages"]:
        ignore = shutil.ignore_patterns("__pycache__", "*.mp3", "results")
        shutil.copytree(ROOT / package, tmp_path / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / module).open("a") as f:
        f.write(f"\n{bad_import}  # noqa\n")
    out = lint_imports(tmp_path)
    assert out.returncode != 0
    broken = [line for line in out.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), out.stdout


def _imported_repo_modules(path_root: Path, modules: list[str]) -> dict[str, str]:
    """Import `modules` in a fresh interpreter whose first path entry is `path_root` and
    return every module of this repository's packages it loaded, with its file."""
    script = f"""
import importlib, json, sys
sys.path.insert(0, {str(path_root)!r})
for name in {modules!r}:
    importlib.import_module(name)
mine = {{n: getattr(m, "__file__", None) or "" for n, m in sys.modules.items()
        if n.split(".")[0] in {PACKAGES!r}}}
print(json.dumps(mine))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=path_root, capture_output=True, text=True, timeout=120, check=True
    )
    loaded: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_the_lambda_asset_holds_the_core_and_the_handlers_only(tmp_path: Path) -> None:
    from stacks.constructs.functions import stage_code

    asset = stage_code(tmp_path / "asset")
    assert sorted(p.name for p in asset.iterdir()) == ["batchscribe", "lambdas"]
    loaded = _imported_repo_modules(asset, [f"lambdas.{h}.handler" for h in HANDLERS])
    assert {n.split(".")[0] for n in loaded} == {"batchscribe", "lambdas"}
    assert all(path.startswith(str(asset)) for path in loaded.values()), loaded


def test_the_worker_imports_the_core_and_the_worker_only(tmp_path: Path) -> None:
    """What the image copies (batchscribe/ and gpu_container/) is all the worker loads."""
    for package in ("batchscribe", "gpu_container"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    loaded = _imported_repo_modules(tmp_path, ["gpu_container.worker.main", "gpu_container.worker.bake"])
    assert {n.split(".")[0] for n in loaded} == {"batchscribe", "gpu_container"}
    assert all(path.startswith(str(tmp_path)) for path in loaded.values()), loaded


def test_the_image_copies_only_the_worker_runtime() -> None:
    dockerfile = (ROOT / "gpu_container" / "Dockerfile").read_text()
    copied = {
        line.split()[1].rstrip("/")
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and not line.split()[1].endswith(".txt")
    }
    assert copied == {"batchscribe", "gpu_container"}, copied
