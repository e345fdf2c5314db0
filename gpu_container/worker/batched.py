"""How a batch runs: batched Whisper over windows of many jobs, behind one small interface.

`BatchRunner.run(batch)` takes windows (each with its job's decode options) and returns one
`WindowResult` per window: timestamped, sentence-sized segments in source time, words when
asked, and the window's language. Which windows form a batch is the scheduler's business
(scheduler.py); what a job's transcript is, is `assemble`'s. The worker and `batchscribe
transcribe` run the same runners (batches.py); the libraries' steps come from whisper_lib.

- faster-whisper (CTranslate2): batched log-mel (one vectorized call for all windows,
  computed for the next batch while this one runs: `prepare`, features.py), one encoder call,
  one `generate` over the batch with per-window prompts, timestamp tokens off
  (`<|notimestamps|>`, as BatchedInferencePipeline decodes), then word alignment on the same
  encoder output for every window: the words time the segments, cut after each sentence, at a
  pause of more than MAX_WORD_GAP and where the window's speech chunks join (`_split_at_words`);
  the words are kept only for jobs that asked for them. A window (at most 30 s of VAD speech,
  windows.py) is thus decoded exactly once: with timestamp tokens the model often closes a
  segment early (`...<|6.88|><|6.88|>`) and leaves the rest for a second pass, which on a 5 min
  file re-encoded 5 windows of 11 and split each batch's decode in two (18-22 s against 14-16 s
  here; the alignment costs ~12 % of the batch). CTranslate2 needs <|startoftranscript|> at the
  same position in every prompt of a `generate` call, so windows are grouped by the length of
  their initial prompt: a batch whose jobs all have no prompt (the usual case) is one encoder
  call and one generate call; each distinct prompt length costs one more. Language and task
  may differ within a group (fixed positions). `timestamp_tokens=True` decodes as sequential
  whisper does instead (below), for comparison.
- openai-whisper (PyTorch, the reference): batched log-mel, one `embed_audio` call (fp16 on
  CUDA), then whisper's DecodingTask on the encoder output, once per group of identical
  (language, task, prompt), timestamps on (its timestamp rules batched: whisper_lib). Word
  timestamps run whisper.timing per window (it re-runs the model on that window's mel):
  correct, slower, which is why this runner keeps timestamp tokens for segment times.

With timestamp tokens on, as in sequential whisper, so is its seek: when the model closes a
segment and opens another without text (`...<|6.88|><|6.88|>`), it leaves the rest of the
audio for a next window; the windows of a batch that stopped early are decoded again from
that point, together, as one more (smaller) batch, at most MAX_PASSES passes in all.

Both apply Whisper's usual guards per window, with the thresholds of each library's own
transcribe (whisper_lib.DecodingDefaults): a window whose output looks like a loop or is
unlikely is decoded again at rising temperatures (best of N samples), only those windows,
re-batched; a window judged silent yields no segments.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import numpy as np

from batchscribe.models import JobOptions
from batchscribe.whisper_models import SAMPLE_RATE
from gpu_container.worker import whisper_lib
from gpu_container.worker.errors import UnsupportedLanguage
from gpu_container.worker.features import FeaturePrefetch
from gpu_container.worker.gpu_memory import is_out_of_memory
from gpu_container.worker.transcript import Segment, Transcript, Word, ends_sentence, sentence_segments, tidy
from gpu_container.worker.windows import MediaStream, SplitStream, Window


@dataclass(frozen=True)
class DecodeOptions:
    """The per-job options a runner honours for each of the job's windows."""

    language: str | None = None  # None: detect per window (multilingual models)
    task: str = "transcribe"
    initial_prompt: str | None = None
    word_timestamps: bool = False
    share_windows: bool = True  # False: never packed with other jobs' speech (packing.py)

    @classmethod
    def from_job(cls, options: JobOptions) -> DecodeOptions:
        return cls(
            language=None if options.language == "auto" else options.language,
            task=options.task,
            initial_prompt=options.initial_prompt or None,
            word_timestamps=options.word_timestamps,
            share_windows=options.share_windows,
        )


class WindowRequest(Protocol):
    """One window and its job's options (scheduler.Work is one)."""

    @property
    def window(self) -> Window: ...

    @property
    def options(self) -> Any: ...  # DecodeOptions (Any: the scheduler keeps options opaque)


@dataclass(frozen=True)
class WindowSegment:
    start: float  # source seconds
    end: float
    text: str
    words: list[Word] | None = None
    avg_logprob: float = math.nan
    no_speech_prob: float = math.nan
    compression_ratio: float = math.nan
    temperature: float = 0.0


@dataclass(frozen=True)
class WindowResult:
    language: str
    segments: list[WindowSegment] = field(default_factory=list)
    speech_seconds: float = 0.0  # the window's length, to weigh its language


class BatchRunner(Protocol):
    name: str
    model_name: str
    device: str

    def run(self, batch: Sequence[WindowRequest]) -> list[WindowResult]: ...


def runner_for(engine: Any) -> BatchRunner:
    """The batch runner that shares a loaded engine's weights."""
    if engine.name == "faster-whisper":
        return FasterWhisperBatchRunner.from_engine(engine)
    if engine.name == "openai-whisper":
        return OpenAIWhisperBatchRunner.from_engine(engine)
    raise ValueError(f"no batch runner for engine {engine.name!r}")


OnOutOfMemory = Callable[[int, BaseException], int]


def halve(failed: int, _error: BaseException) -> int:
    """The batch size after `failed` windows ran out of memory together: half of them."""
    return max(1, failed // 2)


def run_isolating(
    runner: BatchRunner,
    batch: Sequence[WindowRequest],
    *,
    limit: int | None = None,
    on_oom: OnOutOfMemory = halve,
) -> list[WindowResult | BaseException]:
    """`runner.run` over `batch` in chunks of at most `limit` windows (default: all at once),
    one result or exception per window, in order.

    - A chunk that runs out of GPU memory (gpu_memory.is_out_of_memory) runs again, the same
      windows, in chunks of the smaller size `on_oom(len(chunk), error)` gives (the caller
      keeps it, logs it, counts it). One window alone out of memory is that window's failure.
    - Any other error: each window of the chunk runs alone, so one window's failure (and only
      its job's) is reported, as an exception in its place."""
    out: list[WindowResult | BaseException] = []
    limit = limit or len(batch)
    while len(out) < len(batch):
        chunk = batch[len(out) : len(out) + limit]
        try:
            results: list[WindowResult | BaseException] = list(runner.run(chunk))
        except Exception as exc:
            if not is_out_of_memory(exc):
                results = _one_by_one(runner, chunk, exc)
            elif len(chunk) == 1:
                on_oom(1, exc)
                results = [exc]
            else:
                limit = max(1, min(on_oom(len(chunk), exc), len(chunk) - 1))
                continue
        if len(results) != len(chunk):
            raise ValueError(f"{runner.name} returned {len(results)} results for {len(chunk)} windows")
        out += results
    return out


def _one_by_one(
    runner: BatchRunner, chunk: Sequence[WindowRequest], error: Exception
) -> list[WindowResult | BaseException]:
    """After `chunk` raised `error` (not out of memory): each window alone."""
    if len(chunk) == 1:
        return [error]
    out: list[WindowResult | BaseException] = []
    for item in chunk:
        try:
            out.extend(runner.run([item]))
        except Exception as exc:
            out.append(exc)
    return out


def assemble(results: Sequence[WindowResult], duration: float, *, language: str | None = None) -> Transcript:
    """One job's window results (in source order) as its Transcript: sentence-level
    segments, monotonic and non-overlapping. The language is `language` when given, else
    the one most of the job's speech was detected in."""
    segments = [
        Segment(
            id=0,
            start=s.start,
            end=s.end,
            text=s.text,
            words=s.words,
            avg_logprob=_finite(s.avg_logprob),
            no_speech_prob=_finite(s.no_speech_prob),
            compression_ratio=_finite(s.compression_ratio),
        )
        for r in results
        for s in r.segments
    ]
    if language is None:
        weights: dict[str, float] = defaultdict(float)
        for r in results:
            weights[r.language] += r.speech_seconds or 1e-3
        language = max(weights, key=lambda lang: weights[lang]) if weights else "en"
    return Transcript(language=language, duration=duration, segments=tidy(sentence_segments(segments), duration))


def assemble_channels(
    results: Sequence[WindowResult], channels: Sequence[int], duration: float, *, language: str | None = None
) -> Transcript:
    """A channel-split job's results (`channels[i]` is result i's channel) as one Transcript:
    each channel assembled on its own, then all segments merged by start time, each tagged
    with its channel. Segments of different channels may overlap (people talk at once)."""
    if language is None:
        language = assemble(results, duration).language  # the language most speech was in
    merged: list[Segment] = []
    for channel in sorted(set(channels)):
        own = [r for r, c in zip(results, channels, strict=True) if c == channel]
        merged += [
            s.model_copy(update={"channel": channel}) for s in assemble(own, duration, language=language).segments
        ]
    merged.sort(key=lambda s: (s.start, s.channel or 0))
    return Transcript(
        language=language, duration=duration, segments=[s.model_copy(update={"id": i}) for i, s in enumerate(merged)]
    )


def assemble_stream(results: Sequence[WindowResult], stream: MediaStream | SplitStream) -> Transcript:
    """A job's transcript from the results of its stream's windows (in order): channels
    apart when the stream split them."""
    duration = stream.total_seconds or stream.decoded_seconds
    if isinstance(stream, SplitStream):
        return assemble_channels(results, stream.window_channels, duration)
    return assemble(results, duration)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# ---- shared pieces ---------------------------------------------------------------------------


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def split_timestamped(
    tokens: Sequence[int], timestamp_begin: int, eot: int, duration: float, precision: float = 0.02
) -> list[tuple[float, float, list[int]]]:
    """Whisper's timestamped output `<|t0|> text <|t1|><|t1|> text <|t2|> ...` as
    (start, end, text tokens) in window seconds. Text after the last timestamp (the model
    stopped before closing it) ends at the window's end rather than being dropped."""
    out: list[tuple[float, float, list[int]]] = []
    start: float | None = None
    last = 0.0
    text: list[int] = []
    for token in tokens:
        if token >= timestamp_begin:
            t = min((token - timestamp_begin) * precision, duration)
            if text:
                out.append((start if start is not None else last, t, text))
                text, start = [], None
            else:
                start = t
            last = t
        elif token < eot:
            text.append(token)
    if text:
        out.append((start if start is not None else last, duration, text))
    return [(s, max(e, s), toks) for s, e, toks in out]


def _language_code(language: str | None, multilingual: bool, known: frozenset[str]) -> str | None:
    if not multilingual:
        return "en"  # an English-only model: what the sequential engines do too
    if language is not None and language not in known:
        raise UnsupportedLanguage(f"language {language!r} is not supported by this model")
    return language


@dataclass
class _Decoded:
    """One decode of one window (or of the rest of it)."""

    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    text: str = ""
    ratio: float = 0.0


@dataclass
class _Pass:
    """What one pass over (the rest of) a window gave, in times relative to that audio."""

    language: str
    pieces: list[dict[str, Any]]  # {start, end, text, tokens, words?, avg_logprob, no_speech_prob, temperature}
    resume_at: float | None  # the model stopped before the end: decode again from here


MAX_PASSES = 4  # per window: the first decode, then up to three continuations
MIN_ADVANCE = 0.5  # seconds a continuation must move forward
MIN_REST = 0.5  # seconds left in a window worth another pass (less is the VAD's padding)


def _best(
    decoded: list[_Decoded], again: list[_Decoded], retry: list[int], defaults: whisper_lib.DecodingDefaults
) -> list[int]:
    """Fold a fallback decode into `decoded`; the windows that still need another."""
    still = []
    for i, d in zip(retry, again, strict=True):
        if not defaults.needs_fallback(d.avg_logprob, d.ratio, d.no_speech_prob):
            decoded[i] = d
            continue
        if d.avg_logprob > decoded[i].avg_logprob:
            decoded[i] = d
        still.append(i)
    return still


def _pieces(d: _Decoded, tokenizer: Any, duration: float, defaults: whisper_lib.DecodingDefaults) -> _Pass:
    """Split a decode into timestamped pieces and say whether it stopped early: whisper
    ends with a closing and an opening timestamp (`...<|6.88|><|6.88|>`) when it leaves the
    rest of the audio for the next 30 s window; sequential whisper seeks there, and so do we."""
    if defaults.is_silent(d.avg_logprob, d.no_speech_prob):
        return _Pass(language="", pieces=[], resume_at=None)
    begin = tokenizer.timestamp_begin
    pieces = [
        {
            "start": s,
            "end": e,
            "tokens": t,
            "text": tokenizer.decode(t),
            "avg_logprob": d.avg_logprob,
            "no_speech_prob": d.no_speech_prob,
            "temperature": d.temperature,
        }
        for s, e, t in split_timestamped(d.tokens, begin, tokenizer.eot, duration)
    ]
    tokens = d.tokens
    resume_at = None
    if len(tokens) >= 2 and tokens[-1] >= begin and tokens[-2] >= begin:
        resume_at = (tokens[-2] - begin) * 0.02
    return _Pass(language="", pieces=pieces, resume_at=resume_at)


def _whole(d: _Decoded, tokenizer: Any, duration: float, defaults: whisper_lib.DecodingDefaults) -> _Pass:
    """A decode without timestamp tokens: the window's whole text as one piece (its times come
    from word alignment, `_split_at_words`); it never stops early, so no window is decoded
    twice. Its text is the decode's own (`_Decoded.text`, decoded once in `_generate`)."""
    if defaults.is_silent(d.avg_logprob, d.no_speech_prob):
        return _Pass(language="", pieces=[], resume_at=None)
    tokens = [t for t in d.tokens if t < tokenizer.eot]
    if not tokens or not d.text.strip():
        return _Pass(language="", pieces=[], resume_at=None)
    piece = {
        "start": 0.0,
        "end": duration,
        "tokens": tokens,
        "text": d.text,
        "avg_logprob": d.avg_logprob,
        "no_speech_prob": d.no_speech_prob,
        "temperature": d.temperature,
    }
    return _Pass(language="", pieces=[piece], resume_at=None)


UNPUNCTUATED_WORDS = 8  # a window's text of this many words with no punctuation at all: see unpunctuated
_PUNCTUATION = re.compile(r"[.,!?;:\u2026\u3002\uff0c\uff01\uff1f\u3001\uff1b\uff1a]")


def unpunctuated(text: str) -> bool:
    """Whether a decode without timestamp tokens fell into whisper's unpunctuated mode: at
    least UNPUNCTUATED_WORDS words and not one punctuation mark (tiny.en on espeak speech: 2 of
    13 files, "yesterday after work I went to the market and I bought Apple's bread and tea",
    where decoding with timestamp tokens gave "Yesterday, after work, I went to the market, and
    I bought apples, bread, and tea."). Such a window is decoded again with timestamp tokens:
    its sentences need their full stops to become segments. Scripts written without spaces
    count few words and are never taken for it."""
    return len(text.split()) >= UNPUNCTUATED_WORDS and not _PUNCTUATION.search(text)


MAX_WORD_GAP = 1.5  # seconds between two words that end a segment (as sentence_segments joins)


def _split_at_words(pieces: list[dict[str, Any]], window: Window, keep_words: bool) -> list[dict[str, Any]]:
    """Word-aligned pieces cut into segments: after a word that ends a sentence, where the
    words cross from one speech chunk of the window to the next (a dropped pause), and at a
    pause of more than MAX_WORD_GAP. Each segment's times are its first word's start and last
    word's end; its words stay only when the job asked for them. A piece alignment gave no
    words keeps its own times."""
    out: list[dict[str, Any]] = []
    for piece in pieces:
        words = [w for w in piece.get("words") or [] if str(w["word"]).strip()]
        if not words:
            out.append({**piece, "words": None})
            continue
        runs: list[list[dict[str, Any]]] = [[words[0]]]
        for prev, word in itertools.pairwise(words):
            if (
                ends_sentence(str(prev["word"]))
                or _chunk_of(window, prev) != _chunk_of(window, word)
                or word["start"] - prev["end"] > MAX_WORD_GAP
            ):
                runs.append([])
            runs[-1].append(word)
        for run in runs:
            out.append(
                {
                    **piece,
                    "start": float(run[0]["start"]),
                    "end": float(run[-1]["end"]),
                    "text": "".join(str(w["word"]) for w in run),
                    "words": run if keep_words else None,
                }
            )
    return out


def lane_parts(n: int, lanes: int) -> list[tuple[int, int]]:
    """[start, end) of each lane's consecutive windows of a batch of n: as even as counts go,
    the first lanes one longer; never an empty lane."""
    lanes = max(1, min(lanes, n))
    size, extra = divmod(n, lanes)
    bounds = [0]
    for i in range(lanes):
        bounds.append(bounds[-1] + size + (1 if i < extra else 0))
    return list(itertools.pairwise(bounds))


def _chunk_of(window: Window, word: dict[str, Any]) -> int:
    return window.chunk_at((word["start"] + word["end"]) / 2)


class _WindowLoop:
    """The part both runners share: decode every window of the batch together; windows
    the model left unfinished are decoded again from where it stopped, together, until
    done (at most `max_passes` passes); then times go back to the source.

    Knobs (defaults: the library's own decoding, `defaults`): `temperatures` the fallback
    ladder (just (0.0,): greedy/beam only, no fallback), `max_passes`, `max_tokens` per
    window (None: the model's limit). The GPU benchmark sets them to measure fixed work."""

    defaults: whisper_lib.DecodingDefaults
    temperatures: tuple[float, ...]
    max_passes: int = MAX_PASSES
    max_tokens: int | None = None
    segments_by_words: bool = False  # the pieces are whole windows' words: cut them (_split_at_words)
    steps: Any  # the library's steps (whisper_lib): features, encode, decode, tokenizers

    def __init__(self, model: Any, *, model_name: str = "", device: str = "cpu", beam_size: int | None = 5) -> None:
        raise NotImplementedError

    @classmethod
    def from_engine(cls, engine: Any, **kwargs: Any) -> Self:
        """Wrap a loaded engine (engines.py): the same weights, no second copy."""
        kwargs.setdefault("beam_size", engine.beam_size)
        return cls(engine.model, model_name=engine.model_name, device=engine.device, **kwargs)

    def tune(self, *, temperatures: tuple[float, ...] | None = None, max_passes: int | None = None,
             max_tokens: int | None = None) -> _WindowLoop:  # fmt: skip
        if temperatures is not None:
            self.temperatures = temperatures
        if max_passes is not None:
            self.max_passes = max_passes
        if max_tokens is not None:
            self.max_tokens = max_tokens
        return self

    def _fallbacks(self, decoded: list[_Decoded], decode: Any) -> None:
        """Windows that need it decoded again at each higher temperature, in place
        (`decode(indices, temperature)` decodes those windows again)."""
        d = self.defaults
        retry = [i for i, x in enumerate(decoded) if d.needs_fallback(x.avg_logprob, x.ratio, x.no_speech_prob)]
        for temperature in self.temperatures[1:]:
            if not retry:
                break
            retry = _best(decoded, decode(retry, temperature), retry, d)

    def _pass(self, items: list[WindowRequest], audios: list[np.ndarray], languages: list[str | None]) -> list[_Pass]:
        raise NotImplementedError

    def _languages(self, items: Sequence[WindowRequest]) -> list[str | None]:
        st = self.steps
        return [_language_code(item.options.language, st.multilingual, st.language_codes) for item in items]

    def run(self, batch: Sequence[WindowRequest]) -> list[WindowResult]:
        if not batch:
            return []
        n = len(batch)
        languages = self._languages(batch)
        pieces: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        cursor = [0.0] * n
        todo = list(range(n))
        for round_ in range(self.max_passes):
            if not todo:
                break
            audios = [batch[i].window.audio[round(cursor[i] * SAMPLE_RATE) :] for i in todo]
            passes = self._pass([batch[i] for i in todo], audios, [languages[i] for i in todo])
            resume = []
            for i, audio, p in zip(todo, audios, passes, strict=True):
                languages[i] = languages[i] or p.language or None
                offset = cursor[i]
                for piece in p.pieces:
                    piece["start"] += offset
                    piece["end"] += offset
                    for w in piece.get("words") or []:
                        w["start"] += offset
                        w["end"] += offset
                    pieces[i].append(piece)
                rest = len(audio) / SAMPLE_RATE
                if (
                    p.resume_at is not None
                    and p.resume_at >= MIN_ADVANCE
                    and rest - p.resume_at >= MIN_REST
                    and round_ < self.max_passes - 1
                ):
                    cursor[i] += p.resume_at
                    resume.append(i)
            todo = resume
        if self.segments_by_words:  # in window time now, every pass's offset added
            pieces = [_split_at_words(pieces[i], batch[i].window, batch[i].options.word_timestamps) for i in range(n)]
        return [
            _to_result(batch[i].window, languages[i] or "en", pieces[i], batch[i].options.word_timestamps)
            for i in range(n)
        ]


def _to_result(window: Window, language: str, pieces: list[dict[str, Any]], with_words: bool) -> WindowResult:
    """Window-relative pieces -> source-timed segments."""
    segments: list[WindowSegment] = []
    for piece in pieces:
        text = piece["text"]
        if not text.strip():
            continue
        words: list[Word] | None = None
        if with_words:
            words = []
            for w in piece.get("words") or []:
                s, e = window.span_to_source(float(w["start"]), float(w["end"]))
                words.append(Word(start=s, end=e, word=w["word"], probability=float(w["probability"])))
        if words:
            start, end = words[0].start, words[-1].end
        else:
            start = window.to_source(float(piece["start"]))
            end = window.to_source(float(piece["end"]), is_end=True)
        segments.append(
            WindowSegment(
                start=start,
                end=max(end, start),
                text=text,
                words=words,
                avg_logprob=float(piece["avg_logprob"]),
                no_speech_prob=float(piece["no_speech_prob"]),
                compression_ratio=compression_ratio(text),
                temperature=float(piece["temperature"]),
            )
        )
    return WindowResult(language=language, segments=segments, speech_seconds=window.duration)


# ---- faster-whisper (CTranslate2) ------------------------------------------------------------


class FasterWhisperBatchRunner(_WindowLoop):
    """Batched faster-whisper over windows; shares a loaded `faster_whisper.WhisperModel`.

    With `lanes` > 1 (the engine's CTranslate2 replicas on a CPU: engines.FasterWhisperEngine)
    a batch is cut into that many runs of consecutive windows, each decoded as a batch of its
    own on its own replica, side by side; the results come back in the batch's order."""

    name = "faster-whisper"

    def __init__(
        self,
        model: Any,
        *,
        model_name: str = "",
        device: str = "cpu",
        beam_size: int = 5,
        timestamp_tokens: bool = False,
        lanes: int = 1,
    ) -> None:
        self.steps = whisper_lib.FasterWhisperSteps(model)
        self.model_name = model_name
        self.device = device
        self.beam_size = max(1, beam_size or 1)
        self.defaults = whisper_lib.faster_whisper_defaults()
        self.temperatures = self.defaults.temperatures
        self.features = FeaturePrefetch(self.steps.features)
        self.timestamp_tokens = timestamp_tokens
        self.segments_by_words = not timestamp_tokens
        self.lanes = max(1, lanes)
        self._lanes = ThreadPoolExecutor(self.lanes - 1, thread_name_prefix="lane") if self.lanes > 1 else None

    @classmethod
    def from_engine(cls, engine: Any, **kwargs: Any) -> Self:
        kwargs.setdefault("lanes", getattr(engine, "lanes", 1))
        return super().from_engine(engine, **kwargs)

    def run(self, batch: Sequence[WindowRequest]) -> list[WindowResult]:
        parts = lane_parts(len(batch), self.lanes)
        if self._lanes is None or len(parts) < 2:
            return super().run(batch)
        run = super().run
        others = [self._lanes.submit(run, batch[a:b]) for a, b in parts[1:]]
        try:
            first = run(batch[parts[0][0] : parts[0][1]])
        finally:
            wait(others)  # no lane still running when the batch fails (run_isolating cuts it)
        return first + [result for lane in others for result in lane.result()]

    def prepare(self, batch: Sequence[WindowRequest]) -> None:
        """Start the log-mel features of the next batch's windows beside the model (one slot):
        `run` takes them ready."""
        self.features.prepare([item.window.audio for item in batch])

    def _pass(self, items: list[WindowRequest], audios: list[np.ndarray], languages: list[str | None]) -> list[_Pass]:
        st = self.steps
        features = self.features.take(audios)
        plain = st.tokenizer("en", "transcribe")
        previous = [
            plain.encode(" " + item.options.initial_prompt.strip()) if item.options.initial_prompt else []
            for item in items
        ]
        # CTranslate2 wants <|startoftranscript|> at one position in a generate call
        groups: dict[int, list[int]] = defaultdict(list)
        for i, prev in enumerate(previous):
            groups[len(st.prompt(plain, prev, timestamps=self.timestamp_tokens))].append(i)
        out: list[_Pass | None] = [None] * len(items)
        for idx in groups.values():
            done = self._pass_group(
                [items[i] for i in idx],
                [audios[i] for i in idx],
                features[idx],
                [previous[i] for i in idx],
                [languages[i] for i in idx],
            )
            for i, p in zip(idx, done, strict=True):
                out[i] = p
        return [p for p in out if p is not None]

    def _pass_group(
        self,
        items: list[WindowRequest],
        audios: list[np.ndarray],
        features: np.ndarray,
        previous: list[list[int]],
        languages: list[str | None],
    ) -> list[_Pass]:
        st = self.steps
        encoder_output = st.encode(features)
        if any(lang is None for lang in languages):
            detected = st.detect_languages(encoder_output)
            languages = [lang or detected[i] for i, lang in enumerate(languages)]
        tokenizers = [st.tokenizer(str(lang), item.options.task) for lang, item in zip(languages, items, strict=True)]
        prompts = [
            st.prompt(tok, p, timestamps=self.timestamp_tokens) for tok, p in zip(tokenizers, previous, strict=True)
        ]

        decoded = self._generate(encoder_output, prompts, tokenizers[0], temperature=0.0)
        self._fallbacks(
            decoded,
            lambda retry, t: self._generate(
                st.encoded_rows(encoder_output, features, retry), [prompts[i] for i in retry], tokenizers[0], t
            ),
        )
        durations = [len(a) / st.sampling_rate for a in audios]
        split = _pieces if self.timestamp_tokens else _whole
        passes = [
            split(d, tok, min(dur, st.chunk_length), self.defaults)
            for d, tok, dur in zip(decoded, tokenizers, durations, strict=True)
        ]
        bare = [
            i for i, d in enumerate(decoded) if not self.timestamp_tokens and passes[i].pieces and unpunctuated(d.text)
        ]
        if bare:  # whisper's unpunctuated mode: those windows decoded again, timestamp tokens on
            timed = [st.prompt(tokenizers[i], previous[i]) for i in bare]
            again = self._generate(
                st.encoded_rows(encoder_output, features, bare), timed, tokenizers[bare[0]], temperature=0.0
            )
            for i, d in zip(bare, again, strict=True):
                if not self.defaults.needs_fallback(d.avg_logprob, d.ratio, d.no_speech_prob):
                    passes[i] = _pieces(d, tokenizers[i], min(durations[i], st.chunk_length), self.defaults)
        for p, lang in zip(passes, languages, strict=True):
            p.language = str(lang)
        wanted = [
            i
            for i, it in enumerate(items)
            if (it.options.word_timestamps or not self.timestamp_tokens) and passes[i].pieces
        ]
        if wanted:
            frames = [min(st.nb_max_frames, max(1, round(d * st.frames_per_second))) for d in durations]
            self._add_words(encoder_output, tokenizers, [p.pieces for p in passes], frames, wanted)
        return passes

    def _generate(
        self, encoder_output: Any, prompts: list[list[int]], tokenizer: Any, temperature: float
    ) -> list[_Decoded]:
        generated = self.steps.generate(
            encoder_output,
            prompts,
            tokenizer,
            temperature=temperature,
            beam_size=self.beam_size,
            defaults=self.defaults,
            max_new_tokens=self.max_tokens,
        )
        decoded = []
        for g in generated:
            text = tokenizer.decode([t for t in g.tokens if t < tokenizer.eot])
            decoded.append(
                _Decoded(
                    tokens=g.tokens,
                    avg_logprob=g.avg_logprob,
                    no_speech_prob=g.no_speech_prob,
                    temperature=temperature,
                    text=text,
                    ratio=compression_ratio(text.strip()),
                )
            )
        return decoded

    def _add_words(
        self,
        encoder_output: Any,
        tokenizers: list[Any],
        pieces: list[list[dict[str, Any]]],
        frames: list[int],
        wanted: list[int],
    ) -> None:
        """Word alignment over the group's encoder output, once per start sequence
        (language, task) among the windows that asked for words. Windows not in the call
        align no tokens (cheap); each window sits on its own 30 s stretch of one timeline so
        the heuristics about pauses see real pauses only."""
        st = self.steps
        span = st.chunk_length
        by_sequence: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i in wanted:
            by_sequence[tuple(tokenizers[i].sot_sequence)].append(i)
        for members in by_sequence.values():
            chosen = set(members)
            segments = []
            for i, window_pieces in enumerate(pieces):
                offset = i * span
                seek = round(offset * st.frames_per_second)
                subs = [
                    {
                        "seek": seek,
                        "start": p["start"] + offset,
                        "end": p["end"] + offset,
                        "tokens": p["tokens"] if i in chosen else [],
                    }
                    for p in window_pieces
                ] or [{"seek": seek, "start": offset, "end": offset, "tokens": []}]
                segments.append(subs)
            st.add_word_timestamps(segments, tokenizers[members[0]], encoder_output, frames, self.defaults)
            for i in members:
                offset = i * span
                for piece, sub in zip(pieces[i], segments[i], strict=True):
                    piece["start"], piece["end"] = sub["start"] - offset, sub["end"] - offset
                    piece["words"] = [
                        {**w, "start": w["start"] - offset, "end": w["end"] - offset} for w in sub.get("words", [])
                    ]


# ---- openai-whisper (PyTorch) --------------------------------------------------------------


class OpenAIWhisperBatchRunner(_WindowLoop):
    """Batched openai-whisper over windows; shares a loaded `whisper.model.Whisper`."""

    name = "openai-whisper"

    def __init__(self, model: Any, *, model_name: str = "", device: str = "cpu", beam_size: int | None = 5) -> None:
        self.steps = whisper_lib.OpenAIWhisperSteps(model, fp16=device == "cuda")
        self.model_name = model_name
        self.device = device
        self.beam_size = beam_size if beam_size and beam_size > 1 else None
        self.defaults = whisper_lib.openai_whisper_defaults()
        self.temperatures = self.defaults.temperatures

    def _pass(self, items: list[WindowRequest], audios: list[np.ndarray], languages: list[str | None]) -> list[_Pass]:
        mel_batch, frames = self.steps.log_mels(audios)
        features = self.steps.embed(mel_batch)
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for i, (item, lang) in enumerate(zip(items, languages, strict=True)):
            groups[(lang, item.options.task, item.options.initial_prompt)].append(i)
        out: list[_Pass | None] = [None] * len(items)
        for (lang, task, prompt), idx in groups.items():
            decoded = self._decode(features[idx], lang, task, prompt)
            for i, (d, detected) in zip(idx, decoded, strict=True):
                out[i] = self._split(items[i], audios[i], detected, d, task, mel_batch[i], frames[i])
        return [p for p in out if p is not None]

    def _decode(self, features: Any, language: str | None, task: str, prompt: str | None) -> list[tuple[_Decoded, str]]:
        def decode(feats: Any, temperature: float) -> list[whisper_lib.Decoded]:
            return self.steps.decode(
                feats,
                language=language,
                task=task,
                prompt=prompt,
                temperature=temperature,
                beam_size=self.beam_size,
                defaults=self.defaults,
                max_new_tokens=self.max_tokens,
            )

        def ours(results: list[whisper_lib.Decoded], temperature: float) -> list[_Decoded]:
            return [
                _Decoded(
                    tokens=r.tokens,
                    avg_logprob=r.avg_logprob,
                    no_speech_prob=r.no_speech_prob,
                    temperature=temperature,
                    text=r.text,
                    ratio=r.compression_ratio,
                )
                for r in results
            ]

        first = decode(features, 0.0)
        decoded = ours(first, 0.0)
        self._fallbacks(decoded, lambda retry, t: ours(decode(features[retry], t), t))
        return list(zip(decoded, [r.language for r in first], strict=True))

    def _split(
        self, item: WindowRequest, audio: np.ndarray, language: str, d: _Decoded, task: str, mel: Any, frames: int
    ) -> _Pass:
        st = self.steps
        tokenizer = st.tokenizer(language or "en", task)
        duration = min(len(audio) / st.sampling_rate, st.chunk_length)
        p = _pieces(d, tokenizer, duration, self.defaults)
        p.language = language or "en"
        if item.options.word_timestamps and p.pieces:
            st.add_word_timestamps(p.pieces, tokenizer, mel, frames, self.defaults)
        return p
