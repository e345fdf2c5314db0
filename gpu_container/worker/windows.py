"""Streaming decode and windowing for cross-job batching.

A local media file is opened and probed with the same safety rules as media.decode (local
files only, a fixed list of container formats, a duration cap), then decoded incrementally
with PyAV into 16 kHz mono float32 and cut into windows of at most 30 s of speech with
faster-whisper's Silero VAD, as faster-whisper's own transcribe filters a file
(`vad_filter=True`, whisper_lib.vad_options): speech chunks, split where a pause lasts 2 s
or more (speech runs over 30 s split at their last short pause), are packed greedily into
windows, those long pauses dropped. Shorter pauses stay in the audio: they are where the
model puts its commas and full stops (cutting every pause over 160 ms, as
BatchedInferencePipeline does, lost them). Each window keeps the source positions of its
chunks, so times inside a window map back to the original media (`Window.to_source`), as
`SpeechTimestampsMap` does for a file.

Memory stays bounded: audio is decoded in blocks of `block_seconds`; VAD runs on a block (each
sample's speech probability computed once, the model's state carried from block to block:
whisper_lib.SpeechProbabilities); windows whose chunks are settled (followed by enough decoded
audio that more decoding cannot change them) are yielded and the block is dropped, except a
short tail (the speech still open at the block's end, and the last window while it may still
take more chunks, at most `max_carry_seconds`), which is carried into the next block. At most a
block plus its carry is held as PCM at a time, whatever the file's length.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

import av
import numpy as np

from batchscribe.whisper_models import SAMPLE_RATE, WINDOW_SECONDS
from gpu_container.worker import whisper_lib
from gpu_container.worker.errors import InvalidMedia, NoAudio, TooLong
from gpu_container.worker.media import _OPEN_OPTIONS, ALLOWED_FORMATS
from gpu_container.worker.scheduler import NOT_READY, NotReady

MAX_WINDOW_SECONDS = WINDOW_SECONDS
MIN_AUDIO_SAMPLES = SAMPLE_RATE // 10  # as media.decode: less than 0.1 s is no audio


@dataclass(frozen=True, eq=False)
class Window:
    """At most 30 s of speech from one source: the speech chunks `chunks` (source sample
    ranges, ascending, non-overlapping) concatenated into `audio`."""

    index: int
    audio: np.ndarray  # float32, mono, SAMPLE_RATE
    chunks: tuple[tuple[int, int], ...]
    channel: int | None = None  # the source channel, when channels are transcribed apart
    progress_offset: float = 0.0  # seconds of the job's work before this window's channel

    @property
    def progress_end(self) -> float:
        """How far through the job's work (in source seconds over all its channels) this
        window reaches: for progress, which must only grow."""
        return self.progress_offset + self.end

    @property
    def start(self) -> float:
        """Source seconds where the window's first speech chunk starts."""
        return self.chunks[0][0] / SAMPLE_RATE

    @property
    def end(self) -> float:
        """Source seconds where the window's last speech chunk ends."""
        return self.chunks[-1][1] / SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def chunk_at(self, t: float, *, is_end: bool = False) -> int:
        """The chunk that window time `t` falls in (an end exactly on a boundary belongs to
        the earlier chunk)."""
        sample = t * SAMPLE_RATE
        before = 0
        for i, (a, b) in enumerate(self.chunks):
            n = b - a
            if sample < before + n or (is_end and sample <= before + n):
                return i
            before += n
        return len(self.chunks) - 1

    def to_source(self, t: float, *, is_end: bool = False, chunk: int | None = None) -> float:
        """Window time (seconds into `audio`) -> source time, through chunk `chunk` (by
        default the one `t` falls in), clamped to that chunk."""
        i = self.chunk_at(t, is_end=is_end) if chunk is None else chunk
        before = sum(b - a for a, b in self.chunks[:i])
        a, b = self.chunks[i]
        sample = min(max(t * SAMPLE_RATE - before, 0.0), b - a)
        return round((a + sample) / SAMPLE_RATE, 3)

    def span_to_source(self, start: float, end: float) -> tuple[float, float]:
        """A word's (start, end): both resolved through the chunk its middle falls in, as
        faster-whisper's restore_speech_timestamps does, so a word never spans a cut."""
        chunk = self.chunk_at((start + end) / 2)
        return self.to_source(start, chunk=chunk), self.to_source(end, chunk=chunk)


class MediaStream:
    """A probed local media file whose windows are decoded as they are iterated.

    Opening raises InvalidMedia (unreadable, refused container), NoAudio (no audio stream)
    or TooLong (the header says it is over the limit) at once; iterating may still raise
    InvalidMedia (the stream cannot be decoded at all), TooLong (more samples than the limit
    where the header had no duration) or NoAudio (under 0.1 s decoded). A damaged tail after
    good audio ends the stream, as in media.decode.
    """

    def __init__(
        self,
        path: Path,
        max_duration_seconds: float,
        *,
        block_seconds: float = 120.0,
        max_window_seconds: float = MAX_WINDOW_SECONDS,
        max_carry_seconds: float = 60.0,
        vad_options: Any = None,
        channel: int | None = None,
    ) -> None:
        if block_seconds < 2 * max(max_carry_seconds, max_window_seconds + 1):
            raise ValueError("block_seconds must be at least twice the carry and twice a window")
        self.path = Path(path)
        self.channel = channel  # None: all channels mixed to mono
        self.max_duration_seconds = max_duration_seconds
        self.block_samples = int(block_seconds * SAMPLE_RATE)
        self.max_window_samples = int(max_window_seconds * SAMPLE_RATE)
        self.max_carry_samples = int(max_carry_seconds * SAMPLE_RATE)
        self.guard_samples = SAMPLE_RATE  # speech ending this close to a block's end is not settled
        self.vad_options = vad_options or whisper_lib.vad_options(max_window_seconds)
        self.decoded_samples = 0
        self.windows_yielded = 0
        self.exhausted = False
        self.peak_buffer_samples = 0  # the most PCM held at once (for tests and metrics)
        try:
            self._container: Any = av.open(str(path), mode="r", options=_OPEN_OPTIONS)
        except av.error.FFmpegError as exc:
            raise InvalidMedia(f"the file could not be read as audio or video: {exc.strerror or exc}") from exc
        try:
            names = set(self._container.format.name.split(","))
            if not names & ALLOWED_FORMATS:
                raise InvalidMedia(f"container format {self._container.format.name!r} is not accepted")
            streams = [s for s in self._container.streams if s.type == "audio"]
            if not streams:
                raise NoAudio("the file has no audio stream")
            self._stream = streams[0]
            header = self._container.duration
            self.duration: float | None = header / 1_000_000 if header is not None else None
            if self.duration is not None and self.duration > max_duration_seconds + 1:
                raise TooLong(
                    f"the media is {self.duration:.0f} s long; this deployment's limit is {max_duration_seconds:.0f} s"
                )
            self.container_name: str = self._container.format.name
            ctx = self._stream.codec_context
            self.codec: str = ctx.name if ctx else "unknown"
            self.channels: int = int(getattr(ctx, "channels", 0) or 0) or 1
            if channel is not None and not 0 <= channel < self.channels:
                raise ValueError(f"channel {channel} of a {self.channels}-channel stream")
        except BaseException:
            self._container.close()
            raise
        self._iterating = False
        self._vad: whisper_lib.SpeechProbabilities | None = None  # made when iteration starts
        self._floor = 0  # where the buffer's speech may start: the carried tail's own start
        self._buf_frame = 0  # the buffer's first Silero frame

    # ---- what the worker reads ------------------------------------------------------------

    @property
    def decoded_seconds(self) -> float:
        """Seconds decoded so far; the exact duration once the stream is exhausted."""
        return self.decoded_samples / SAMPLE_RATE

    @property
    def total_seconds(self) -> float | None:
        """The exact duration when decoding has finished, else the header's (or None)."""
        return self.decoded_seconds if self.exhausted else self.duration

    @property
    def vad_frames(self) -> int:
        """Silero frames (512 samples) whose speech probability was computed so far."""
        return self._vad.frames if self._vad is not None else 0

    @property
    def work_seconds(self) -> float:
        """Source seconds to transcribe, as far as known (for progress)."""
        return self.total_seconds or self.decoded_seconds

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> MediaStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- decoding -------------------------------------------------------------------------

    def windows(self) -> Iterator[Window]:
        """The windows, in source order. Iterate once; closing the iterator closes the file."""
        if self._iterating:
            raise RuntimeError("a MediaStream's windows can be iterated once")
        self._iterating = True
        try:
            yield from self._windows()
        finally:
            self.close()

    def _pcm_blocks(self) -> Iterator[np.ndarray]:
        """Decoded 16 kHz mono float32 in pieces (a frame or so each)."""
        max_samples = int(self.max_duration_seconds * SAMPLE_RATE)
        if self.channel is None:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        else:  # planar: one row per channel, of which this stream keeps its own
            resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
        try:
            for frame in self._container.decode(self._stream):
                for out in resampler.resample(frame):
                    pcm = self._mono(out.to_ndarray())
                    self.decoded_samples += len(pcm)
                    if self.decoded_samples > max_samples:
                        raise TooLong(
                            f"the audio is longer than this deployment's limit of {self.max_duration_seconds:.0f} s"
                        )
                    yield pcm
            for out in resampler.resample(None):
                pcm = self._mono(out.to_ndarray())
                self.decoded_samples += len(pcm)
                yield pcm
        except av.error.FFmpegError as exc:
            if not self.decoded_samples:
                raise InvalidMedia(f"the audio stream could not be decoded: {exc.strerror or exc}") from exc
            # A damaged tail after good audio: transcribe what decoded.

    def _mono(self, samples: np.ndarray) -> np.ndarray:
        if self.channel is None:
            return samples.reshape(-1)
        return np.ascontiguousarray(samples[self.channel] if samples.ndim == 2 else samples.reshape(-1))

    def _windows(self) -> Iterator[Window]:
        pieces: list[np.ndarray] = []
        held = 0  # samples in pieces
        buf_pos = 0  # source sample where pieces start (on Silero's frame grid)
        fed = 0  # source samples given to the VAD so far
        vad = self._vad = whisper_lib.SpeechProbabilities()
        source = self._pcm_blocks()
        done = False
        while not done:
            for pcm in source:
                pieces.append(pcm.astype(np.float32, copy=False))
                held += len(pcm)
                if held >= self.block_samples:
                    break
            else:
                done = True
            if done and self.decoded_samples < MIN_AUDIO_SAMPLES:
                raise NoAudio("the audio stream is empty (less than 0.1 s of sound)")
            buf = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
            self.peak_buffer_samples = max(self.peak_buffer_samples, len(buf))
            vad.feed(buf[fed - buf_pos :], final=done)  # each sample once, the carried tail not again
            fed = buf_pos + len(buf)
            self._buf_frame = buf_pos // whisper_lib.VAD_FRAME
            groups, keep_from = self._cut(buf, final=done)
            for group in groups:
                audio = np.concatenate([buf[a:b] for a, b in group])
                chunks = tuple((buf_pos + a, buf_pos + b) for a, b in group)
                yield Window(index=self.windows_yielded, audio=audio, chunks=chunks, channel=self.channel)
                self.windows_yielded += 1
            # the tail from the frame it starts in: its probabilities are the frames' own
            start = keep_from - keep_from % whisper_lib.VAD_FRAME
            self._floor = keep_from - start
            tail = buf[start:].copy() if not done else np.zeros(0, np.float32)
            buf_pos += start
            vad.forget(buf_pos // whisper_lib.VAD_FRAME)
            pieces, held = ([tail], len(tail)) if len(tail) else ([], 0)
            del buf
        self.exhausted = True

    def _cut(self, buf: np.ndarray, final: bool) -> tuple[list[list[tuple[int, int]]], int]:
        """Windows (lists of chunk ranges in `buf`) that are settled, and where the carried
        tail starts."""
        n = len(buf)
        if n == 0:
            return [], 0
        assert self._vad is not None  # _windows made it
        probs = self._vad.probabilities(self._buf_frame, self._vad.frames)
        speech = whisper_lib.speech_from_probabilities(probs, n, self.vad_options)
        floor = self._floor  # what came before it in the buffer went out in the last windows
        speech = [(max(a, floor), b) for a, b in speech if b > floor]
        if final:
            return self._pack(speech), n
        settled = [c for c in speech if c[1] <= n - self.guard_samples]
        open_start = speech[len(settled)][0] if len(settled) < len(speech) else None
        groups = self._pack(settled)
        if groups and groups[-1][0][0] >= n - self.max_carry_samples:
            # the last window might still take chunks from the next block: carry it
            keep_from = groups.pop()[0][0]
        elif open_start is not None:
            keep_from = open_start
        else:
            last_end = settled[-1][1] if settled else 0
            keep_from = max(last_end, n - self.guard_samples)
        return groups, keep_from

    def _pack(self, chunks: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        """Greedy packing of speech chunks into windows of at most max_window_samples (as
        faster_whisper.vad.collect_chunks), splitting any chunk that is longer on its own."""
        limit = self.max_window_samples
        pieces: list[tuple[int, int]] = []
        for a, b in chunks:
            while b - a > limit:
                pieces.append((a, a + limit))
                a += limit
            if b > a:
                pieces.append((a, b))
        groups: list[list[tuple[int, int]]] = []
        size = 0
        for a, b in pieces:
            if groups and size + (b - a) <= limit:
                groups[-1].append((a, b))
                size += b - a
            else:
                groups.append([(a, b)])
                size = b - a
        return groups


class SplitStream:
    """A multi-channel file as one window stream: each channel decoded and cut on its own,
    channel after channel, each window tagged with its channel (channel identification).
    Stands in for a MediaStream wherever the worker reads one."""

    def __init__(self, streams: list[MediaStream]) -> None:
        self.streams = streams
        first = streams[0]
        self.container_name, self.codec, self.duration = first.container_name, first.codec, first.duration
        self.channels = len(streams)
        self.window_channels: list[int] = []  # the channel of each window yielded, in order

    @property
    def decoded_seconds(self) -> float:
        return max(s.decoded_seconds for s in self.streams)

    @property
    def total_seconds(self) -> float | None:
        return self.decoded_seconds if all(s.exhausted for s in self.streams) else self.duration

    @property
    def work_seconds(self) -> float:
        """Source seconds to transcribe: the duration once per channel."""
        return (self.total_seconds or self.decoded_seconds) * self.channels

    @property
    def exhausted(self) -> bool:
        return all(s.exhausted for s in self.streams)

    def close(self) -> None:
        for s in self.streams:
            s.close()

    def windows(self) -> Iterator[Window]:
        index = 0
        try:
            for channel, stream in enumerate(self.streams):
                offset = channel * (self.duration or 0.0)
                for w in stream.windows():
                    self.window_channels.append(channel)
                    yield Window(index=index, audio=w.audio, chunks=w.chunks, channel=channel, progress_offset=offset)
                    index += 1
        finally:
            self.close()


def open_channels(path: Path, max_duration_seconds: float, **kwargs: Any) -> MediaStream | SplitStream:
    """One stream per channel of a multi-channel file (a SplitStream); a mono file's own."""
    probe = MediaStream(path, max_duration_seconds, **kwargs)
    if probe.channels < 2:
        return probe
    count = probe.channels
    probe.close()
    return SplitStream([MediaStream(path, max_duration_seconds, channel=k, **kwargs) for k in range(count)])


def open_media(path: Path, max_duration_seconds: float, **kwargs: Any) -> MediaStream:
    """Probe a local media file and return its window stream (see MediaStream)."""
    return MediaStream(path, max_duration_seconds, **kwargs)


def open_stream(
    path: Path, max_duration_seconds: float, *, split_channels: bool = False, **kwargs: Any
) -> MediaStream | SplitStream:
    """A job's window stream: its channels apart when asked (and there are several), else
    the whole file mixed to mono. The worker and `batchscribe transcribe` open files so."""
    if split_channels:
        return open_channels(path, max_duration_seconds, **kwargs)
    return open_media(path, max_duration_seconds, **kwargs)


def iter_windows(path: Path, max_duration_seconds: float, **kwargs: Any) -> Iterator[Window]:
    """The windows of a file, opened lazily: every error (including at open) is raised from
    the first `next()`, which suits handing the iterator straight to a Scheduler."""
    with open_media(path, max_duration_seconds, **kwargs) as stream:
        yield from stream.windows()


T = TypeVar("T")


class Prefetched(Generic[T]):
    """Pulls an iterator on a background thread into a queue of `depth` items; `next()`
    never blocks: it gives NOT_READY while the next item is still being produced. PyAV and
    onnxruntime (the VAD) release the GIL, so K jobs decode and cut their audio while the
    accelerator runs batches. Errors from the source are raised from `next()`; `close()`
    stops the thread after its current item, which closes the source, and waits for it."""

    def __init__(self, source: Iterable[T], depth: int = 2) -> None:
        self._source = source
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="window-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        it = iter(self._source)
        try:
            for item in it:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as exc:
            self._put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()

    def _put(self, message: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetched[T]:
        return self

    def __next__(self) -> T | NotReady:
        if self._done:
            raise StopIteration
        try:
            kind, value = self._queue.get_nowait()
        except queue.Empty:
            return NOT_READY
        if kind == "item":
            return value
        self._done = True
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the thread and wait for it (it finishes its current item and closes the
        source), so whoever closes the underlying media next does not pull it from under a
        decode in progress."""
        self._stop.set()
        self._done = True
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=60)

    def __enter__(self) -> Prefetched[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def prefetch(source: Iterable[T], depth: int = 2) -> Prefetched[T]:
    return Prefetched(source, depth)
