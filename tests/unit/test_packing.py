"""Window packing (packing.py) with a stand-in runner that "hears" which job's audio is where in
a row: each job's speech is a constant signal of its own level, and the runner says one word
per second of each level it finds, all in one segment across the pieces (the hardest case for
the split). Proves: short jobs share rows, long jobs keep theirs; each job gets only its own
words, in its own source time, inside its own audio; words in a gap or over two pieces go to
one job by their midpoint; an unsplittable or failing row runs again piece by piece; a
cancelled job's pieces are dropped and only its; batches still fill round-robin, shortest
first, within B rows."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from batchscribe.models import JobOptions
from batchscribe.whisper_models import SAMPLE_RATE
from gpu_container.worker.batched import DecodeOptions, WindowResult, WindowSegment, run_isolating
from gpu_container.worker.batches import Batches
from gpu_container.worker.packing import (
    CUT_MARGIN_SECONDS,
    GAP_SECONDS,
    MIN_PAUSE_SECONDS,
    PackedRequest,
    Packer,
    cut_points,
    packable,
    plan,
    run_packed,
)
from gpu_container.worker.scheduler import JobFinished, Scheduler, Work
from gpu_container.worker.transcript import Word
from gpu_container.worker.windows import Window

EN = DecodeOptions(language="en")
WORDS = DecodeOptions(language="en", word_timestamps=True)
KEY = ("faster-whisper", "tiny.en")


def window(level: int, seconds: float, at: float = 0.0, index: int = 0) -> Window:
    """`seconds` of speech at source time `at`, a constant signal of `level` (the job's voice)."""
    n = round(seconds * SAMPLE_RATE)
    start = round(at * SAMPLE_RATE)
    return Window(index=index, audio=np.full(n, level / 100, np.float32), chunks=((start, start + n),))


def work(job: str, w: Window, job_seconds: float | None = None, options: DecodeOptions = EN) -> Work[Window]:
    return Work(job, 0, w, options, None, job_seconds if job_seconds is not None else w.duration)


def runs(audio: np.ndarray) -> list[tuple[int, float, float]]:
    """(level, start s, end s) of each stretch of constant non-zero signal."""
    levels = np.round(audio * 100).astype(int)
    out: list[tuple[int, float, float]] = []
    i = 0
    while i < len(levels):
        j = i
        while j < len(levels) and levels[j] == levels[i]:
            j += 1
        if levels[i]:
            out.append((int(levels[i]), i / SAMPLE_RATE, j / SAMPLE_RATE))
        i = j
    return out


class Ear:
    """Says one word per second of each voice it hears (`w<level>.<k> `), in one segment over
    the whole row; `drift` moves every word's times (an aligner a little late); `extra` adds
    words at given row times; `wordless` returns the segment without words."""

    name, model_name, device = "ear", "tiny.en", "cpu"

    def __init__(self, drift: float = 0.0, extra: Sequence[tuple[str, float, float]] = (), wordless: bool = False):
        self.drift, self.extra, self.wordless = drift, list(extra), wordless
        self.batches: list[list[Any]] = []
        self.during: Any = None  # called with each batch, before it returns

    def run(self, batch: Sequence[Any]) -> list[WindowResult]:
        self.batches.append(list(batch))
        if self.during:
            self.during(batch)
        return [self._hear(item) for item in batch]

    def _hear(self, item: Any) -> WindowResult:
        w: Window = item.window
        words = []
        for level, a, b in runs(w.audio):
            for k in range(int(b - a + 1e-6)):  # a run's length in samples, rounded
                s = a + k + 0.1 + self.drift
                words.append(Word(start=w.to_source(s), end=w.to_source(s + 0.8), word=f" w{level}.{k}", probability=1))
        words += [Word(start=s, end=e, word=f" {t}", probability=1) for t, s, e in self.extra]
        words.sort(key=lambda x: x.start)
        text = "".join(x.word for x in words)
        segment = WindowSegment(
            start=words[0].start, end=words[-1].end, text=text, words=None if self.wordless else words
        )
        return WindowResult(language="en", segments=[segment], speech_seconds=w.duration)


def run(ear: Ear, batch: Sequence[Any]) -> list[Any]:
    return run_packed(ear, batch, lambda r, b: run_isolating(r, b))


def row_seconds(row: Any, batch: Sequence[Any]) -> float:
    """A row's length: its pieces (or parts of them) and a gap between each two."""
    spans = [row.part(k, batch) for k in range(len(row.items))]
    return sum(b - a for a, b in spans) + GAP_SECONDS * (len(spans) - 1)


def spoken(level: int, *stretches: float, at: float = 0.0) -> Window:
    """A window of alternating speech and pauses (`stretches` seconds: speech, pause, speech,
    ...), the speech a constant signal of `level`."""
    parts = [
        np.full(round(s * SAMPLE_RATE), level / 100 if k % 2 == 0 else 0.0, np.float32) for k, s in enumerate(stretches)
    ]
    audio = np.concatenate(parts)
    start = round(at * SAMPLE_RATE)
    return Window(index=0, audio=audio, chunks=((start, start + len(audio)),))


def said(result: WindowResult) -> list[tuple[str, float, float]]:
    """Every word of a result's segments, with its source times."""
    return [(w.word, round(w.start, 3), round(w.end, 3)) for s in result.segments for w in s.words or []]


def test_short_jobs_share_rows_in_the_fewest_and_a_long_job_keeps_its_own() -> None:
    # Given eight short jobs (80.6 s of speech) and a long job's full window
    sizes = [9.79, 6.01, 12.56, 12.25, 9.56, 11.86, 6.55, 12.05]
    batch = [work(f"s{i}", window(i + 1, d)) for i, d in enumerate(sizes)]
    batch.append(work("long", window(50, 29.5, at=600), job_seconds=1200))
    # When planned
    rows = plan(batch)
    # Then the short ones fill 3 rows (first-fit decreasing would need 4), each within 30 s with
    # its gaps, and the long window is a row alone
    packed = [r for r in rows if r.packed]
    assert len(packed) == 3 and sorted(i for r in packed for i in r.items) == list(range(8))
    for r in packed:
        assert sum(sizes[i] for i in r.items) + GAP_SECONDS * (len(r.items) - 1) <= 30
    assert [r.items for r in rows if not r.packed] == [(8,)]


def test_what_is_never_packed() -> None:
    # A window detected per window (no language), a long job's short last window, a window
    # over 28 s, and two jobs with different prompts: none share a row
    batch = [
        work("auto", window(1, 5), options=DecodeOptions(language=None)),
        work("long-tail", window(2, 5, at=900), job_seconds=905),
        work("big", window(3, 28.5)),
        work("p1", window(4, 5), options=DecodeOptions(language="en", initial_prompt="One.")),
        work("p2", window(5, 5), options=DecodeOptions(language="en", initial_prompt="Two.")),
    ]
    assert all(not r.packed for r in plan(batch))


def test_a_job_asking_for_windows_of_its_own_keeps_them_and_the_others_still_share() -> None:
    # Given three short jobs of one language, the middle one asking for windows of its own
    own = DecodeOptions(language="en", share_windows=False)
    batch = [work("a", window(1, 5)), work("own", window(2, 5), options=own), work("b", window(3, 5))]
    # When planned
    rows = plan(batch)
    # Then the other two share a row and it runs alone, its row its own window
    assert sorted(r.items for r in rows if r.packed) == [(0, 2)]
    assert [r.items for r in rows if not r.packed] == [(1,)]
    assert not packable(batch[1]) and packable(batch[0])


def test_a_job_s_options_carry_its_choice_to_the_worker() -> None:
    assert DecodeOptions.from_job(JobOptions(language="en")).share_windows is True
    assert DecodeOptions.from_job(JobOptions(language="en", share_windows=False)).share_windows is False


def test_each_job_gets_only_its_own_words_in_its_own_source_time() -> None:
    # Given three short jobs whose speech starts at different source times, one asking for words
    a = work("a", window(1, 6.0, at=2.0))
    b = work("b", window(2, 8.0, at=0.5), options=DecodeOptions(language="en", word_timestamps=True))
    c = work("c", window(3, 7.0, at=10.0))
    ear = Ear()
    # When they run packed (one row; the ear answers one segment over all three)
    results = run(ear, [a, b, c])
    # Then the runner got one row, with word timestamps on, the pieces GAP_SECONDS apart
    (row,) = ear.batches[0]
    assert isinstance(row, PackedRequest) and row.options.word_timestamps
    starts = [(1, 0.0), (2, 6.0 + GAP_SECONDS), (3, 14.0 + 2 * GAP_SECONDS)]
    assert [(lvl, round(s, 2)) for lvl, s, _ in runs(row.window.audio)] == starts
    # ...and each job gets its own words only, inside its own audio, in its own source time
    expected = [("a", 1, 2.0, 6), ("b", 2, 0.5, 8), ("c", 3, 10.0, 7)]
    for (job, level, start, seconds), result in zip(expected, results, strict=True):
        (segment,) = result.segments
        assert segment.text == "".join(f" w{level}.{k}" for k in range(seconds)), job
        assert start <= segment.start and segment.end <= start + seconds, job
        assert segment.start == pytest.approx(start + 0.1)
        assert result.speech_seconds == seconds
    assert results[1].segments[0].words is not None and results[0].segments[0].words is None
    assert [w.start for w in results[1].segments[0].words][:2] == pytest.approx([0.6, 1.6])


def test_a_word_in_the_gap_goes_to_the_nearer_job_clamped_into_its_audio() -> None:
    # Given two jobs in a row (a: 0-6 s, gap 6-6.5 s, b: 6.5-12.5 s) and words the aligner put
    # in the gap: one nearer a's end, one nearer b's start, and one over the two pieces
    assert GAP_SECONDS == 0.5
    a, b = work("a", window(1, 6.0, at=3.0)), work("b", window(2, 6.0, at=0.0))
    ear = Ear(extra=[("late", 5.9, 6.2), ("early", 6.3, 6.6), ("across", 5.5, 7.9)])
    # When they run packed
    ra, rb = run(ear, [a, b])
    text_a, text_b = "".join(s.text for s in ra.segments), "".join(s.text for s in rb.segments)
    # Then each word went to one job by its midpoint (late 6.05 -> a, early 6.45 -> b, across
    # 6.7 -> b), never to both, and every time is inside the job's own audio
    assert "late" in text_a and "late" not in text_b
    assert "early" in text_b and "early" not in text_a
    assert ("across" in text_a) != ("across" in text_b) and "across" in text_b
    assert all(3.0 <= s.start <= s.end <= 9.0 for s in ra.segments)
    assert all(0.0 <= s.start <= s.end <= 6.0 for s in rb.segments)


def test_a_late_aligner_does_not_move_words_into_the_next_job() -> None:
    # Given an aligner 0.4 s late (less than half the gap plus the word's half length)
    results = run(Ear(drift=0.4), [work("a", window(1, 5.0)), work("b", window(2, 5.0)), work("c", window(3, 5.0))])
    # Then every job still has exactly its own five words
    for level, r in zip((1, 2, 3), results, strict=True):
        assert r.segments[0].text == "".join(f" w{level}.{k}" for k in range(5))


def test_a_row_that_cannot_be_split_runs_again_piece_by_piece() -> None:
    # Given a runner that answers a segment without words (it cannot be split by time)
    ear = Ear(wordless=True)
    a, b = work("a", window(1, 5.0)), work("b", window(2, 5.0))
    # When run packed
    ra, rb = run(ear, [a, b])
    # Then the row ran, then each piece alone, and each job has only its own text
    assert [len(x) for x in ear.batches] == [1, 2]
    assert [type(x) for x in ear.batches[1]] == [Work, Work]
    assert "w2" not in ra.segments[0].text and "w1" not in rb.segments[0].text


def test_a_failing_row_fails_only_the_job_whose_piece_fails() -> None:
    class Poisoned(Ear):
        def _hear(self, item: Any) -> WindowResult:
            if any(level == 2 for level, _, _ in runs(item.window.audio)):
                raise RuntimeError("cannot decode")
            return super()._hear(item)

    ra, rb, rc = run(Poisoned(), [work("a", window(1, 5.0)), work("b", window(2, 5.0)), work("c", window(3, 5.0))])
    assert isinstance(rb, RuntimeError)
    assert isinstance(ra, WindowResult) and isinstance(rc, WindowResult)


def short_jobs(batches: Batches, sizes: dict[str, float]) -> None:
    for level, (job, seconds) in enumerate(sizes.items(), start=1):
        batches._schedulers.setdefault(KEY, Scheduler(read_ahead=2))
        batches._schedulers[KEY].add(job, iter([window(level, seconds)]), options=EN, expected_seconds=seconds)
        batches._key[job] = KEY


def test_batches_fill_b_rows_shortest_first_and_round_robin_still_holds() -> None:
    # Given B = 2 rows, five short jobs and a long job of three full windows
    ear = Ear()
    batches = Batches(lambda _key: ear, batch_size=2, read_ahead=2)
    short_jobs(batches, {"j12": 12.0, "j9": 9.0, "j14": 14.0, "j8": 8.5, "j13": 13.0})  # j8: 8.5 s
    long_windows = [window(50, 29.0, at=30.0 * i, index=i) for i in range(3)]
    batches._schedulers[KEY].add("long", iter(long_windows), options=EN, expected_seconds=90.0)
    batches._key["long"] = KEY
    # When one step runs
    step = batches.step()
    # Then the batch ran as 2 rows, filled shortest first while the jobs still fit 2 rows
    # (8.5+9 and 12+13; 8.5+9+12 is 30.5 s with its gaps; 14 s would need a third), the rest (the
    # long job too) wait
    (rows,) = ear.batches
    assert len(rows) == 2 and all(isinstance(r, PackedRequest) for r in rows)
    assert sorted(lvl for r in rows for lvl, _, _ in runs(r.window.audio)) == [1, 2, 4, 5]
    events = {e.job: e for e in step.events}
    while not ear.batches[1:]:
        events.update({e.job: e for e in batches.step().events})
    # ...then the next holds 14 s and the long job's first window (one window per job per pass),
    # and every job finishes with its own words only
    assert [x.job for x in ear.batches[1]] == ["j14", "long"]
    while len(batches):
        events.update({e.job: e for e in batches.step().events})
    assert isinstance(events["long"], JobFinished) and len(events["long"].results) == 3
    for level, job in enumerate(["j12", "j9", "j14", "j8", "j13"], start=1):
        finished = events[job]
        assert isinstance(finished, JobFinished)
        assert {w.word.split(".")[0] for s in finished.results[0].segments for w in s.words or []} <= {f" w{level}"}
        assert finished.results[0].segments[0].text.startswith(f" w{level}.0")


def test_a_long_job_beside_short_ones_is_unaffected() -> None:
    # Given a long job held beside short ones
    ear = Ear()
    batches = Batches(lambda _key: ear, batch_size=4, read_ahead=4)
    short_jobs(batches, {"a": 5.0, "b": 6.0})
    long_windows = [window(50, 29.0, at=30.0 * i, index=i) for i in range(2)]
    batches._schedulers[KEY].add("long", iter(long_windows), options=EN, expected_seconds=60.5 * 20)
    batches._key["long"] = KEY
    events = {}
    while len(batches):
        events.update({e.job: e for e in batches.step().events})
    # Then the long job's windows reached the runner as they are (its own rows, its options)
    sent = [x for b in ear.batches for x in b if isinstance(x, Work) and x.job == "long"]
    assert [x.window for x in sent] == long_windows and all(x.options is EN for x in sent)
    # ...and its result is what the runner said of those windows alone
    finished = events["long"]
    assert isinstance(finished, JobFinished)
    assert [r.segments[0].text for r in finished.results] == ["".join(f" w50.{k}" for k in range(29))] * 2
    assert finished.results[1].segments[0].start == pytest.approx(30.1)


def test_cancelling_a_packed_job_drops_only_its_pieces() -> None:
    # Given three short jobs; "b" is cancelled before the batch and "c" while its row runs
    ear = Ear()
    batches = Batches(lambda _key: ear, batch_size=2, read_ahead=2)
    short_jobs(batches, {"a": 5.0, "b": 6.0, "c": 7.0, "d": 4.0})
    batches.remove("b")
    ear.during = lambda _batch: batches.remove("c")
    # When the batch runs
    step = batches.step()
    # Then b's piece never reached the runner, c's result was dropped, a and d got their own
    (rows,) = ear.batches
    (row,) = rows
    assert [lvl for lvl, _, _ in runs(row.window.audio)] == [4, 1, 3]  # shortest first
    ear.during = None
    events = {e.job: e for e in step.events}
    while len(batches):
        events.update({e.job: e for e in batches.step().events})
    assert set(events) == {"a", "d"} and "b" not in batches and "c" not in batches
    assert len(ear.batches) == 1  # nothing of b or c ran again
    a, d = events["a"], events["d"]
    assert isinstance(a, JobFinished) and isinstance(d, JobFinished)
    assert a.results[0].segments[0].text == "".join(f" w1.{k}" for k in range(5))
    assert d.results[0].segments[0].text == "".join(f" w4.{k}" for k in range(4))


def test_the_packer_is_what_limits_a_batch_to_b_rows() -> None:
    # Without packing a batch of B = 2 holds two windows; with it, as many short ones as fit
    def fill(pack: bool) -> int:
        scheduler: Scheduler[Window, Any] = Scheduler(read_ahead=2)
        for level in range(1, 7):
            scheduler.add(f"j{level}", iter([window(level, 5.0)]), options=EN, expected_seconds=5.0)
        return len(scheduler.next_batch(2, Packer().fits(2) if pack else None))

    assert fill(False) == 2
    assert fill(True) == 6  # 3 x 5 s + 2 gaps = 17 s per row


@pytest.mark.parametrize("seed", range(20))
def test_a_batch_the_packer_admits_always_runs_in_b_rows(seed: int) -> None:
    # Given short jobs of random lengths, some with another prompt, and a long job
    import random

    rng = random.Random(seed)
    scheduler: Scheduler[Window, Any] = Scheduler(read_ahead=2)
    for i in range(rng.randint(5, 40)):
        seconds = rng.uniform(0.5, 28.0)
        options = DecodeOptions(language="en", initial_prompt="Notes." if i % 5 == 0 else None)
        scheduler.add(f"j{i}", iter([window(1, seconds)]), options=options, expected_seconds=seconds)
    scheduler.add("long", iter([window(50, 29.0)]), options=EN, expected_seconds=600.0)
    size = rng.randint(1, 12)
    # When a batch is filled with the packer's test
    batch = scheduler.next_batch(size, Packer().fits(size))
    # Then it runs in at most B rows, each within 30 s with its gaps, every window once
    rows = plan(batch)
    assert 0 < len(rows) <= size
    assert sorted(i for r in rows for i in r.items) == list(range(len(batch)))
    for r in rows:
        assert row_seconds(r, batch) <= 30 + 1e-6


def test_packed_rows_prepared_ahead_are_the_rows_that_run() -> None:
    # Given a runner that prepares features (features.FeaturePrefetch knows a row by its samples'
    # address) and eight short jobs over B = 2 rows: several batches
    class Preparing(Ear):
        def __init__(self) -> None:
            super().__init__()
            self.prepared: list[int] = []

        def prepare(self, batch: Sequence[Any]) -> None:
            self.prepared += [id(item.window.audio) for item in batch]

    ear = Preparing()
    batches = Batches(lambda _key: ear, batch_size=2, read_ahead=2)
    short_jobs(batches, {f"j{i}": 6.0 + i for i in range(8)})
    events = {}
    while len(batches):
        events.update({e.job: e for e in batches.step().events})
    # Then every batch after the first ran packed rows whose samples are the ones prepared for
    # it (the layout made ahead is reused, so its features are found), and each job has its words
    later = [row for batch in ear.batches[1:] for row in batch]
    assert later and all(isinstance(r, PackedRequest) for r in later)
    assert {id(r.window.audio) for r in later} <= set(ear.prepared)
    assert all(isinstance(events[f"j{i}"], JobFinished) for i in range(8))


def test_a_piece_is_cut_at_its_pauses_and_only_there() -> None:
    # Given a piece: 3 s of speech, a 0.5 s pause, 3 s, a 0.1 s pause (too short), 2 s, then
    # 0.6 s of quiet at its end; its second VAD chunk joined on after the first
    w = spoken(10, 3.0, 0.5, 3.0, 0.1, 2.0, 0.6)
    n = len(w.audio)
    m = CUT_MARGIN_SECONDS
    # Then the one pause long enough is a cut (a little of its quiet kept each side), the short
    # one and the quiet at the edge are not
    assert cut_points(w) == [pytest.approx((3.0 + m, 3.5 - m), abs=0.02)]
    assert MIN_PAUSE_SECONDS > 0.1
    # Where two VAD chunks join (a long pause dropped) is a cut too
    half = spoken(1, 3.0, 0.5, 3.0)
    k = len(half.audio)
    joined = Window(index=0, audio=np.concatenate([half.audio, half.audio]), chunks=((0, k), (5 * k, 6 * k)))
    assert [round(a, 2) for a, _ in cut_points(joined)] == [round(3.0 + m, 2), 6.5, round(6.5 + 3.0 + m, 2)]
    # A pause under noise is a pause; speech a little quieter is not
    noisy = w.audio.copy()
    noisy[noisy == 0] = 0.001
    quieter = np.full(len(w.audio), 0.01, np.float32)
    quieter[: 3 * SAMPLE_RATE] = 0.04
    assert len(cut_points(Window(0, noisy, ((0, n),)))) == 1
    assert cut_points(Window(0, quieter, ((0, n),))) == []


def test_jobs_too_long_to_pair_are_cut_at_pauses_to_share_rows() -> None:
    # Given four 18 s jobs (a pause of 0.5 s after every 3 s of speech): two never fit a row
    # whole (36 s), so unpacked or packed whole they take four rows
    batch = [
        work(f"j{i}", spoken(i + 1, 3, 0.5, 3, 0.5, 3, 0.5, 3, 0.5, 4, at=10.0 * i), options=WORDS) for i in range(4)
    ]
    assert {round(x.window.duration, 2) for x in batch} == {18.0}
    # When planned and run packed
    rows = plan(batch)
    ear = Ear()
    packed = run(ear, batch)
    alone = run_isolating(Ear(), batch)
    # Then they run in three rows, each within 30 s, cut only at the pauses...
    assert len(rows) == 3 and all(row_seconds(r, batch) <= 30 + 1e-6 for r in rows)
    assert len(ear.batches[0]) == 3
    for i, x in enumerate(batch):
        parts = sorted(r.part(k, batch) for r in rows for k, j in enumerate(r.items) if j == i)
        assert parts[0][0] == 0.0 and parts[-1][1] == pytest.approx(18.0), i
        cuts = cut_points(x.window)
        for (_, end), (start, _) in itertools.pairwise(parts):
            assert (end, start) in cuts, i
    assert sum(1 for r in rows for k in range(len(r.items)) if r.part(k, batch) != (0.0, 18.0)) >= 2
    # ...and each job gets exactly the words, at the same source times, that it gets alone
    for i, (got, own) in enumerate(zip(packed, alone, strict=True)):
        assert isinstance(got, WindowResult) and isinstance(own, WindowResult)
        assert said(got) == said(own) and len(said(own)) == 16, i
        assert got.speech_seconds == 18.0
        assert [s.start for s in got.segments] == sorted(s.start for s in got.segments)


def test_pieces_are_not_cut_where_they_fit_whole() -> None:
    # Two 12 s jobs with pauses share one row whole: nothing is cut
    batch = [work("a", spoken(1, 6, 0.5, 5.5)), work("b", spoken(2, 6, 0.5, 5.5))]
    (row,) = plan(batch)
    assert row.items == (0, 1) and row.parts is None


def test_a_cut_job_whose_row_fails_runs_again_whole() -> None:
    # Given the four 18 s jobs cut over three rows, and a runner that cannot decode the row
    # holding a part of a cut job
    batch = [work(f"j{i}", spoken(i + 1, 3, 0.5, 3, 0.5, 3, 0.5, 3, 0.5, 4), options=WORDS) for i in range(4)]
    bad = next(r for r in plan(batch) if r.parts is not None)
    levels = {i + 1 for i in bad.items}

    class Failing(Ear):
        def _hear(self, item: Any) -> WindowResult:
            if isinstance(item, PackedRequest) and {lvl for lvl, _, _ in runs(item.window.audio)} == levels:
                raise RuntimeError("cannot decode")
            return super()._hear(item)

    ear = Failing()
    # When run packed
    results = run(ear, batch)
    # Then every job still gets its own words: the failed row's jobs ran again, each whole
    # (its other part's row was good, but a job's result is all of it or none)
    for got, own in zip(results, run_isolating(Ear(), batch), strict=True):
        assert isinstance(got, WindowResult) and isinstance(own, WindowResult) and said(got) == said(own)
    assert [(x.job, x.window.duration) for x in ear.batches[-1]] == [(batch[i].job, 18.0) for i in bad.items]


def test_a_batch_is_cut_into_lanes_of_consecutive_windows_as_even_as_counts_go() -> None:
    from gpu_container.worker.batched import lane_parts

    assert lane_parts(5, 2) == [(0, 3), (3, 5)]
    assert lane_parts(4, 2) == [(0, 2), (2, 4)]
    assert lane_parts(1, 2) == [(0, 1)]  # never an empty lane
    assert lane_parts(2, 1) == [(0, 2)]
    assert lane_parts(0, 2) == [(0, 0)]
    assert lane_parts(7, 3) == [(0, 3), (3, 5), (5, 7)]
