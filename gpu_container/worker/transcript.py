"""The transcript and its renderings: JSON, plain text, SubRip (SRT) and WebVTT.

Cues are made monotonic and non-overlapping here, whatever the engine produced: each
starts no earlier than the previous one ended and lasts at least a millisecond.

Two optional steps make the output read like subtitles rather than like decoder windows:
- `sentence_segments` regroups segments into sentences (split where a sentence ends inside
  a segment, joined where a sentence runs on across segments or window cuts);
- `subtitle_cues` (used by `render(..., cues=CueRules())`) splits each segment into cues
  of at most 7 s and at most 2 lines of 42 characters, at word timestamps when present and
  at punctuation where it can, at interpolated word times otherwise.
The SRT/WebVTT text itself is written here (a few lines); `srt`/`pysubs2` on PyPI would
only write it, not cut cues by word timings, and are not worth a dependency.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field

from batchscribe.models import OutputFormat


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float | None = None


class Segment(BaseModel):
    id: int
    start: float
    end: float
    text: str
    words: list[Word] | None = None
    # the decoder's confidence, as Whisper tools report it (None where the engine gave none)
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    channel: int | None = None  # the source channel (0-based) when channels were transcribed apart

    @property
    def speaker(self) -> str | None:
        # the same number as `channel` in the JSON (0-based), in every format
        return None if self.channel is None else f"Channel {self.channel}"


class Transcript(BaseModel):
    language: str
    duration: float
    segments: list[Segment] = Field(default_factory=list)
    language_probability: float | None = None
    engine: str | None = None
    model: str | None = None

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


def tidy(segments: list[Segment], duration: float) -> list[Segment]:
    out: list[Segment] = []
    prev_end = 0.0
    for seg in segments:
        text = seg.text.strip()
        if not text:
            continue
        start = max(round(seg.start, 3), prev_end)
        end = max(round(seg.end, 3), start + 0.001)
        if duration > 0:
            end = min(end, max(duration, start + 0.001))
        out.append(seg.model_copy(update={"id": len(out), "start": start, "end": end, "text": text}))
        prev_end = end
    return out


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(t: Transcript, cues: CueRules | None = None) -> str:
    """One cue per segment; with `cues`, readable cues cut by those rules."""
    timed = _cue_list(t, cues)
    blocks = [
        f"{i}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n{_label(c.speaker, '[{}] ')}{c.text}\n"
        for i, c in enumerate(timed, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(t: Transcript, cues: CueRules | None = None) -> str:
    timed = _cue_list(t, cues)
    blocks = [
        f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n{_label(c.speaker, '<v {}>')}{c.text}\n" for c in timed
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _label(speaker: str | None, form: str) -> str:
    return "" if speaker is None else form.format(speaker)


def _cue_list(t: Transcript, rules: CueRules | None) -> list[Cue]:
    if rules is None:
        return [Cue(start=s.start, end=s.end, lines=(s.text,), speaker=s.speaker) for s in t.segments]
    return subtitle_cues(t, rules)


def to_txt(t: Transcript) -> str:
    return "".join(f"{_label(s.speaker, '[{}] ')}{s.text}\n" for s in t.segments)


JSON_SCHEMA = "batchscribe.transcript/1"  # bump on any change a reader could notice


def to_json(t: Transcript) -> str:
    """The transcript as JSON (schema `batchscribe.transcript/1`, documented in docs/api.md):
    language (+ probability when detected), duration, engine and model, the whole text, and
    segments with start/end/text, optional words, and the decoder's confidence."""
    data = {
        "schema": JSON_SCHEMA,
        "language": t.language,
        "language_probability": _round(t.language_probability),
        "duration": round(t.duration, 3),
        "engine": t.engine,
        "model": t.model,
        "text": t.text,
        "segments": [
            s.model_copy(
                update={k: _round(getattr(s, k)) for k in ("avg_logprob", "no_speech_prob", "compression_ratio")}
            ).model_dump(exclude_none=True)
            for s in t.segments
        ],
    }
    return json.dumps({k: v for k, v in data.items() if v is not None}, ensure_ascii=False, indent=2) + "\n"


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or value != value else round(value, digits)  # NaN -> None


RENDERERS = {"json": to_json, "txt": to_txt, "srt": to_srt, "vtt": to_vtt}
CONTENT_TYPES: dict[str, str] = {
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def render(t: Transcript, fmt: OutputFormat, *, cues: CueRules | None = None) -> str:
    """`fmt` of `t`. With `cues` (e.g. READABLE_CUES), SRT and WebVTT get readable cues
    instead of one cue per segment."""
    if cues is not None and fmt == "srt":
        return to_srt(t, cues)
    if cues is not None and fmt == "vtt":
        return to_vtt(t, cues)
    return RENDERERS[fmt](t)


def output_text(t: Transcript, fmt: OutputFormat) -> str:
    """What a job's output file in `fmt` holds (subtitles with readable cues): the worker
    writes it, and `batchscribe transcribe` prints it."""
    return render(t, fmt, cues=READABLE_CUES)


# ---- sentences -------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"'\u201d\u2019)\]]*$")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?\u2026])[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c(\[]?[A-Z0-9])")
_CLAUSE_END = re.compile(r"[,;:\u2014\u2013-][\"'\u201d\u2019)\]]*$")


def ends_sentence(text: str) -> bool:
    return bool(_SENTENCE_END.search(text.strip()))


def sentence_segments(
    segments: Sequence[Segment], *, max_gap_seconds: float = 1.5, max_merge_seconds: float = 20.0
) -> list[Segment]:
    """Segments regrouped into sentences: split where a sentence ends inside a segment
    (at its word timestamps when present, by character position otherwise), then joined
    where a segment does not end a sentence and the next follows within `max_gap_seconds`
    (up to `max_merge_seconds` in all). Text and words are kept; ids are renumbered."""
    pieces = [p for seg in segments for p in _split_sentences(seg)]
    out: list[Segment] = []
    for piece in pieces:
        prev = out[-1] if out else None
        if (
            prev is not None
            and not ends_sentence(prev.text)
            and piece.start - prev.end <= max_gap_seconds
            and piece.end - prev.start <= max_merge_seconds
        ):
            both = prev.words is None and piece.words is None
            words = None if both else (prev.words or []) + (piece.words or [])
            out[-1] = prev.model_copy(
                update={
                    "end": max(prev.end, piece.end),
                    "text": f"{prev.text.strip()} {piece.text.strip()}",
                    "words": words,
                    **_merged_confidence(prev, piece),
                }
            )
        else:
            out.append(piece)
    return [seg.model_copy(update={"id": i}) for i, seg in enumerate(out)]


def _merged_confidence(a: Segment, b: Segment) -> dict[str, float | None]:
    """The confidence of two joined segments: each figure weighted by the segments' lengths."""
    wa, wb = max(a.end - a.start, 1e-3), max(b.end - b.start, 1e-3)
    out: dict[str, float | None] = {}
    for name in ("avg_logprob", "no_speech_prob", "compression_ratio"):
        x, y = getattr(a, name), getattr(b, name)
        out[name] = x if y is None else y if x is None else (x * wa + y * wb) / (wa + wb)
    return out


def _split_sentences(seg: Segment) -> list[Segment]:
    if seg.words:
        runs: list[list[Word]] = [[]]
        for i, word in enumerate(seg.words):
            runs[-1].append(word)
            if i < len(seg.words) - 1 and ends_sentence(word.word):
                runs.append([])
        if len(runs) == 1:
            return [seg]
        return [
            seg.model_copy(
                update={
                    "start": run[0].start,
                    "end": run[-1].end,
                    "text": "".join(w.word for w in run).strip(),
                    "words": run,
                }
            )
            for run in runs
        ]
    text = seg.text.strip()
    parts = [p for p in _SENTENCE_SPLIT.split(text) if p.strip()]
    if len(parts) <= 1:
        return [seg]
    total = sum(len(p) for p in parts)
    span = seg.end - seg.start
    out, done = [], 0
    for part in parts:
        start = seg.start + span * done / total
        done += len(part)
        end = round(seg.start + span * done / total, 3)
        out.append(seg.model_copy(update={"start": round(start, 3), "end": end, "text": part}))
    return out


# ---- subtitle cues ---------------------------------------------------------------------


@dataclass(frozen=True)
class CueRules:
    """How long and how wide a subtitle cue may be (common broadcast guidance: 42
    characters a line, 2 lines, on screen no longer than 7 s)."""

    max_seconds: float = 7.0
    max_line_chars: int = 42
    max_lines: int = 2


READABLE_CUES = CueRules()


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]
    speaker: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class _Timed:
    start: float
    end: float
    text: str


def subtitle_cues(t: Transcript, rules: CueRules = READABLE_CUES) -> list[Cue]:
    """Each segment cut into cues that obey `rules`: at word timestamps when the segment
    has them, else at word boundaries with times interpolated by character count;
    preferring a cut after punctuation, and balancing a two-cue split. Cues are in time order,
    and non-overlapping within a channel (channels transcribed apart may overlap: people talk
    at once)."""
    cues: list[Cue] = []
    prev_end: dict[int | None, float] = {}  # per channel: two speakers' cues may overlap
    for seg in t.segments:
        for run in _cue_runs(_timed_words(seg), rules):
            text = " ".join(w.text for w in run)
            lines = wrap_lines(text, rules.max_line_chars, rules.max_lines) or _hard_wrap(text, rules)
            start = max(round(run[0].start, 3), prev_end.get(seg.channel, 0.0))
            end = min(max(round(run[-1].end, 3), start + 0.001), start + rules.max_seconds)
            cues.append(Cue(start=start, end=round(end, 3), lines=tuple(lines), speaker=seg.speaker))
            prev_end[seg.channel] = cues[-1].end
    # a long segment's later cues may start after another channel's next segment: in time order
    return sorted(cues, key=lambda c: (c.start, c.speaker or ""))


def _timed_words(seg: Segment) -> list[_Timed]:
    if seg.words:
        words = [_Timed(w.start, w.end, w.word.strip()) for w in seg.words if w.word.strip()]
        if words:
            return words
    tokens = seg.text.split()
    total = sum(len(w) + 1 for w in tokens) or 1
    span = max(seg.end - seg.start, 0.0)
    out, done = [], 0
    for w in tokens:
        start = seg.start + span * done / total
        done += len(w) + 1
        out.append(_Timed(start, seg.start + span * done / total, w))
    return out


def wrap_lines(text: str, width: int, max_lines: int) -> list[str] | None:
    """`text` in at most `max_lines` lines of at most `width` characters (two lines
    balanced), or None when it does not fit."""
    if len(text) <= width:
        return [text]
    lines = textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)
    if len(lines) > max_lines or any(len(line) > width for line in lines):
        return None
    if len(lines) == 2:
        words = text.split()
        best = min(
            (
                (max(len(" ".join(words[:k])), len(" ".join(words[k:]))), k)
                for k in range(1, len(words))
                if len(" ".join(words[:k])) <= width and len(" ".join(words[k:])) <= width
            ),
            default=None,
        )
        if best is not None:
            k = best[1]
            return [" ".join(words[:k]), " ".join(words[k:])]
    return lines


def _hard_wrap(text: str, rules: CueRules) -> list[str]:
    """A single word wider than a line: cut it (the only way it can fit)."""
    return textwrap.wrap(text, rules.max_line_chars)[: rules.max_lines] or [text[: rules.max_line_chars]]


def _fits(run: Sequence[_Timed], rules: CueRules) -> bool:
    if run[-1].end - run[0].start > rules.max_seconds:
        return False
    return wrap_lines(" ".join(w.text for w in run), rules.max_line_chars, rules.max_lines) is not None


def _cue_runs(words: list[_Timed], rules: CueRules) -> list[list[_Timed]]:
    runs: list[list[_Timed]] = []
    i, n = 0, len(words)
    while i < n:
        if _fits(words[i:], rules):
            runs.append(words[i:])
            break
        j = i + 1  # words[i:j] is the longest run from i that fits (at least one word)
        while j < n and _fits(words[i : j + 1], rules):
            j += 1
        if _fits(words[j:], rules):
            # the rest fits in one more cue: balance the two, preferring a clause end
            def score(k: int, i: int = i) -> tuple[bool, int]:
                left = len(" ".join(w.text for w in words[i:k]))
                right = len(" ".join(w.text for w in words[k:]))
                return (_ends_clause(words[k - 1].text), -abs(left - right))

            options = [k for k in range(i + 1, j + 1) if _fits(words[k:], rules)]
            j = max(options, key=score)
        else:
            # prefer a cut after punctuation in the second half of the run
            half = len(" ".join(w.text for w in words[i:j])) / 2
            for k in range(j, i + 1, -1):
                if _ends_clause(words[k - 1].text) and len(" ".join(w.text for w in words[i:k])) >= half:
                    j = k
                    break
        runs.append(words[i:j])
        i = j
    return runs


def _ends_clause(text: str) -> bool:
    return ends_sentence(text) or bool(_CLAUSE_END.search(text))
