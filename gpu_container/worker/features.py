"""Whisper's log-mel features for a whole batch of windows in one call, and ready ahead.

`log_mel_batch` computes what faster-whisper's FeatureExtractor gives one window at a time
(`pad_or_trim(fe(audio)[..., :-1])`: 80 or 128 mel bands x 3000 frames, each window clamped
to 8 below its own loudest frame, zeros past its audio) for all windows at once: the rows
zero-padded to one length, one strided framing, one real FFT over [B, frames, n_fft], one
matrix product with the mel filters. On the GPU it runs in torch (`torch.stft`) where torch is
importable and the device is CUDA; otherwise in numpy, a row at a time (CHUNK_ROWS: the
intermediate spectra of several rows fall out of the cache). Equal to the per-window result within float tolerance
(tests/unit/test_features.py).

Why the padding changes nothing: a window's kept frames, and the one extra frame its maximum
is taken over, reach at most 40 samples past its audio's 160-sample zero tail, so they see the
same samples whether the row is padded with zeros to 30 s or reflected at its own end.

`FeaturePrefetch` is the one-slot read-ahead: the batch after the running one has its
features computed on a thread of its own while the model runs, and the runner takes them
ready (any window it is handed that was not prepared is computed on the spot, in one call).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchscribe.whisper_models import SAMPLE_RATE, WINDOW_SECONDS

N_FFT = 400
HOP = 160
N_FRAMES = round(WINDOW_SECONDS * SAMPLE_RATE / HOP)  # the encoder's input: 3000 frames, 100 a second
# numpy rows per FFT call: one keeps the [rows, frames, n_fft] intermediates at ~5 MB, in cache
# (10 windows of 28 s, Intel Xeon: 64 ms at 1 row a call, 118 ms at 4, 132 ms at 8, faster-whisper's
# own extractor 58 ms; on an AMD EPYC 1-8 measured alike)
CHUNK_ROWS = 1


@dataclass(frozen=True)
class MelSpec:
    """What the features are computed with: the mel filter bank [n_mels, n_fft // 2 + 1]
    (the library's own, float32), and where (`cuda` uses torch when importable)."""

    filters: np.ndarray
    device: str = "cpu"


def content_frames(length: int) -> int:
    """Frames of real audio in a window of `length` samples, as faster-whisper counts them
    (its extractor pads 160 zeros and drops the last frame, the pipeline drops one more)."""
    return max(0, (length + HOP) // HOP - 1)


def log_mel_batch(audios: Sequence[np.ndarray], spec: MelSpec) -> np.ndarray:
    """[B, n_mels, 3000] float32 log-mel features of each window, as one array."""
    if not audios:
        return np.zeros((0, spec.filters.shape[0], N_FRAMES), np.float32)
    if spec.device == "cuda" and torch_available():
        return _torch_batch(audios, spec)
    out = np.empty((len(audios), spec.filters.shape[0], N_FRAMES), np.float32)
    for start in range(0, len(audios), CHUNK_ROWS):
        out[start : start + CHUNK_ROWS] = _numpy_batch(audios[start : start + CHUNK_ROWS], spec.filters)
    return out


def _padded(audios: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """The rows zero-padded to one length (at least 30 s, plus the extractor's 160 zeros)."""
    lengths = [len(a) for a in audios]
    width = max(max(lengths), N_FRAMES * HOP) + HOP
    rows = np.zeros((len(audios), width), np.float32)
    for row, audio in zip(rows, audios, strict=True):
        row[: len(audio)] = audio
    return rows, lengths


def _finish(log_spec: Any, lengths: list[int], xp: Any) -> Any:
    """Per row: clamp to 8 below its loudest frame (over the frames the extractor computes),
    scale, and zero past its content, trimmed to 3000 frames (xp: numpy or torch)."""
    n = log_spec.shape[-1]
    counts = xp.asarray([min(content_frames(length) + 1, n) for length in lengths])
    frame = xp.arange(n)
    if xp is np:
        computed = frame[None, :] < counts[:, None]
        peak = np.where(computed[:, None, :], log_spec, -np.inf).max(axis=(1, 2))
        out = (np.maximum(log_spec, (peak - 8.0)[:, None, None]) + 4.0) / 4.0
    else:
        counts, frame = counts.to(log_spec.device), frame.to(log_spec.device)
        computed = frame[None, :] < counts[:, None]
        peak = log_spec.masked_fill(~computed[:, None, :], -float("inf")).amax(dim=(1, 2))
        out = (xp.maximum(log_spec, (peak - 8.0)[:, None, None]) + 4.0) / 4.0
    kept = frame[None, :] < (counts - 1)[:, None]
    out = out * kept[:, None, :]
    return out[..., :N_FRAMES]


def _numpy_batch(audios: Sequence[np.ndarray], filters: np.ndarray) -> np.ndarray:
    rows, lengths = _padded(audios)
    half = N_FFT // 2
    padded = np.pad(rows, ((0, 0), (half, half)), mode="reflect")
    n = 1 + (padded.shape[1] - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded, (len(rows), n, N_FFT), (padded.strides[0], HOP * padded.strides[1], padded.strides[1])
    )
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)
    spectrum = np.fft.rfft(frames * window, axis=-1).astype(np.complex64, copy=False)  # [B, frames, bins]
    power = spectrum.real**2 + spectrum.imag**2
    mel = (power.reshape(-1, power.shape[-1]) @ filters.T).reshape(len(rows), n, -1)  # one GEMM
    log_spec = np.log10(np.maximum(mel[:, :-1], 1e-10)).transpose(0, 2, 1)  # [B, n_mels, frames]
    return np.asarray(_finish(log_spec, lengths, np), np.float32)


def _torch_batch(audios: Sequence[np.ndarray], spec: MelSpec) -> np.ndarray:
    import torch

    rows, lengths = _padded(audios)
    with torch.no_grad():
        x = torch.from_numpy(rows).to(spec.device, non_blocking=True)
        window = torch.hann_window(N_FFT, device=x.device)
        stft = torch.stft(x, N_FFT, HOP, window=window, return_complex=True)[..., :-1]
        filters = torch.from_numpy(spec.filters).to(x.device)
        mel = filters @ stft.abs() ** 2
        log_spec = torch.clamp(mel, min=1e-10).log10()
        return np.asarray(_finish(log_spec, lengths, torch).float().cpu().numpy(), np.float32)


def torch_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# ---- one batch ahead ------------------------------------------------------------------------------


class FeaturePrefetch:
    """One slot: `prepare(audios)` starts the features of the next batch's windows on this
    object's own thread; `take(audios)` gives the features of the windows it is handed, the
    prepared rows from the slot (waiting for them if they are still being computed) and any
    others computed now, together (from several threads at once: each of the runner's CPU lanes
    takes its own windows). A window is known by its samples' address and length, which
    the slot keeps alive; so a batch cut into chunks (run_isolating), topped up, or the rest of a
    window (a continuation pass, other samples) still gets correct features. A newer `prepare`
    replaces the slot."""

    def __init__(self, compute: Callable[[Sequence[np.ndarray]], np.ndarray]) -> None:
        self._compute = compute
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="features")
        self._lock = threading.Lock()
        self._slot: tuple[list[np.ndarray], dict[tuple[int, int], int], Future[np.ndarray]] | None = None
        self.ready_rows = 0  # rows taken from the slot / computed on the spot (tests, the benchmark)
        self.computed_rows = 0

    def prepare(self, audios: Sequence[np.ndarray]) -> None:
        kept = list(audios)
        future = self._pool.submit(self._compute, kept)
        with self._lock:
            self._slot = (kept, {_identity(a): i for i, a in enumerate(kept)}, future)

    def take(self, audios: Sequence[np.ndarray]) -> np.ndarray:
        with self._lock:
            slot = self._slot
        rows = [slot[1].get(_identity(a)) for a in audios] if slot is not None else [None] * len(audios)
        missing = [i for i, row in enumerate(rows) if row is None]
        if len(missing) == len(audios):
            with self._lock:  # the runner's CPU lanes take their rows side by side
                self.computed_rows += len(audios)
            return self._compute(audios)
        assert slot is not None
        ready = slot[2].result()
        out = np.empty((len(audios), *ready.shape[1:]), ready.dtype)
        for i, row in enumerate(rows):
            if row is not None:
                out[i] = ready[row]
        if missing:
            out[missing] = self._compute([audios[i] for i in missing])
        with self._lock:
            self.ready_rows += len(audios) - len(missing)
            self.computed_rows += len(missing)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _identity(audio: np.ndarray) -> tuple[int, int]:
    """Where a window's samples live and how many: the same for the window and its [0:] slice."""
    return int(audio.__array_interface__["data"][0]), len(audio)
