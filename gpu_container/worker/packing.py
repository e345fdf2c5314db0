"""Short jobs' windows packed into shared 30 s windows, and each job's result split back.

Whisper's encoder always reads 30 s: a 6 s job padded to its own window costs five times its
speech. Here the windows of one batch that are short (at most MAX_PIECE_SECONDS, from a job
expected to last at most SHORT_JOB_SECONDS, with an explicit language, and not asking for
windows of its own: `share_windows` false) are laid end to end in rows of at most 30 s,
GAP_SECONDS of silence between them, and each row is decoded once with word timestamps; each
job's words come back by their own time span, shifted to the job's own audio. Long jobs keep
their own windows (theirs are full already). The decoder reads the whole row, so a packed job's
words can change with its neighbours (a job that must come out the same every time asks for
its own windows); a window alone is decoded the same in any batch.

- The gap: 0.5 s of silence. Silero's VAD leaves up to 0.4 s of each piece's own quiet at its
  ends, so the voices are usually about a second apart, and word alignment drifts by a few
  tenths of a second at most: a word's midpoint still lands on its own side of the middle of the
  gap. (The measurement's espeak jobs speak from their first sample and end with ~0.45 s of
  quiet: the next job's first word is 0.25 s from the middle of the gap.) Over
  384 jobs (bench/bench_packing_gap.py: 24 mixes of 16 short jobs, every job held) the word
  error rate was 2.53 % with 0.5 s, 2.68 % with 0.75 s, 2.78 % with 1 s and 3.88 % unpacked
  (0.5 s minus 1 s: -0.24 points, 95 % interval -0.51 to +0.01 over mixes resampled); no word
  crossed into another job; encoder seconds per speech second 1.16, 1.22, 1.23 and 3.07. The
  words that differ between gaps are the model's own doubts ("chairs"/"cares", "nine"/"night"),
  which any change of a row's context flips either way. On the bench mix (seed 7) 0.5 s packs the
  16 jobs in 6 rows (1.06), 1 s in 7 (1.23).
- The guard: each word goes to the piece whose span (in the row) holds its midpoint; a word
  whose midpoint falls in a gap goes to the nearer piece (a word of the job before, aligned a
  little late, or of the job after, a little early), and its times are clamped into that
  piece, so no job ever gets a time outside its own audio. A word spanning two pieces goes by
  its midpoint too: the piece holding most of it. A row whose decode has a segment without
  words spanning two pieces cannot be split safely: its pieces are decoded again, each alone.
- Rows: the fewest that hold the pieces whole (exact branch and bound over the batch's pieces,
  the largest first, keeping the best found after SEARCH_NODES steps, first-fit decreasing to
  start from); at most `size` rows per batch, which the scheduler checks as it fills a batch
  (`Packer.fits`: first fit as windows are offered, first-fit decreasing when that is full;
  fast, and the exact plan never needs more rows than it counted).
- Cuts: where whole pieces need more rows than their length does, pieces are cut at pauses
  (`cut_points`: a quiet stretch of MIN_PAUSE_SECONDS or more, or where the window's VAD chunks
  join) and laid over rows by next fit (`_cut_rows`), a part of a piece in each of two rows, its
  results joined in order. Jobs of 15-29 s never pair whole (two need over 30 s) and ran a row
  each; cut at their sentence pauses they share rows. Only a cut that saves a row is made.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchscribe.whisper_models import SAMPLE_RATE
from gpu_container.worker.batched import BatchRunner, WindowResult, WindowSegment, compression_ratio
from gpu_container.worker.transcript import Word
from gpu_container.worker.windows import MAX_WINDOW_SECONDS, Window

GAP_SECONDS = 0.5
MAX_PIECE_SECONDS = MAX_WINDOW_SECONDS - 2.0  # a longer window keeps its own row (it leaves room for 1.5 s at most)
SHORT_JOB_SECONDS = 60.0  # a job expected to last longer keeps its own windows
SEARCH_NODES = 5_000  # branch-and-bound steps per batch before first-fit decreasing answers
MIN_PAUSE_SECONDS = 0.25  # a quiet stretch this long inside a piece is a place to cut it
CUT_MARGIN_SECONDS = 0.1  # quiet kept on each side of a cut
MIN_PART_SECONDS = 1.0  # no part of a cut piece is shorter
QUIET_RATIO = 0.05  # a frame is quiet under 5 % (-26 dB) of the piece's loud frames (its 90th percentile)...
QUIET_FLOOR = 1e-4  # ...or under this RMS whatever the piece's level
_FRAME = SAMPLE_RATE // 50  # 20 ms frames for finding pauses
CUT_ORDERS = 2_000  # orders next fit tries when cutting pieces may save a row...
CUT_STEPS = 20_000  # ...pieces it places in all (a large batch tries fewer orders)...
CUT_PATIENCE = 32  # ...and orders in a row it tries without finding fewer rows

RunBatch = Callable[[BatchRunner, Sequence[Any]], list[WindowResult | BaseException]]
Part = tuple[int, float, float]  # a batch item and the stretch of its window (window seconds) a row holds


@dataclass(frozen=True)
class PackedRequest:
    """One row: what the runner reads (a window and options), like scheduler.Work."""

    window: Window
    options: Any


@dataclass(frozen=True)
class Row:
    """The batch's items (indices) that run as one window; `offsets` their starts in it;
    `parts` the stretch of each item's window the row holds (window seconds), None when every
    item is whole. An item cut at a pause has its parts in two or more rows."""

    items: tuple[int, ...]
    offsets: tuple[float, ...] = (0.0,)
    parts: tuple[tuple[float, float], ...] | None = None

    @property
    def packed(self) -> bool:
        return len(self.items) > 1 or self.parts is not None

    def part(self, k: int, batch: Sequence[Any]) -> tuple[float, float]:
        """Entry `k`'s stretch of its window (window seconds)."""
        return self.parts[k] if self.parts is not None else (0.0, batch[self.items[k]].window.duration)


def _key(work: Any) -> tuple[Any, ...] | None:
    """What pieces must share to share a row (None: the window keeps its own)."""
    options = work.options
    language = getattr(options, "language", None)
    seconds = getattr(work, "job_seconds", None)
    if language is None or seconds is None or seconds > SHORT_JOB_SECONDS:
        return None  # detected per window, or a long (or unknown) job
    if not getattr(options, "share_windows", True):
        return None  # the job asked for windows of its own (a transcript that its neighbours cannot change)
    duration = getattr(work.window, "duration", None)
    if duration is None or duration > MAX_PIECE_SECONDS:
        return None
    return (language, options.task, options.initial_prompt)


def packable(work: Any) -> bool:
    """Whether a window may share a row with others."""
    return _key(work) is not None


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


def cut_points(window: Window) -> list[tuple[float, float]]:
    """Where a piece may be cut (window seconds, ascending): (end of the part before, start of
    the part after) at each pause of MIN_PAUSE_SECONDS or more inside it, CUT_MARGIN_SECONDS of
    its quiet kept on each side, and at each join of its VAD chunks (a long pause dropped there)."""
    audio = np.asarray(window.audio, np.float32)
    n = len(audio) // _FRAME
    cuts: list[tuple[float, float]] = []
    at = 0
    for a, b in window.chunks[:-1]:
        at += b - a
        cuts.append((at / SAMPLE_RATE, at / SAMPLE_RATE))
    if n >= 3:
        rms = np.sqrt(np.mean(np.square(audio[: n * _FRAME].reshape(n, _FRAME), dtype=np.float64), axis=1))
        quiet = rms <= max(QUIET_RATIO * float(np.percentile(rms, 90)), QUIET_FLOOR)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0]))))
        for s, e in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
            a, b = s * _FRAME / SAMPLE_RATE, e * _FRAME / SAMPLE_RATE
            if s > 0 and e < n and b - a >= MIN_PAUSE_SECONDS:  # inside the piece, not its edges
                cuts.append((a + CUT_MARGIN_SECONDS, b - CUT_MARGIN_SECONDS))
    return sorted(cuts)


def _next_fit(
    order: Sequence[int], durations: Sequence[float], cuts: Sequence[Sequence[tuple[float, float]]]
) -> list[list[Part]]:
    """The pieces in `order`, each row filled in turn: a piece that does not fit the row whole
    is cut at the latest pause that fits (parts of at least MIN_PART_SECONDS), the rest of it
    starting the next row."""
    rows: list[list[Part]] = []
    used = 0.0
    for i in order:
        a, b = 0.0, durations[i]
        if rows:
            room = MAX_WINDOW_SECONDS - used - GAP_SECONDS
            if b <= room + 1e-9:
                rows[-1].append((i, a, b))
                used += GAP_SECONDS + b
                continue
            fit = [(x, y) for x, y in cuts[i] if MIN_PART_SECONDS <= x <= room + 1e-9 and b - y >= MIN_PART_SECONDS]
            if fit:
                x, y = fit[-1]
                rows[-1].append((i, a, x))
                a = y  # the rest of it starts the next row
        rows.append([(i, a, b)])
        used = b - a
    return rows


def _cut_floor(durations: Sequence[float]) -> int:
    """The fewest rows that could hold the pieces however they are cut: r rows hold the pieces
    and a gap between each two in a row, so r x 30 >= total + GAP x (pieces - r) (the quiet a
    cut drops is not counted)."""
    total = sum(durations) + GAP_SECONDS * len(durations)
    return math.ceil(total / (MAX_WINDOW_SECONDS + GAP_SECONDS) - 1e-9)


def _cut_rows(
    durations: Sequence[float], cuts: Sequence[Sequence[tuple[float, float]]], fewer_than: int
) -> list[list[Part]] | None:
    """Rows for the pieces, cut at pauses, fewer than `fewer_than` (the whole pieces' count),
    or None. Next fit over the pieces longest first, then over CUT_ORDERS seeded shuffles (at
    most CUT_STEPS pieces placed in all), keeping the fewest rows; it stops at the floor (their
    total length and gaps in 30 s rows, `_cut_floor`), or after CUT_PATIENCE orders in a row
    found no fewer; `plan` does not call it (nor find the pieces' pauses) where the floor is no
    fewer (64 pieces of 5-15 s: ~90 ms a plan
    with no patience, all on the loop's thread). Cutting
    pieces over rows is bin packing with splittable items: next fit leaves under one sentence
    unused in a row, and the order decides where the cuts fall (on the 16-job bench mix with
    0.5 s gaps about 1 order in 14 reaches the floor)."""
    floor = _cut_floor(durations)
    order = sorted(range(len(durations)), key=lambda i: (-durations[i], i))
    rng = random.Random(len(durations))  # noqa: S311 - not security: the same batch always packs the same way
    best: list[list[Part]] | None = None
    since = 0  # orders tried since the best
    for _ in range(max(1, min(CUT_ORDERS, CUT_STEPS // max(1, len(order))))):
        rows = _next_fit(order, durations, cuts)
        if len(rows) < (len(best) if best is not None else fewer_than):
            best, since = rows, 0
            if len(rows) <= floor:
                break
        elif (since := since + 1) > CUT_PATIENCE:
            break
        rng.shuffle(order)
    return best


def plan(batch: Sequence[Any], search: bool = True) -> list[Row]:
    """The rows a batch runs as: packable pieces grouped by what they must share, each group
    in the fewest rows (with `search`, pieces cut at pauses where whole ones need more rows
    than their length does); every other window a row of its own. Rows keep the batch's order
    of their first item."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    rows: list[list[Part]] = []
    for i, work in enumerate(batch):
        key = _key(work)
        if key is None:
            rows.append([(i, 0.0, _length(work))])
        else:
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        durations = [batch[i].window.duration for i in members]
        whole = [[(members[j], 0.0, durations[j]) for j in b] for b in _bins(durations, search)]
        if search and _cut_floor(durations) < len(whole):
            found = _cut_rows(durations, [cut_points(batch[i].window) for i in members], len(whole))
            if found is not None:
                whole = [[(members[j], a, b) for j, a, b in row] for row in found]
        rows += [sorted(row) for row in whole]
    rows.sort(key=lambda r: r[0])
    out = []
    for row in rows:
        offsets, at = [], 0.0
        for _, a, b in row:
            offsets.append(at)
            at += b - a + GAP_SECONDS
        cut = any(a > 0.0 or b < _length(batch[i]) for i, a, b in row)
        parts = tuple((a, b) for _, a, b in row) if cut else None
        out.append(Row(tuple(i for i, _, _ in row), tuple(offsets), parts))
    return out


def _length(work: Any) -> float:
    """A window's seconds (a row of its own whatever its length when it has none to tell)."""
    return float(getattr(work.window, "duration", MAX_WINDOW_SECONDS))


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
    for k, i in enumerate(row.items):
        if k:
            parts.append(gap)
        a, b = row.part(k, batch)
        audio = np.asarray(batch[i].window.audio, np.float32)
        parts.append(audio if row.parts is None else audio[round(a * SAMPLE_RATE) : round(b * SAMPLE_RATE)])
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


def split(batch: Sequence[Any], row: Row, result: WindowResult) -> list[list[WindowSegment]] | None:
    """A packed row's result as each entry's segments, in its own window's source time (None:
    a segment without words spans two pieces, so the row cannot be split safely)."""
    parts = [row.part(k, batch) for k in range(len(row.items))]
    spans = [(row.offsets[k], row.offsets[k] + b - a) for k, (a, b) in enumerate(parts)]
    own: list[list[WindowSegment]] = [[] for _ in row.items]

    def moved(k: int, segment: WindowSegment, words: list[Word]) -> WindowSegment:
        return _shifted(segment, words, batch[row.items[k]], spans[k], parts[k][0])

    for segment in result.segments:
        if not segment.words:
            k = _piece_of(segment.start, spans)
            if _piece_of(segment.end, spans) != k:
                return None
            own[k].append(moved(k, segment, []))
            continue
        runs: list[tuple[int, list[Word]]] = []
        for word in segment.words:
            k = _piece_of((word.start + word.end) / 2, spans)
            if runs and runs[-1][0] == k:
                runs[-1][1].append(word)
            else:
                runs.append((k, [word]))
        for k, words in runs:
            own[k].append(moved(k, segment, words))
    return own


def _shifted(
    segment: WindowSegment, words: list[Word], work: Any, span: tuple[float, float], start: float
) -> WindowSegment:
    """Part of a row's segment (its `words`, or all of it when it has none) in the piece's own
    source time, clamped inside the piece; the piece is the stretch of its window from window
    second `start` that the row holds over `span`."""
    window: Window = work.window
    a, b = span

    def local(t: float) -> float:
        return start + min(max(t - a, 0.0), b - a)

    if not words:
        first = window.to_source(local(segment.start))
        return dataclasses.replace(
            segment, start=first, end=max(first, window.to_source(local(segment.end), is_end=True)), words=None
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
    their requests made already, Packer.rows); an item whose packed row failed, or cannot be
    split, runs again alone (all of it, where it was cut over rows), so one bad piece fails
    only its own job. A cut item's parts are joined in window order."""
    if laid_out is None:
        rows = plan(batch)
        laid_out = rows, [request(batch, row) for row in rows]
    rows, requests = laid_out
    results = run(runner, requests)
    out: list[WindowResult | BaseException | None] = [None] * len(batch)
    got: dict[int, list[tuple[float, list[WindowSegment]]]] = {}
    language: dict[int, str] = {}
    again: set[int] = set()
    for row, result in zip(rows, results, strict=True):
        if not row.packed:
            out[row.items[0]] = result
        elif not isinstance(result, WindowResult) or (pieces := split(batch, row, result)) is None:
            again.update(row.items)
        else:
            for k, (i, segments) in enumerate(zip(row.items, pieces, strict=True)):
                got.setdefault(i, []).append((row.part(k, batch)[0], segments))
                language[i] = result.language
    for i, parts in got.items():
        if i not in again:
            segments = [s for _, own in sorted(parts, key=lambda p: p[0]) for s in own]
            out[i] = WindowResult(language=language[i], segments=segments, speech_seconds=batch[i].window.duration)
    if again:
        alone = sorted(again)
        for i, result in zip(alone, run(runner, [batch[i] for i in alone]), strict=True):
            out[i] = result
    return [r for r in out if r is not None]
