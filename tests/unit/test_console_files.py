"""The local stack serves the console's built page from its own package: in a checkout that is
console/dist itself (through the package's link to it), and a wheel built from the checkout
carries the same files, so an installed `batchscribe local up` serves the page too."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from batchscribe_cli.local.console import DIST, console_page
from tests.packaging import PRODUCT

REPO = Path(__file__).resolve().parents[2]
BUILT = REPO / "console" / "dist"
FILES = ("index.html", "app.js", "app.css")


def test_in_a_checkout_the_page_is_console_dist() -> None:
    assert DIST.resolve() == BUILT.resolve()
    page = console_page("/")
    assert page is not None and page.status == 200 and page.body == (BUILT / "index.html").read_bytes()


def test_a_wheel_built_from_the_checkout_carries_the_built_page(tmp_path: Path) -> None:
    """Built as `pip install .` builds it, offline (this environment's setuptools), from a copy
    that keeps the checkout's links."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy2(REPO / "pyproject.toml", src)
    for package in PRODUCT:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(REPO / package, src / package, symlinks=True, ignore=ignore)
    shutil.copytree(BUILT, src / "console" / "dist")
    assert (src / "batchscribe_cli" / "local" / "console_dist").is_symlink()
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels)]
    done = subprocess.run([*build, str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [wheel] = wheels.glob("batchscribe-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in FILES:
            assert archive.read(f"batchscribe_cli/local/console_dist/{name}") == (BUILT / name).read_bytes(), name


def test_the_page_sends_files_in_parts_past_the_clis_threshold() -> None:
    """The page's constant (TypeScript, console/src/config.ts) is held to the CLI's, so a file
    goes up the same way from either."""
    from batchscribe_cli.client import MULTIPART_BYTES

    source = (REPO / "console" / "src" / "config.ts").read_text()
    found = re.search(r"export const MULTIPART_BYTES = (\d+) \* 1024 \* 1024;", source)
    assert found and int(found.group(1)) * 1024 * 1024 == MULTIPART_BYTES
