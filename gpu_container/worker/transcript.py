"""The transcript and its renderings: JSON, plain text, SubRip (SRT) and WebVTT.

Cues are made monotonic and non-overlapping here, whatever the engine produced: each
starts no earlier than the previous one ended and lasts at least a millisecond."""

from __future__ import annotations

import json

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


class Transcript(BaseModel):
    language: str
    duration: float
    segments: list[Segment] = Field(default_factory=list)

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


def to_srt(t: Transcript) -> str:
    blocks = [
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n" for i, s in enumerate(t.segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    cues = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n" for s in t.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_txt(t: Transcript) -> str:
    return "".join(f"{s.text}\n" for s in t.segments)


def to_json(t: Transcript) -> str:
    data = {
        "language": t.language,
        "duration": round(t.duration, 3),
        "text": t.text,
        "segments": [s.model_dump(exclude_none=True) for s in t.segments],
    }
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


RENDERERS = {"json": to_json, "txt": to_txt, "srt": to_srt, "vtt": to_vtt}
CONTENT_TYPES: dict[str, str] = {
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def render(t: Transcript, fmt: OutputFormat) -> str:
    return RENDERERS[fmt](t)
