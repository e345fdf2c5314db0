"""Probe and decode media with PyAV, safely: local files only, a fixed list of container
formats (no playlists, concat, network or device demuxers), bounded duration and decoded
size. Output: 16 kHz mono float32, what both engines take."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from batchscribe.whisper_models import SAMPLE_RATE
from gpu_container.worker.errors import InvalidMedia, NoAudio, TooLong

# FFmpeg demuxer names of audio/video containers. Anything else (hls, concat, dash, rtsp,
# image2, lavfi, ...) is refused before a single packet is read.
ALLOWED_FORMATS = frozenset(
    {
        "wav",
        "w64",
        "mp3",
        "mov",
        "mp4",
        "m4a",
        "3gp",
        "3g2",
        "mj2",
        "flac",
        "ogg",
        "matroska",
        "webm",
        "aac",
        "amr",
        "aiff",
        "asf",
        "avi",
        "mpeg",
        "mpegts",
        "caf",
        "au",
        "wv",
        "opus",
    }
)
_OPEN_OPTIONS = {"protocol_whitelist": "file", "safe": "1"}


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    container: str
    codec: str

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode(path: Path, max_duration_seconds: float) -> Audio:
    """Decode the first audio stream of a local file; raise a PermanentJobError for media
    that can never be transcribed."""
    max_samples = int(max_duration_seconds * SAMPLE_RATE)
    try:
        container = av.open(str(path), mode="r", options=_OPEN_OPTIONS)
    except av.error.FFmpegError as exc:
        raise InvalidMedia(f"the file could not be read as audio or video: {exc.strerror or exc}") from exc
    with container:
        names = set(container.format.name.split(","))
        if not names & ALLOWED_FORMATS:
            raise InvalidMedia(f"container format {container.format.name!r} is not accepted")
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            raise NoAudio("the file has no audio stream")
        stream = streams[0]
        if container.duration is not None and container.duration / 1_000_000 > max_duration_seconds + 1:
            raise TooLong(
                f"the media is {container.duration / 1_000_000:.0f} s long; this deployment's limit is "
                f"{max_duration_seconds:.0f} s"
            )
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):  # type: ignore[arg-type]  # audio stream: AudioFrames
                    chunk = out.to_ndarray().reshape(-1)
                    total += len(chunk)
                    if total > max_samples:
                        raise TooLong(
                            f"the audio is longer than this deployment's limit of {max_duration_seconds:.0f} s"
                        )
                    chunks.append(chunk)
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as exc:
            if not chunks:
                raise InvalidMedia(f"the audio stream could not be decoded: {exc.strerror or exc}") from exc
            # A damaged tail after good audio: transcribe what decoded.
        codec = stream.codec_context.name if stream.codec_context else "unknown"
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if len(samples) < SAMPLE_RATE // 10:
        raise NoAudio("the audio stream is empty (less than 0.1 s of sound)")
    return Audio(samples=samples, container=container.format.name, codec=codec)
