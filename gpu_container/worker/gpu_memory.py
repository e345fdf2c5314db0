"""GPU memory and batches: what one window of a batch takes, what the card has free, the batch
size B from the two, and what running out of memory looks like.

    B = min(cap, floor((free - weights - RESERVE) x SAFETY / row)), at least 1

`free` is the device's free memory measured before the model loads (`free_memory`; a T4's 16 GB
when there is no probe), `weights` the model's parameters once, `row` the bytes one 30 s window
adds to a batch, `cap` MAX_BATCH (64: on an H100 CTranslate2 gains 5 % from 32 to 64, NOTES.md).
B is the largest integer that fits, not a power of two: the scheduler fills batches of any size,
and rounding 47 down to 32 would give up a third of the batch. SAFETY (0.8) leaves a fifth of the
memory the batch may use to what the rows do not count (allocator rounding and cache, cuBLAS
workspaces, the fallback passes' own buffers); RESERVE (1 GiB) is the CUDA context and cuBLAS
handle, which a probe taken before the engine's first kernel does not see.

One row, in bytes, for a model of width d, H heads, Le/Ld encoder/decoder layers, T = 1500 audio
positions, N = 448 text positions, V tokens, beam b, s = 2 bytes a value (float16 activations):

    encoder output   T d s                      held while its windows decode
    encoding         (8 T d + H T^2) s          one encoder layer at a time: the residual, its
                                                normed input, the fused QKV projection, Q/K/V split
                                                apart, and all heads' attention scores
    cross            c Ld 2 T d s + (c-1) T d s the cross-attention keys/values of every decoder
                                                layer (c copies; openai-whisper also repeats the
                                                audio features per hypothesis)
    self             (Ld + 1) 2 b N d s         the self-attention cache at N tokens for each of
                                                b hypotheses (+1 layer: the copy a step's concat
                                                makes)
    prompt           c H P (T + P) s            the prompt's attention scores (P = N / 2, the
                                                longest previous-text prompt)
    logits           b V (s + 8)                a step's logits, log-probs and candidates' scores

    row = 2 x encoder output + max(encoding, cross + self + prompt + logits)

(twice the encoder output: a temperature fallback encodes the retried windows again while the
first output is held). c is 1 for CTranslate2 (faster-whisper): its TransformerDecoder keeps the
projected memory keys/values once per batch row, not per beam ("No need to replicate projected
memory keys and values as they are the same for each beam", src/layers/transformer.cc
`replicate_state`), and prefills the prompt before the state is replicated for the beam
(src/models/whisper.cc `forward_prompt`); attention scores are materialised (src/layers/
attention.cc `dot_product_attention`, softmax in place). c is b for openai-whisper: the batched
DecodingTask (whisper_lib) repeats the audio features per hypothesis, so its cross-attention cache
(whisper's kv-cache hooks) is per hypothesis too; its weights stay float32 on the GPU (whisper's
Linear casts them per call), 4 bytes a parameter; CTranslate2 float16 holds 2. Dimensions come
from the model's folder (convert.read_dims) or batchscribe.whisper_models.

Out of memory: CTranslate2 raises RuntimeError("CUDA failed with error out of memory") from its
CUDA_CHECK (src/cuda/utils.h, cudaGetErrorString of cudaErrorMemoryAllocation) when its allocator
cannot allocate, and "cuBLAS failed with status CUBLAS_STATUS_ALLOC_FAILED" from CUBLAS_CHECK;
torch raises torch.cuda.OutOfMemoryError (a RuntimeError) from its caching allocator, and
"CUDA error: out of memory" from a kernel launch. These are the only texts matched: the libraries
give no other form.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchscribe.whisper_models import LARGEST, WhisperDims

MiB = 2**20
SAFETY = 0.8
RESERVE_BYTES = 1024 * MiB
MAX_BATCH = 64
VALUE_BYTES = 2  # float16 activations
T4_BYTES = 15_360 * MiB  # what a T4 reports (nvidia-smi): the size batches fit when nothing is probed

OUT_OF_MEMORY_TEXTS = (
    "CUDA failed with error out of memory",  # CTranslate2 CUDA_CHECK
    "CUBLAS_STATUS_ALLOC_FAILED",  # CTranslate2 CUBLAS_CHECK, torch's cuBLAS handle
    "CUDA error: out of memory",  # torch, outside its caching allocator
)


@dataclass(frozen=True)
class EngineMemory:
    weight_bytes: int  # a parameter on the GPU
    per_hypothesis: bool  # cross-attention cache and audio features once per beam hypothesis


ENGINES: dict[str, EngineMemory] = {
    "faster-whisper": EngineMemory(weight_bytes=2, per_hypothesis=False),
    "openai-whisper": EngineMemory(weight_bytes=4, per_hypothesis=True),
}


def row_bytes(dims: WhisperDims, beam_size: int, engine: str = "faster-whisper") -> int:
    """The GPU memory one 30 s window adds to a batch (the module docstring's `row`)."""
    s, b = VALUE_BYTES, max(1, beam_size)
    t, d, n, h = dims.audio_ctx, dims.d_model, dims.text_ctx, dims.heads
    c = b if ENGINES[engine].per_hypothesis else 1
    prompt_len = n // 2
    encoder_output = t * d * s
    encoding = (8 * t * d + h * t * t) * s
    cross = c * dims.decoder_layers * 2 * t * d * s + (c - 1) * t * d * s
    self_cache = (dims.decoder_layers + 1) * 2 * b * n * d * s
    prompt = c * h * prompt_len * (t + prompt_len) * s
    logits = b * dims.vocab * (s + 8)
    return 2 * encoder_output + max(encoding, cross + self_cache + prompt + logits)


def weights_bytes(dims: WhisperDims, engine: str = "faster-whisper") -> int:
    return dims.params * ENGINES[engine].weight_bytes


def fit_batch(
    free_bytes: int,
    dims: WhisperDims | None,
    beam_size: int,
    *,
    engine: str = "faster-whisper",
    weights_loaded: bool = False,
    cap: int = MAX_BATCH,
) -> int:
    """B: the most windows whose rows fit in `free_bytes` beside the weights (already in
    `free_bytes`' complement when `weights_loaded`), at least 1, at most `cap`. An unknown
    model (`dims` None) is sized as the largest Whisper model."""
    dims = dims or LARGEST
    weights = 0 if weights_loaded else weights_bytes(dims, engine)
    room = (free_bytes - weights - RESERVE_BYTES) * SAFETY
    return max(1, min(cap, math.floor(room / row_bytes(dims, beam_size, engine))))


# ---- what the device has free ------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryInfo:
    free: int
    total: int
    source: str  # which API measured it


Loader = Callable[[str], Any]


def free_memory(device_index: int = 0, load: Loader = ctypes.CDLL) -> MemoryInfo | None:
    """The free and total memory of the CUDA device the worker uses (its `device_index`-th
    visible device): through the CUDA driver (libcuda), else NVML; None where neither is
    present (a CPU host) or the device cannot be read."""
    for probe, library in ((_cuda_driver, "libcuda.so.1"), (_nvml, "libnvidia-ml.so.1")):
        try:
            info = probe(load(library), device_index)
        except (OSError, AttributeError):
            continue
        if info is not None:
            return info
    return None


def _cuda_driver(cuda: Any, index: int) -> MemoryInfo | None:
    """cuMemGetInfo in the device's primary context (the one the CUDA runtime, so CTranslate2
    and torch, share): counts every process's use, honours CUDA_VISIBLE_DEVICES."""
    device, context = ctypes.c_int(), ctypes.c_void_p()
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), index) != 0:
        return None
    if cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device) != 0:
        return None
    try:
        if cuda.cuCtxPushCurrent_v2(context) != 0:
            return None
        try:
            status = cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total))
        finally:
            cuda.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
    finally:
        cuda.cuDevicePrimaryCtxRelease_v2(device)
    return MemoryInfo(free.value, total.value, "cuda-driver") if status == 0 else None


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _nvml(nvml: Any, index: int) -> MemoryInfo | None:
    """nvmlDeviceGetMemoryInfo. NVML numbers devices physically: the CUDA_VISIBLE_DEVICES entry
    for `index` (an ordinal or a GPU UUID) says which one that is."""
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        handle, memory = ctypes.c_void_p(), _NvmlMemory()
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        entry = visible[index] if index < len(visible) else str(index)
        if entry.isdigit():
            found = nvml.nvmlDeviceGetHandleByIndex_v2(int(entry), ctypes.byref(handle))
        else:
            found = nvml.nvmlDeviceGetHandleByUUID(entry.encode(), ctypes.byref(handle))
        if found != 0 or nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != 0:
            return None
        return MemoryInfo(int(memory.free), int(memory.total), "nvml")
    finally:
        nvml.nvmlShutdown()


# ---- what running out of it looks like -----------------------------------------------------------


def is_out_of_memory(error: BaseException) -> bool:
    """The engine ran out of GPU memory (the forms in the module docstring), as opposed to a
    window it cannot decode."""
    torch = sys.modules.get("torch")  # an error cannot be torch's unless torch is loaded
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if isinstance(oom_type, type) and isinstance(error, oom_type):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error) for text in OUT_OF_MEMORY_TEXTS)
