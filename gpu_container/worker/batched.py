"""How a batch runs: batched Whisper over windows of many jobs, behind one small interface.

`BatchRunner.run(batch)` takes windows (each with its job's decode options) and returns one
`WindowResult` per window: timestamped, sentence-sized segments in source time, words when
asked, and the window's language. Which windows form a batch is the scheduler's business
(scheduler.py); what a job's transcript is, is `assemble`'s.

- faster-whisper (CTranslate2): batched log-mel (`model.feature_extractor`), one encoder
  call, one `generate` over the batch with per-window prompts (timestamps on, so a window
  yields sentence-level segments, not one 30 s segment), then `add_word_timestamps` on the
  same encoder output where asked — the steps of BatchedInferencePipeline, with per-window
  options. CTranslate2 needs <|startoftranscript|> at the same position in every prompt of a
  `generate` call, so windows are grouped by the length of their initial prompt: a batch
  whose jobs all have no prompt (the usual case) is one encoder call and one generate call;
  each distinct prompt length costs one more. Language and task may differ within a group
  (they sit at fixed positions).
- openai-whisper (PyTorch, the reference): batched log-mel, one `embed_audio` call (fp16 on
  CUDA), then whisper's DecodingTask (what `model.decode` runs; it decodes a batch) on the
  encoder output, once per group of identical (language, task, prompt), timestamps on. Word timestamps run
  whisper.timing per window (it re-runs the model on that window's mel): correct, slower.

Timestamps are on, as in sequential whisper, and so is its seek: when the model closes a
segment and opens another without text (`...<|6.88|><|6.88|>`), it leaves the rest of the
audio for a next window; the windows of a batch that stopped early are decoded again from
that point, together, as one more (smaller) batch, at most MAX_PASSES passes in all.

openai-whisper 20250625's DecodingTask repeats the prompt tokens but not the audio features
for beam search / best-of, which only broadcasts for a batch of one; `_decoding_task` is a
small subclass that repeats the features too.

Both apply Whisper's usual guards per window: a window whose output looks like a loop
(compression ratio > 2.4) or is unlikely (average log-probability < -1) is decoded again at
rising temperatures (best of 5 samples), only those windows, re-batched; a window judged
silent (no-speech probability > 0.6 and log-probability < -1) yields no segments.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from batchscribe.models import JobOptions
from gpu_container.worker.errors import UnsupportedLanguage
from gpu_container.worker.transcript import Segment, Transcript, Word, sentence_segments, tidy
from gpu_container.worker.windows import Window

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
BEST_OF = 5
MAX_INITIAL_TIMESTAMP = 1.0


@dataclass(frozen=True)
class DecodeOptions:
    """The per-job options a runner honours for each of the job's windows."""

    language: str | None = None  # None: detect per window (multilingual models)
    task: str = "transcribe"
    initial_prompt: str | None = None
    word_timestamps: bool = False

    @classmethod
    def from_job(cls, options: JobOptions) -> DecodeOptions:
        return cls(
            language=None if options.language == "auto" else options.language,
            task=options.task,
            initial_prompt=options.initial_prompt or None,
            word_timestamps=options.word_timestamps,
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


def run_isolating(runner: BatchRunner, batch: Sequence[WindowRequest]) -> list[WindowResult | BaseException]:
    """`runner.run(batch)`; if the batch as a whole raises, each window is run alone, so
    one window's failure (and only its job) is reported, as an exception in its place."""
    try:
        return list(runner.run(batch))
    except Exception as exc:
        if len(batch) == 1:
            return [exc]
    out: list[WindowResult | BaseException] = []
    for item in batch:
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


def _needs_fallback(avg_logprob: float, ratio: float, no_speech_prob: float) -> bool:
    if _is_silent(avg_logprob, no_speech_prob):
        return False
    return ratio > COMPRESSION_RATIO_THRESHOLD or avg_logprob < LOG_PROB_THRESHOLD


def _is_silent(avg_logprob: float, no_speech_prob: float) -> bool:
    return no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD


def _language_code(language: str | None, multilingual: bool, known: Any) -> str | None:
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
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"  # noqa: RUF001 - faster-whisper's defaults


def _best(decoded: list[_Decoded], again: list[_Decoded], retry: list[int]) -> list[int]:
    """Fold a fallback decode into `decoded`; the windows that still need another."""
    still = []
    for i, d in zip(retry, again, strict=True):
        if not _needs_fallback(d.avg_logprob, d.ratio, d.no_speech_prob):
            decoded[i] = d
            continue
        if d.avg_logprob > decoded[i].avg_logprob:
            decoded[i] = d
        still.append(i)
    return still


def _pieces(d: _Decoded, timestamp_begin: int, eot: int, duration: float, decode: Any) -> _Pass:
    """Split a decode into timestamped pieces and say whether it stopped early: whisper
    ends with a closing and an opening timestamp (`...<|6.88|><|6.88|>`) when it leaves the
    rest of the audio for the next 30 s window; sequential whisper seeks there, and so do we."""
    if _is_silent(d.avg_logprob, d.no_speech_prob):
        return _Pass(language="", pieces=[], resume_at=None)
    pieces = [
        {
            "start": s,
            "end": e,
            "tokens": t,
            "text": decode(t),
            "avg_logprob": d.avg_logprob,
            "no_speech_prob": d.no_speech_prob,
            "temperature": d.temperature,
        }
        for s, e, t in split_timestamped(d.tokens, timestamp_begin, eot, duration)
    ]
    tokens = d.tokens
    resume_at = None
    if len(tokens) >= 2 and tokens[-1] >= timestamp_begin and tokens[-2] >= timestamp_begin:
        resume_at = (tokens[-2] - timestamp_begin) * 0.02
    return _Pass(language="", pieces=pieces, resume_at=resume_at)


class _WindowLoop:
    """The part both runners share: decode every window of the batch together; windows
    the model left unfinished are decoded again from where it stopped, together, until
    done (at most `max_passes` passes); then times go back to the source.

    Knobs (defaults: Whisper's usual decoding): `temperatures` the fallback ladder (just
    (0.0,): greedy/beam only, no fallback), `max_passes`, `max_tokens` per window (None: the
    model's limit). The GPU benchmark sets them to measure fixed work per window."""

    temperatures: tuple[float, ...] = TEMPERATURES
    max_passes: int = MAX_PASSES
    max_tokens: int | None = None

    def tune(self, *, temperatures: tuple[float, ...] | None = None, max_passes: int | None = None,
             max_tokens: int | None = None) -> _WindowLoop:  # fmt: skip
        if temperatures is not None:
            self.temperatures = temperatures
        if max_passes is not None:
            self.max_passes = max_passes
        if max_tokens is not None:
            self.max_tokens = max_tokens
        return self

    def _pass(self, items: list[WindowRequest], audios: list[np.ndarray], languages: list[str | None]) -> list[_Pass]:
        raise NotImplementedError

    def _languages(self, items: Sequence[WindowRequest]) -> list[str | None]:
        raise NotImplementedError

    def run(self, batch: Sequence[WindowRequest]) -> list[WindowResult]:
        from gpu_container.worker.media import SAMPLE_RATE

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
    """Batched faster-whisper over windows; shares a loaded `faster_whisper.WhisperModel`."""

    name = "faster-whisper"

    def __init__(self, model: Any, *, model_name: str = "", device: str = "cpu", beam_size: int = 5) -> None:
        self.model = model
        self.model_name = model_name
        self.device = device
        self.beam_size = max(1, beam_size or 1)
        self._tokenizers: dict[tuple[str, str], Any] = {}

    @classmethod
    def from_engine(cls, engine: Any, **kwargs: Any) -> FasterWhisperBatchRunner:
        """Wrap a loaded engines.FasterWhisperEngine: the same weights, no second copy."""
        kwargs.setdefault("beam_size", engine.beam_size)
        return cls(engine.model, model_name=engine.model_name, device=engine.device, **kwargs)

    def _tokenizer(self, language: str, task: str) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        key = (language, task)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(
                self.model.hf_tokenizer, self.model.model.is_multilingual, task=task, language=language
            )
        return self._tokenizers[key]

    def _languages(self, items: Sequence[WindowRequest]) -> list[str | None]:
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        multilingual = self.model.model.is_multilingual
        return [_language_code(item.options.language, multilingual, _LANGUAGE_CODES) for item in items]

    def _pass(self, items: list[WindowRequest], audios: list[np.ndarray], languages: list[str | None]) -> list[_Pass]:
        from faster_whisper.audio import pad_or_trim

        m = self.model
        features = np.stack([pad_or_trim(m.feature_extractor(audio)[..., :-1]) for audio in audios])
        plain = self._tokenizer("en", "transcribe")
        previous = [
            plain.encode(" " + item.options.initial_prompt.strip()) if item.options.initial_prompt else []
            for item in items
        ]
        # CTranslate2 wants <|startoftranscript|> at one position in a generate call
        groups: dict[int, list[int]] = defaultdict(list)
        for i, prev in enumerate(previous):
            groups[len(m.get_prompt(plain, prev))].append(i)
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
        m = self.model
        encoder_output = m.encode(features)
        if any(lang is None for lang in languages):
            detected = m.model.detect_language(encoder_output)
            languages = [lang or detected[i][0][0][2:-2] for i, lang in enumerate(languages)]
        tokenizers = [
            self._tokenizer(str(lang), item.options.task) for lang, item in zip(languages, items, strict=True)
        ]
        prompts = [m.get_prompt(tok, p, without_timestamps=False) for tok, p in zip(tokenizers, previous, strict=True)]

        decoded = self._generate(encoder_output, prompts, tokenizers[0], temperature=0.0)
        retry = [i for i, d in enumerate(decoded) if _needs_fallback(d.avg_logprob, d.ratio, d.no_speech_prob)]
        for temperature in self.temperatures[1:]:
            if not retry:
                break
            again = self._generate(m.encode(features[retry]), [prompts[i] for i in retry], tokenizers[0], temperature)
            retry = _best(decoded, again, retry)

        durations = [len(a) / m.feature_extractor.sampling_rate for a in audios]
        passes = [
            _pieces(d, tok.timestamp_begin, tok.eot, min(dur, m.feature_extractor.chunk_length), tok.decode)
            for d, tok, dur in zip(decoded, tokenizers, durations, strict=True)
        ]
        for p, lang in zip(passes, languages, strict=True):
            p.language = str(lang)
        wanted = [i for i, it in enumerate(items) if it.options.word_timestamps and passes[i].pieces]
        if wanted:
            frames = [min(m.feature_extractor.nb_max_frames, max(1, round(d * m.frames_per_second))) for d in durations]
            self._add_words(encoder_output, tokenizers, [p.pieces for p in passes], frames, wanted)
        return passes

    def _generate(
        self, encoder_output: Any, prompts: list[list[int]], tokenizer: Any, temperature: float
    ) -> list[_Decoded]:
        from faster_whisper.transcribe import get_suppressed_tokens

        m = self.model
        kwargs: dict[str, Any] = (
            {"beam_size": self.beam_size}
            if temperature == 0
            else {"beam_size": 1, "num_hypotheses": BEST_OF, "sampling_topk": 0, "sampling_temperature": temperature}
        )
        outputs = m.model.generate(
            encoder_output,
            prompts,
            max_length=min(m.max_length, len(prompts[0]) + self.max_tokens) if self.max_tokens else m.max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])),
            max_initial_timestamp_index=round(MAX_INITIAL_TIMESTAMP / m.time_precision),
            **kwargs,
        )
        decoded = []
        for out in outputs:
            tokens = list(out.sequences_ids[0])
            # scores are normalised by length (length_penalty 1): back to a sum, as faster-whisper does
            avg_logprob = out.scores[0] * len(tokens) / (len(tokens) + 1)
            text = tokenizer.decode([t for t in tokens if t < tokenizer.eot])
            decoded.append(
                _Decoded(
                    tokens=tokens,
                    avg_logprob=float(avg_logprob),
                    no_speech_prob=float(out.no_speech_prob),
                    temperature=temperature,
                    text=text,
                    ratio=compression_ratio(text),
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
        """faster-whisper's add_word_timestamps over the group's encoder output, once per
        start sequence (language, task) among the windows that asked for words. Windows
        not in the call align no tokens (cheap); each window sits on its own 30 s stretch
        of one timeline so the heuristics about pauses see real pauses only."""
        m = self.model
        span = m.feature_extractor.chunk_length
        by_sequence: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i in wanted:
            by_sequence[tuple(tokenizers[i].sot_sequence)].append(i)
        for members in by_sequence.values():
            chosen = set(members)
            segments = []
            for i, window_pieces in enumerate(pieces):
                offset = i * span
                seek = round(offset * m.frames_per_second)
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
            m.add_word_timestamps(
                segments,
                tokenizers[members[0]],
                encoder_output,
                frames,
                PREPEND_PUNCTUATIONS,
                APPEND_PUNCTUATIONS,
                0.0,
            )
            for i in members:
                offset = i * span
                for piece, sub in zip(pieces[i], segments[i], strict=True):
                    piece["start"], piece["end"] = sub["start"] - offset, sub["end"] - offset
                    piece["words"] = [
                        {**w, "start": w["start"] - offset, "end": w["end"] - offset} for w in sub.get("words", [])
                    ]


# ---- openai-whisper (PyTorch) --------------------------------------------------------------


def _decoding_task(model: Any, options: Any) -> Any:
    """whisper.decoding.DecodingTask for a batch of encoded windows. openai-whisper
    20250625 repeats the tokens, not the audio features, for beam search and best-of, which
    only broadcasts for a batch of one; this subclass repeats the features too."""
    from whisper.decoding import DecodingTask

    class BatchedDecodingTask(DecodingTask):
        def _get_audio_features(self, mel: Any) -> Any:
            features = super()._get_audio_features(mel)
            return features.repeat_interleave(self.n_group, dim=0) if self.n_group > 1 else features

        def _detect_language(self, audio_features: Any, tokens: Any) -> Any:
            return super()._detect_language(audio_features[:: self.n_group], tokens)

    return BatchedDecodingTask(model, options)


class OpenAIWhisperBatchRunner(_WindowLoop):
    """Batched openai-whisper over windows; shares a loaded `whisper.model.Whisper`."""

    name = "openai-whisper"

    def __init__(self, model: Any, *, model_name: str = "", device: str = "cpu", beam_size: int | None = 5) -> None:
        self.model = model
        self.model_name = model_name
        self.device = device
        self.beam_size = beam_size if beam_size and beam_size > 1 else None
        self.fp16 = device == "cuda"

    @classmethod
    def from_engine(cls, engine: Any, **kwargs: Any) -> OpenAIWhisperBatchRunner:
        """Wrap a loaded engines.OpenAIWhisperEngine: the same weights, no second copy."""
        kwargs.setdefault("beam_size", engine.beam_size)
        return cls(engine.model, model_name=engine.model_name, device=engine.device, **kwargs)

    def _languages(self, items: Sequence[WindowRequest]) -> list[str | None]:
        from whisper.tokenizer import LANGUAGES

        multilingual = self.model.is_multilingual
        return [_language_code(item.options.language, multilingual, LANGUAGES) for item in items]

    def _pass(self, items: list[WindowRequest], audios: list[np.ndarray], languages: list[str | None]) -> list[_Pass]:
        import torch
        from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim

        model = self.model
        dtype = torch.float16 if self.fp16 else torch.float32
        mels, frames = [], []
        for audio in audios:
            samples = torch.from_numpy(np.ascontiguousarray(audio)).to(model.device)
            mel = log_mel_spectrogram(samples, model.dims.n_mels, padding=N_SAMPLES)
            content = min(N_FRAMES, mel.shape[-1] - N_FRAMES)  # as whisper.transcribe cuts a window
            mels.append(pad_or_trim(mel[:, :content], N_FRAMES).to(dtype))
            frames.append(max(1, content))
        mel_batch = torch.stack(mels)
        with torch.no_grad():
            features = model.embed_audio(mel_batch)
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for i, (item, lang) in enumerate(zip(items, languages, strict=True)):
            groups[(lang, item.options.task, item.options.initial_prompt)].append(i)
        out: list[_Pass | None] = [None] * len(items)
        for (lang, task, prompt), idx in groups.items():
            decoded = self._decode(features[idx], lang, task, prompt)
            for i, (d, detected) in zip(idx, decoded, strict=True):
                out[i] = self._split(items[i], audios[i], detected, d, task, mel_batch[i], frames[i])
        return [p for p in out if p is not None]

    def _options(self, language: str | None, task: str, prompt: str | None, temperature: float) -> Any:
        import whisper

        return whisper.DecodingOptions(
            task=task,
            language=language,
            temperature=temperature,
            beam_size=self.beam_size if temperature == 0 else None,
            best_of=BEST_OF if temperature > 0 else None,
            prompt=prompt,
            without_timestamps=False,
            max_initial_timestamp=MAX_INITIAL_TIMESTAMP,
            fp16=self.fp16,
            sample_len=self.max_tokens,
        )

    def _decode(self, features: Any, language: str | None, task: str, prompt: str | None) -> list[tuple[_Decoded, str]]:
        import torch

        def decode(feats: Any, temperature: float) -> list[_Decoded]:
            with torch.no_grad():
                results = _decoding_task(self.model, self._options(language, task, prompt, temperature)).run(feats)
            languages.extend(r.language for r in results)
            return [
                _Decoded(
                    tokens=list(r.tokens),
                    avg_logprob=float(r.avg_logprob),
                    no_speech_prob=float(r.no_speech_prob),
                    temperature=temperature,
                    text=r.text,
                    ratio=float(r.compression_ratio),
                )
                for r in results
            ]

        languages: list[str] = []
        decoded = decode(features, 0.0)
        detected = list(languages)
        retry = [i for i, d in enumerate(decoded) if _needs_fallback(d.avg_logprob, d.ratio, d.no_speech_prob)]
        for temperature in self.temperatures[1:]:
            if not retry:
                break
            retry = _best(decoded, decode(features[retry], temperature), retry)
        return list(zip(decoded, detected, strict=True))

    def _split(
        self, item: WindowRequest, audio: np.ndarray, language: str, d: _Decoded, task: str, mel: Any, frames: int
    ) -> _Pass:
        from whisper.audio import CHUNK_LENGTH, SAMPLE_RATE
        from whisper.timing import add_word_timestamps
        from whisper.tokenizer import get_tokenizer

        model = self.model
        tokenizer = get_tokenizer(
            model.is_multilingual, num_languages=model.num_languages, language=language or "en", task=task
        )
        duration = min(len(audio) / SAMPLE_RATE, CHUNK_LENGTH)
        p = _pieces(d, tokenizer.timestamp_begin, tokenizer.eot, duration, tokenizer.decode)
        p.language = language or "en"
        if item.options.word_timestamps and p.pieces:
            for piece in p.pieces:
                piece["seek"] = 0
            add_word_timestamps(
                segments=p.pieces,
                model=model,
                tokenizer=tokenizer,
                mel=mel,
                num_frames=frames,
                prepend_punctuations=PREPEND_PUNCTUATIONS,
                append_punctuations=APPEND_PUNCTUATIONS,
                last_speech_timestamp=0.0,
            )
        return p
