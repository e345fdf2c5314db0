"""What one worker needs of its host, from measured figures: the memory its process peaks at
(the floor under its job's memory request) and the disk its image, its model and the inputs
of the jobs it holds take (its root volume).

Memory, per worker, in MiB (each figure's source beside it):

    need = MARGIN x (measured peak of the engine's worker on tiny.en, one job, CPU
                     + the configured model's weights at load (LOAD_FACTOR x its fp16 size)
                     + on CPU: the encoder's working set, grown with the model's attention heads
                     + (K - 1) more held jobs' decoded audio (WorkerSettings.read_ahead windows
                       and one decode block each, float32 at 16 kHz, twice over: the windows
                       decoded ahead wait in the scheduler and in the job's prefetch queue,
                       at most read_ahead in each)
                     + on GPU: the CUDA runtime's host memory (an estimate: not measured here))

Disk, per host, in GiB: the AMI's root (the ECS AMIs' snapshot), the image twice (pulled
layers and their extracted copy), the baked model (twice for openai-whisper: the CTranslate2
folder and the converted checkpoint), and K inputs of up to `max_upload_mb` each for every
worker the host runs (a worker downloads a held job's input before it decodes it; on a host of
several GPUs one worker per GPU, all on its one root volume, the image and model pulled once),
with 10 % kept free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from batchscribe.models import EngineName
from batchscribe.settings import WorkerSettings
from batchscribe.whisper_models import LARGEST, SAMPLE_RATE, WHISPER_DIMS, WINDOW_SECONDS, WhisperDims, whisper_dims

# bench/results/engines-cpu.json (2026-12-07, `python -m bench.bench_engines --repeats 3`, Intel Xeon,
# tiny.en, beam 5, a 5 min file): the highest peak RSS (VmHWM) of each engine's process while it
# transcribed: the worker's batched path (worker-batched, at the CPU worker's own B of 2 that
# `batchscribe transcribe` runs a file with on a CPU too, one window in each of the engine's two
# CPU lanes) for faster-whisper, the openai-whisper variant for openai-whisper (its process
# carries torch).
MEASURED_PEAK_MIB: dict[EngineName, float] = {"faster-whisper": 608.1, "openai-whisper": 730.8}
# In the same runs the worker's RSS rose by at most 179.4 MiB (before the load to the load's peak)
# to load tiny.en's 72.0 MiB model.bin (75,537,502 bytes): 2.49 x the file; rounded up (the two
# lanes' replicas share the weights).
LOAD_FACTOR = 2.5
# ... and once loaded, transcribing on CPU took the process from 191.1 to 608.1 MiB: the model's
# working set (in each of the two lanes, one window's encoder attention scores and its decoder
# caches for 5 beams), which grows with the model's width and heads; it is scaled by the model's
# heads over tiny.en's 6.
MEASURED_WORKING_SET_MIB = 608.1 - 191.1
TINY_HEADS = 6
CUDA_HOST_MIB = 1536  # CUDA context and cuBLAS's host allocations: an estimate, no GPU host RSS measured
MARGIN = 1.25


def weights_mib(model: WhisperDims) -> float:
    """The fp16 weights file (a CTranslate2 model.bin or an openai-whisper checkpoint)."""
    return model.params * 2 / 2**20


# The models' shapes (parameters, encoder heads) are the core's one table
# (batchscribe/whisper_models.py, with its sources), which the worker's GPU memory model reads too.
MODELS = WHISPER_DIMS

# Image sizes measured with podman (docs/deploy.md 'Worker images'; built with the bundled tiny.en), in GB; the
# GPU openai-whisper image (CUDA torch, cuBLAS and cuDNN wheels) was not built here: an estimate.
IMAGE_GB: dict[tuple[EngineName, str], float] = {
    ("faster-whisper", "cpu"): 0.96,
    ("faster-whisper", "gpu"): 1.82,
    ("openai-whisper", "cpu"): 2.14,
    ("openai-whisper", "gpu"): 8.0,
}
AMI_ROOT_GIB = 30  # the ECS-optimized AL2023 AMIs' root snapshot: the volume can be no smaller
FREE_FRACTION = 0.1


def whisper_model(name: str) -> WhisperDims:
    """A model's shape by name (`large-v3`, `small.en`, `Systran/faster-whisper-small`); a name
    not in the table is sized as the largest Whisper model."""
    return whisper_dims(name) or LARGEST


def held_jobs(device: str, model: str) -> int:
    """K, the jobs a worker holds at once, when the deployment does not set it: the worker's own
    default (gpu_container/worker/batches.py `default_batching`; a test holds the two equal)."""
    if device != "gpu":
        return 4
    return 32 if model.startswith("large") and "turbo" not in model else 64


def _per_job_mib() -> float:
    """One more held job's decoded audio: its read-ahead windows and a decode block, float32."""
    fields = WorkerSettings.model_fields
    seconds = fields["read_ahead"].default * WINDOW_SECONDS + fields["decode_block_seconds"].default
    return 2 * seconds * SAMPLE_RATE * 4 / 2**20


@dataclass(frozen=True)
class WorkerNeeds:
    engine: EngineName
    model: str
    device: str  # "gpu" or "cpu"
    held_jobs: int

    @property
    def memory_mib(self) -> int:
        """The worker's peak host memory, with the margin."""
        m = whisper_model(self.model)
        working_set = MEASURED_WORKING_SET_MIB * (m.heads / TINY_HEADS - 1) if self.device == "cpu" else 0
        cuda = CUDA_HOST_MIB if self.device == "gpu" else 0
        peak = (
            MEASURED_PEAK_MIB[self.engine]
            + LOAD_FACTOR * weights_mib(m)
            + working_set
            + (self.held_jobs - 1) * _per_job_mib()
            + cuda
        )
        return math.ceil(MARGIN * peak)

    def volume_gib(self, max_upload_mb: int, workers: int = 1) -> int:
        """The root volume of a host running `workers` of these workers: the AMI, the image pulled
        and extracted, the model, K inputs for each worker, free room."""
        copies = 2 if self.engine == "openai-whisper" else 1
        model_gib = copies * weights_mib(whisper_model(self.model)) / 1024
        image_gib = 2 * IMAGE_GB[(self.engine, self.device)] * 1e9 / 2**30
        inputs_gib = workers * self.held_jobs * max_upload_mb / 1024
        return math.ceil((AMI_ROOT_GIB + image_gib + model_gib + inputs_gib) * (1 + FREE_FRACTION))
