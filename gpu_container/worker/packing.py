"""Short jobs' windows packed into shared 30 s windows, and each job's result split back.

Whisper's encoder always reads 30 s: a 6 s job padded to its own window costs five times its
speech. Here the windows of one batch that are short (at most MAX_PIECE_SECONDS, from a job
expected to last at most SHORT_JOB_SECONDS, with an explicit language) are laid end to end in
rows of at most 30 s, GAP_SECONDS of silence between them, and each row is decoded once with
word timestamps; each job's words come back by their own time span, shifted to the job's own
audio. Long jobs keep their own windows (theirs are full already), and a short job's window
is never split over two rows.

- The gap: 1 s of silence. Whisper closes a segment at a pause of that length, and word
  alignment drifts by a few tenths of a second at most, so a word's midpoint still lands on
  its own side of the middle of the gap. (Silero's VAD pads each chunk with 0.4 s of its own
  quiet, so the voices are usually further apart; the gap does not count on it.) A larger
  gap fits fewer pieces: on the 16-job bench mix 0.5-1 s packs the same rows, 1.5 s one more.
- The guard: each word goes to the piece whose span (in the row) holds its midpoint; a word
  whose midpoint falls in a gap goes to the nearer piece (a word of the job before, aligned a
  little late, or of the job after, a little early), and its times are clamped into that
  piece, so no job ever gets a time outside its own audio. A word spanning two pieces goes by
  its midpoint too: the piece holding most of it. A row whose decode has a segment without
  words spanning two pieces cannot be split safely: its pieces are decoded again, each alone.
- Rows: the fewest that hold the pieces (exact branch and bound over the batch's pieces, the
  largest first, keeping the best found after SEARCH_NODES steps, first-fit decreasing to start
  from); at most `size` rows per batch, which the scheduler checks as it fills a batch
  (`Packer.fits`: first fit as windows are offered, first-fit decreasing when that is full;
  fast, and the exact plan never needs more rows than it counted).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpu_container.worker.batched import BatchRunner, WindowResult, WindowSegment, compression_ratio
from gpu_container.worker.media import SAMPLE_RATE
from gpu_container.worker.transcript import Word
from gpu_container.worker.windows import MAX_WINDOW_SECONDS, Window

GAP_SECONDS = 1.0
MAX_PIECE_SECONDS = MAX_WINDOW_SECONDS - 2 * GAP_SECONDS  # a piece with room for another beside it
SHORT_JOB_SECONDS = 60.0  # a job expected to last longer keeps its own windows
SEARCH_NODES = 5_000  # branch-and-bound steps per batch before first-fit decreasing answers

RunBatch = Callable[[BatchRunner, Sequence[Any]], list[WindowResult | BaseException]]


@dataclass(frozen=True)
class PackedRequest:
    """One row: what the runner reads (a window and options), like scheduler.Work."""

    window: Window
    options: Any


@dataclass(frozen=True)
class Row:
    """The batch's items (indices) that run as one window; `offsets` their starts in it."""

    items: tuple[int, ...]
    offsets: tuple[float, ...] = (0.0,)

    @property
    def packed(self) -> bool:
        return len(self.items) > 1


def _key(work: Any) -> tuple[Any, ...] | None:
    """What pieces must share to share a row (None: the window keeps its own)."""
    options = work.options
    language = getattr(options, "language", None)
    seconds = getattr(work, "job_seconds", None)
    if language is None or seconds is None or seconds > SHORT_JOB_SECONDS:
        return None  # detected per window, or a long (or unknown) job
    duration = getattr(work.window, "duration", None)
    if duration is None or duration > MAX_PIECE_SECONDS:
        return None
    return (language, options.task, options.initial_prompt)


def _first_fit(order: list[int], durations: Sequence[float]) -> list[list[int]]:
    bins: list[list[int]] = []
    used: list[float] = []  # each bin's pieces and a gap after each
    room = MAX_WINDOW_SECONDS + GAP_SECONDS + 1e-9
    for i in order:
        need = durations[i] + GAP_SECONDS
        for b, u in enumerate(used):
            if u + need <= room:
                bins[b].append(i)
                used[b] += need
                break
        else:
            bins.append([i])
            used.append(need)
    return bins


def _bins(durations: Sequence[float], exact: bool = True) -> list[list[int]]:
    """The fewest bins of MAX_WINDOW_SECONDS (gaps included) holding every piece (with
    `exact` off: first-fit decreasing, fast, at most a few bins more)."""
    order = sorted(range(len(durations)), key=lambda i: (-durations[i], i))
    best = _first_fit(order, durations)
    need = [durations[i] + GAP_SECONDS for i in order]  # a piece and the gap before the next
    room = MAX_WINDOW_SECONDS + GAP_SECONDS + 1e-9
    bound = math.ceil(sum(need) / room - 1e-9)
    if not exact or len(best) <= bound:
        return best
    nodes = 0
    bins: list[list[int]] = []
    used: list[float] = []

    def search(k: int) -> None:
        nonlocal best, nodes
        nodes += 1
        if len(bins) >= len(best) or nodes > SEARCH_NODES:
            return
        if k == len(order):
            best = [list(b) for b in bins]
            return
        tried: set[float] = set()
        for b in range(len(bins)):
            if used[b] + need[k] <= room and round(used[b], 3) not in tried:
                tried.add(round(used[b], 3))
                bins[b].append(order[k])
                used[b] += need[k]
                search(k + 1)
                used[b] -= need[k]
                bins[b].pop()
        bins.append([order[k]])
        used.append(need[k])
        search(k + 1)
        used.pop()
        bins.pop()

    search(0)
    return best


def plan(batch: Sequence[Any], search: bool = True) -> list[Row]:
    """The rows a batch runs as: packable pieces grouped by what they must share, each group
    in the fewest rows; every other window a row of its own. Rows keep the batch's order of
    their first item."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    rows: list[list[int]] = []
    for i, work in enumerate(batch):
        key = _key(work)
        if key is None:
            rows.append([i])
        else:
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        durations = [batch[i].window.duration for i in members]
        rows += [sorted(members[j] for j in b) for b in _bins(durations, search)]
    rows.sort(key=lambda r: r[0])
    out = []
    for items in rows:
        offsets, at = [], 0.0
        for i in items[:-1]:
            offsets.append(at)
            at += batch[i].window.duration + GAP_SECONDS
        out.append(Row(tuple(items), (*offsets, at)))
    return out


class Packer:
    """`fits(size)`: the scheduler's test that a batch still runs in at most `size` rows.

    Each window the scheduler offers goes into the rows counted so far where it fits (one step
    per window); only when it fits none and no row is free is the whole batch repacked, first
    fit decreasing, to check. `plan` never needs more rows than this counts.

    `ahead(batch)` lays out the next batch's rows while the model runs this one (their features
    prepared from them, features.FeaturePrefetch knows a row by its samples); `rows(batch)` gives
    that same layout when the batch comes to run unchanged, so the prepared features are found,
    and a fresh one otherwise (the batch was topped up or lost a cancelled job's windows)."""

    def __init__(self) -> None:
        self._ahead: tuple[tuple[int, ...], list[Row], list[Any]] | None = None

    def ahead(self, batch: Sequence[Any]) -> list[Any]:
        rows = plan(batch)
        requests = [request(batch, row) for row in rows]
        self._ahead = (tuple(id(w) for w in batch), rows, requests)
        return requests

    def rows(self, batch: Sequence[Any]) -> tuple[list[Row], list[Any]]:
        kept = self._ahead
        if kept is not None and kept[0] == tuple(id(w) for w in batch):
            self._ahead = None
            return kept[1], kept[2]
        rows = plan(batch)
        return rows, [request(batch, row) for row in rows]

    def fits(self, size: int) -> Callable[[Sequence[Any]], bool]:
        rows: list[tuple[tuple[Any, ...] | None, float]] = []  # (key, seconds used) per row
        placed: list[Any] = []  # the batch as accepted so far

        def repack(batch: Sequence[Any]) -> bool:
            found = plan(batch, search=False)
            if len(found) > size:
                return False
            rows[:] = [(_key(batch[r.items[0]]), sum(_need(batch[i]) for i in r.items)) for r in found]
            placed[:] = batch
            return True

        def test(batch: Sequence[Any]) -> bool:
            if len(batch) != len(placed) + 1 or any(a is not b for a, b in zip(batch, placed, strict=False)):
                return repack(batch)  # not the batch it has seen grow
            work, key = batch[-1], _key(batch[-1])
            for n, (k, used) in enumerate(rows):
                if key is not None and k == key and used + _need(work) <= MAX_WINDOW_SECONDS + GAP_SECONDS + 1e-9:
                    rows[n] = (k, used + _need(work))
                    placed.append(work)
                    return True
            if len(rows) < size:
                rows.append((key, _need(work)))
                placed.append(work)
                return True
            return repack(batch)

        return test


def _need(work: Any) -> float:
    """Row seconds a packable window takes: itself and the gap after it."""
    return work.window.duration + GAP_SECONDS if _key(work) is not None else MAX_WINDOW_SECONDS + GAP_SECONDS


def request(batch: Sequence[Any], row: Row) -> Any:
    """What the runner gets for a row: the window itself, or the pieces laid end to end with
    silence between them, decoded with word timestamps (the split needs them)."""
    if not row.packed:
        return batch[row.items[0]]
    gap = np.zeros(round(GAP_SECONDS * SAMPLE_RATE), np.float32)
    parts: list[np.ndarray] = []
    for n, i in enumerate(row.items):
        if n:
            parts.append(gap)
        parts.append(np.asarray(batch[i].window.audio, np.float32))
    audio = np.concatenate(parts)
    window = Window(index=-1, audio=audio, chunks=((0, len(audio)),))
    options = dataclasses.replace(batch[row.items[0]].options, word_timestamps=True)
    return PackedRequest(window, options)


def _piece_of(t: float, spans: Sequence[tuple[float, float]]) -> int:
    """The piece whose span holds row time `t`, else the nearest one (`t` in a gap)."""
    for k, (a, b) in enumerate(spans):
        if a <= t <= b:
            return k
    return min(range(len(spans)), key=lambda k: min(abs(t - spans[k][0]), abs(t - spans[k][1])))


def split(batch: Sequence[Any], row: Row, result: WindowResult) -> list[WindowResult] | None:
    """A packed row's result as one result per piece, in its own window's source time (None:
    a segment without words spans two pieces, so the row cannot be split safely)."""
    spans = [(row.offsets[k], row.offsets[k] + batch[i].window.duration) for k, i in enumerate(row.items)]
    own: list[list[WindowSegment]] = [[] for _ in row.items]
    for segment in result.segments:
        if not segment.words:
            k = _piece_of(segment.start, spans)
            if _piece_of(segment.end, spans) != k:
                return None
            own[k].append(_shifted(segment, [], batch[row.items[k]], spans[k]))
            continue
        runs: list[tuple[int, list[Word]]] = []
        for word in segment.words:
            k = _piece_of((word.start + word.end) / 2, spans)
            if runs and runs[-1][0] == k:
                runs[-1][1].append(word)
            else:
                runs.append((k, [word]))
        for k, words in runs:
            own[k].append(_shifted(segment, words, batch[row.items[k]], spans[k]))
    return [
        WindowResult(language=result.language, segments=segs, speech_seconds=batch[i].window.duration)
        for i, segs in zip(row.items, own, strict=True)
    ]


def _shifted(segment: WindowSegment, words: list[Word], work: Any, span: tuple[float, float]) -> WindowSegment:
    """Part of a row's segment (its `words`, or all of it when it has none) in the piece's own
    source time, clamped inside the piece."""
    window: Window = work.window
    a, b = span

    def local(t: float) -> float:
        return min(max(t - a, 0.0), b - a)

    if not words:
        start = window.to_source(local(segment.start))
        return dataclasses.replace(
            segment, start=start, end=max(start, window.to_source(local(segment.end), is_end=True)), words=None
        )
    moved = []
    for w in words:
        s, e = window.span_to_source(local(w.start), local(w.end))
        moved.append(w.model_copy(update={"start": s, "end": max(s, e)}))
    text = "".join(w.word for w in moved)
    return dataclasses.replace(
        segment,
        start=moved[0].start,
        end=moved[-1].end,
        text=text,
        words=moved if work.options.word_timestamps else None,
        compression_ratio=compression_ratio(text),
    )


def run_packed(
    runner: BatchRunner, batch: Sequence[Any], run: RunBatch, laid_out: tuple[list[Row], list[Any]] | None = None
) -> list[WindowResult | BaseException]:
    """One result (or exception) per item of `batch`, its short windows run packed: `run`
    (batched.run_isolating with the caller's limit) over the rows (`laid_out`: the rows and
    their requests made already, Packer.rows); a packed row that failed, or cannot be split,
    runs again as its pieces, each alone, so one bad piece fails only its own job."""
    if laid_out is None:
        rows = plan(batch)
        laid_out = rows, [request(batch, row) for row in rows]
    rows, requests = laid_out
    results = run(runner, requests)
    out: list[WindowResult | BaseException | None] = [None] * len(batch)
    again: list[int] = []
    for row, result in zip(rows, results, strict=True):
        pieces = split(batch, row, result) if row.packed and isinstance(result, WindowResult) else None
        if not row.packed:
            out[row.items[0]] = result
        elif pieces is None:
            again += row.items
        else:
            for i, piece in zip(row.items, pieces, strict=True):
                out[i] = piece
    if again:
        for i, result in zip(again, run(runner, [batch[i] for i in again]), strict=True):
            out[i] = result
    return [r for r in out if r is not None]
