"""Pack what `make bench-gpu` needs on the lent GPU machine into one Python 3.12 site tree.

The lent machines (H100/H200) are offline, run Python 3.12 with torch (CUDA 13), numpy, numba,
tiktoken, tokenizers, onnxruntime, huggingface_hub and tqdm preinstalled, and take at most
64 MiB of files per call: the repository's tracked files plus the paths named in `carry`. So
the packages they lack travel as one xz tarball of a `pip install --target` tree made here for
cp312 manylinux x86_64, at the versions this environment runs (what CI tests):

- wheels: ctranslate2, av, faster-whisper, pydantic (+ pydantic-core, annotated-types,
  typing-inspection, typing-extensions), jiwer + rapidfuzz, more-itertools, aws-lambda-powertools
  (+ jmespath: the worker emits its metrics through it);
- openai-whisper, which has no wheel on PyPI: its sdist, built into a wheel here
  (`pip wheel --no-deps`; pure Python).

Writes build/gpu/site.tar.xz and build/gpu/site.json (versions, sizes, sha256) and refuses a
tarball over MAX_TAR_MIB, or one that with this tree's files would not fit one call.

    .venv/bin/python -m scripts.pack_gpu_site          # or: make bench-gpu-pack
    .venv/bin/python -m scripts.pack_gpu_site --print-run   # or: make bench-gpu: the device call
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "gpu"
CARRY = "build/gpu/site.tar.xz"  # the path `run` carries (build/ is ignored by git)
WHEELS = [
    "ctranslate2",
    "av",
    "faster-whisper",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "jiwer",
    "rapidfuzz",
    "more-itertools",
    "aws-lambda-powertools",  # the worker's metrics (an out-of-memory batch emits one)
    "jmespath",  # Powertools' one dependency beyond typing-extensions
]
SDISTS = ["openai-whisper"]  # no wheel on PyPI: built here
TARGET = [
    "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--abi", "none",
    "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
    "--platform", "manylinux_2_28_x86_64", "--platform", "any",
]  # fmt: skip
RUN_COMMAND = "bash bench/gpu/run.sh"
RUN_TIMEOUT_S = 480  # run.sh: no step starts after 330 s, killed at 440 s; unpacking first
MIB = 2**20
CALL_LIMIT_MIB = 64  # one device call carries at most this much
MAX_TAR_MIB = 56  # the site tree's share, leaving the repository room beside it


def pins(names: list[str]) -> list[str]:
    """`name==version` at the version this environment has installed."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"], check=True)


def fetch_wheels(work: Path) -> Path:
    """The cp312 manylinux wheels, and openai-whisper's wheel built from its sdist."""
    wheels, sdists = work / "wheels", work / "sdists"
    pip("download", "--no-deps", "--only-binary=:all:", *TARGET, "-d", str(wheels), *pins(WHEELS))
    pip("download", "--no-deps", "--no-binary=:all:", "-d", str(sdists), *pins(SDISTS))
    for sdist in sorted(sdists.iterdir()):
        pip("wheel", "--no-deps", "-w", str(wheels), str(sdist))
    return wheels


def install(wheels: Path, site: Path) -> None:
    """One `--target` tree, without byte code or console scripts (nothing runs them there)."""
    files = [str(w) for w in sorted(wheels.glob("*.whl"))]
    pip("install", "--no-deps", "--no-compile", "--no-index", "--only-binary=:all:", *TARGET,
        "--target", str(site), *files)  # fmt: skip
    shutil.rmtree(site / "bin", ignore_errors=True)
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache)


def tracked_mib() -> float:
    """What the call carries of this tree besides the site tree: tracked and untracked,
    not ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    paths = [ROOT / p for p in listed.decode().split("\0") if p]
    return sum(p.stat().st_size for p in paths if p.is_file()) / MIB


def fits(tar_mib: float, tree_mib: float) -> str | None:
    """Why the tarball cannot travel (None: it can)."""
    if tar_mib > MAX_TAR_MIB:
        return f"site.tar.xz is {tar_mib:.1f} MiB, over its {MAX_TAR_MIB} MiB share of a call"
    if tar_mib + tree_mib > CALL_LIMIT_MIB - 1:
        return f"site.tar.xz ({tar_mib:.1f} MiB) and this tree's files ({tree_mib:.1f} MiB) exceed one call"
    return None


def pack(site: Path, out: Path) -> Path:
    tar = out / "site.tar.xz"
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-C", str(site), "-I", "xz -9e -T0", "-cf", str(tar), "."], check=True)
    return tar


def run_call(tar: Path = OUT / "site.tar.xz") -> str:
    """The device call that runs the benchmark, as the `run` tool takes it, or what to do first."""
    if not tar.exists():
        return f"{tar} is missing: `make bench-gpu-pack` first (about 6 min, 52 MiB)"
    call = {"command": RUN_COMMAND, "carry": [CARRY], "timeout_s": RUN_TIMEOUT_S}
    return "\n".join([
        "One device call (the `run` tool), from this tree's root, on a lent H100/H200:",
        f"  {json.dumps(call)}",
        f"It carries this tree ({tracked_mib():.1f} MiB) and {CARRY} ({tar.stat().st_size / MIB:.1f} MiB),"
        f" under {CALL_LIMIT_MIB} MiB.",
        "Results come back under $OUT: gpu-<card>.json (all of it), bench-gpu.jsonl (row by row), log.txt.",
        "Copy gpu-<card>.json to bench/results/ and quote it with the card and driver it names.",
    ])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--print-run", action="store_true", help="print the device call that runs the benchmark")
    args = parser.parse_args()
    if args.print_run:
        print(run_call(args.out / "site.tar.xz"))
        return 0
    with tempfile.TemporaryDirectory(prefix="gpu-site-") as tmp:
        work = Path(tmp)
        wheels = fetch_wheels(work)
        install(wheels, work / "site")
        unpacked = sum(p.stat().st_size for p in (work / "site").rglob("*") if p.is_file()) / MIB
        tar = pack(work / "site", args.out)
        wheel_names = sorted(w.name for w in wheels.glob("*.whl"))
    tar_mib, tree_mib = tar.stat().st_size / MIB, tracked_mib()
    manifest = {
        "python": "cp312 manylinux x86_64",
        "packages": pins(WHEELS + SDISTS),
        "wheels": wheel_names,
        "unpacked_mib": round(unpacked, 1),
        "tar_mib": round(tar_mib, 2),
        "tree_mib": round(tree_mib, 2),
        "sha256": hashlib.sha256(tar.read_bytes()).hexdigest(),
    }
    (args.out / "site.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))
    problem = fits(tar_mib, tree_mib)
    if problem:
        print(f"refused: {problem}", file=sys.stderr)
        return 1
    print(f"packed {tar} ({tar_mib:.1f} MiB; this tree's files {tree_mib:.1f} MiB): carry {CARRY!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
