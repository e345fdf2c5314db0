"""Window packing on the real tiny.en model and espeak speech: four short jobs, each of
different sentences, share one 30 s window through the worker's Batches; each job gets its own
transcript back (as good as unpacked), with timestamps inside its own audio, and no word of
one job appears in another's. A job asking for windows of its own is never packed, and comes out
the same beside any neighbours. Three jobs of 16-19 s, too long to pair whole, share two rows
with one of them cut at a sentence pause, and each still gets all of its own transcript."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gpu_container.worker.batched import DecodeOptions, FasterWhisperBatchRunner, assemble_stream
from gpu_container.worker.batches import Batches
from gpu_container.worker.engines import FasterWhisperEngine
from gpu_container.worker.packing import PackedRequest
from gpu_container.worker.scheduler import JobFinished
from gpu_container.worker.transcript import Transcript
from gpu_container.worker.windows import open_media
from harness.audio import SENTENCES, have_tools, speak, spoken_words

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not have_tools(), reason="espeak-ng and ffmpeg make the test speech"),
]

TEXTS = {
    "a": SENTENCES[0],
    "b": SENTENCES[1] + " " + SENTENCES[4],
    "c": SENTENCES[2],
    "d": SENTENCES[3] + " " + SENTENCES[5],
}


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("packed")
    return {job: speak(text, root / f"{job}.wav") for job, text in TEXTS.items()}


@pytest.fixture(scope="module")
def runner() -> FasterWhisperBatchRunner:
    return FasterWhisperBatchRunner.from_engine(FasterWhisperEngine(device="cpu", cpu_threads=2))


class Spy:
    """The runner, recording what each call got."""

    def __init__(self, inner: FasterWhisperBatchRunner) -> None:
        self.inner, self.name, self.model_name, self.device = inner, inner.name, inner.model_name, inner.device
        self.calls: list[list[Any]] = []

    def run(self, batch: Any) -> Any:
        self.calls.append(list(batch))
        return self.inner.run(batch)


def transcribe(
    runner: Any,
    speech: dict[str, Path],
    pack: bool,
    batch_size: int = 4,
    fill_wait: float = 0.3,
    own: frozenset[str] = frozenset(),
) -> dict[str, Transcript]:
    batches = Batches(lambda _key: runner, batch_size=batch_size, read_ahead=2, pack=pack, fill_wait=fill_wait)
    streams = {}
    for job, path in speech.items():
        streams[job] = stream = open_media(path, 600)
        options = DecodeOptions(language="en", word_timestamps=job == "b", share_windows=job not in own)
        batches.add(job, ("faster-whisper", "tiny.en"), stream, options)
    out: dict[str, Transcript] = {}
    while len(batches):
        step = batches.step()
        for event in step.events:
            assert isinstance(event, JobFinished), event
            out[event.job] = assemble_stream(event.results, streams[event.job])
        if not step.ran:
            time.sleep(0.01)  # as the worker's loop: the decoding threads get the interpreter
    return out


def each_its_own(
    texts: dict[str, str], packed: dict[str, Transcript], alone: dict[str, Transcript], wer: float
) -> None:
    """Each job's packed transcript: its own text (WER at most `wer`, or no worse than unpacked),
    no word that only another job's text has, its segments in order and inside its own audio."""
    import jiwer

    for job, text in texts.items():
        got = packed[job]
        error = jiwer.wer(spoken_words(text), spoken_words(got.text))
        error_alone = jiwer.wer(spoken_words(text), spoken_words(alone[job].text))
        assert error <= max(wer, error_alone), (job, got.text)
        others = {w for j, t in texts.items() if j != job for w in spoken_words(t).split()}
        others -= set(spoken_words(text).split())
        assert not others & set(spoken_words(got.text).split()), (job, got.text)
        starts = [s.start for s in got.segments]
        assert got.segments and starts == sorted(starts), job
        assert all(0.0 <= s.start <= s.end <= got.duration + 1e-3 for s in got.segments), job


def test_packed_jobs_each_get_their_own_transcript(runner: FasterWhisperBatchRunner, speech: dict[str, Path]) -> None:

    # Given four short jobs of different sentences, one asking for word timestamps
    spy = Spy(runner)
    # When they run through the worker's Batches with packing, and again without
    packed = transcribe(spy, speech, pack=True)
    alone = transcribe(runner, speech, pack=False)
    # Then their windows shared packed rows (fewer rows than jobs)...
    rows = [x for call in spy.calls for x in call]
    assert any(isinstance(x, PackedRequest) for x in rows) and len(rows) < len(TEXTS)
    # ...and each job's transcript is its own, as good as unpacked, inside its own audio
    each_its_own(TEXTS, packed, alone, 0.15)
    # The job that asked for words has them, inside its segments; the others have none
    b_words = [w for s in packed["b"].segments for w in s.words or []]
    assert len(b_words) >= len(spoken_words(TEXTS["b"]).split()) - 2
    assert all(0.0 <= w.start <= w.end <= packed["b"].duration + 1e-3 for w in b_words)
    assert all(s.words is None for job in "acd" for s in packed[job].segments)


def test_a_job_with_windows_of_its_own_comes_out_the_same_beside_any_jobs(
    runner: FasterWhisperBatchRunner, speech: dict[str, Path]
) -> None:

    # Given job c asking for windows of its own (share_windows false)
    own = frozenset("c")
    spy = Spy(runner)
    # When it runs alone, beside the three other short jobs, and beside one of them
    alone = transcribe(runner, {"c": speech["c"]}, pack=True, own=own)
    beside = transcribe(spy, speech, pack=True, own=own)
    beside_d = transcribe(runner, {"c": speech["c"], "d": speech["d"]}, pack=True, own=own, batch_size=2)
    # Then the others shared a row while c's window ran as a row of its own...
    rows = [x for call in spy.calls for x in call]
    assert any(isinstance(x, PackedRequest) for x in rows)
    assert [x for x in rows if not isinstance(x, PackedRequest) and x.job == "c"]

    # ...and its transcript is the same each time: text and every segment's times
    def timed(t: Transcript) -> list[tuple[float, float, str]]:
        return [(s.start, s.end, s.text) for s in t.segments]

    assert timed(beside["c"]) == timed(alone["c"]) == timed(beside_d["c"]) and spoken_words(alone["c"].text).split()
    each_its_own(TEXTS, beside, beside, 0.15)


LONGER = {"a": " ".join(SENTENCES[0:5]), "b": " ".join(SENTENCES[5:10]), "c": " ".join(SENTENCES[10:16])}


def test_jobs_too_long_to_pair_share_rows_cut_at_a_pause(runner: FasterWhisperBatchRunner, tmp_path: Path) -> None:

    # Given three jobs of 16-19 s (two of them never fit one 30 s row whole)
    speech = {job: speak(text, tmp_path / f"{job}.wav") for job, text in LONGER.items()}
    spy = Spy(runner)
    # When they run packed through the worker's Batches with B = 3 rows, and again unpacked
    # (the first batch waits for all three to be decoded however busy the machine is)
    packed = transcribe(spy, speech, pack=True, batch_size=3, fill_wait=30)
    alone = transcribe(runner, speech, pack=False, batch_size=3)
    # Then they ran in one batch of two rows (a job cut at a pause between them), not three...
    assert [len(call) for call in spy.calls[:1]] == [2] and all(isinstance(x, PackedRequest) for x in spy.calls[0])
    # ...and each job's transcript is all of its own sentences, in order, as good as unpacked
    each_its_own(LONGER, packed, alone, 0.1)
