"""Cross-job batching on the real tiny.en model and espeak speech: windows of several jobs
share batches, each job gets its own transcript back, a bad file fails only its job, and a
long file gives readable subtitles as good as faster-whisper's own sequential transcribe."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from batchscribe.whisper_models import SAMPLE_RATE
from gpu_container.worker import whisper_lib
from gpu_container.worker.batched import (
    BatchRunner,
    DecodeOptions,
    FasterWhisperBatchRunner,
    OpenAIWhisperBatchRunner,
    assemble,
    run_isolating,
)
from gpu_container.worker.engines import FasterWhisperEngine, OpenAIWhisperEngine
from gpu_container.worker.errors import InvalidMedia, NoAudio, TooLong
from gpu_container.worker.media import decode
from gpu_container.worker.scheduler import JobFailed, JobFinished, Scheduler
from gpu_container.worker.transcript import READABLE_CUES, Transcript, render
from gpu_container.worker.whisper_lib import library_transcribe
from gpu_container.worker.windows import iter_windows, open_media
from harness.audio import SENTENCES, convert, have_tools, long_text, make_video_only, speak, spoken_words

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not have_tools(), reason="espeak-ng and ffmpeg make the test speech"),
]

JOB_TEXTS = {f"job{i}": " ".join(SENTENCES[3 * i : 3 * i + 3]) for i in range(4)}


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(spoken_words(reference), spoken_words(hypothesis)))


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("speech")
    files = {job: speak(text, root / f"{job}.wav") for job, text in JOB_TEXTS.items()}
    files["job1"] = convert(files["job1"], root / "job1.mp3")  # containers differ too
    (root / "poison.wav").write_text("this is not audio")
    files["poison"] = root / "poison.wav"
    files["video"] = make_video_only(root / "video.mp4")
    return files


@pytest.fixture(scope="module")
def three_minutes(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    text = long_text(180)
    return text, speak(text, tmp_path_factory.mktemp("long") / "three.wav")


def test_the_vad_finds_what_faster_whisper_finds_reading_each_sample_once(three_minutes: tuple[str, Path]) -> None:
    """whisper_lib's VAD is faster-whisper's: its probabilities fed in uneven pieces (the
    model's state carried) are those of one call over the whole file, and its segment logic
    gives get_speech_timestamps' own chunks, with the worker's options and the pipeline's."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

    _, path = three_minutes
    audio = decode(path, 600).samples
    whole = np.asarray(get_vad_model()(np.pad(audio, (0, 512 - len(audio) % 512)))).reshape(-1)
    probs = whisper_lib.SpeechProbabilities()
    rng, at = np.random.default_rng(3), 0
    while at < len(audio):
        step = int(rng.integers(1, 50_000))
        probs.feed(audio[at : at + step])
        at += step
    probs.feed(np.zeros(0, np.float32), final=True)
    assert probs.frames == len(whole) and np.array_equal(probs.probabilities(0, probs.frames), whole)
    for options in (whisper_lib.vad_options(30), VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)):
        theirs = [(c["start"], c["end"]) for c in get_speech_timestamps(audio, options)]
        assert whisper_lib.speech_from_probabilities(whole, len(audio), options) == theirs and len(theirs) > 1


@pytest.mark.parametrize(("block", "carry"), [(64, 30), (120, 60)])
def test_a_streamed_file_is_cut_as_one_vad_pass_over_it_cuts_it(
    three_minutes: tuple[str, Path], block: int, carry: int
) -> None:
    """Blocks overlap (the speech still open at a block's end is carried into the next); the VAD
    reads each sample once all the same (it read the carried audio again: ~25 % more on a 5 min
    file), and the windows hold exactly the chunks one pass over the whole file finds."""
    from faster_whisper.vad import get_speech_timestamps

    _, path = three_minutes
    audio = decode(path, 600).samples
    with open_media(path, 600, block_seconds=block, max_carry_seconds=carry) as stream:
        windows = list(stream.windows())
        assert stream.vad_frames == len(audio) // 512 + 1  # every frame once, the last padded
    one_pass = [(c["start"], c["end"]) for c in get_speech_timestamps(audio, whisper_lib.vad_options(30))]
    assert [c for w in windows for c in w.chunks] == one_pass


@pytest.fixture(scope="module")
def fw_engine() -> FasterWhisperEngine:
    return FasterWhisperEngine(device="cpu", cpu_threads=2)


@pytest.fixture(scope="module")
def runners(fw_engine: FasterWhisperEngine) -> dict[str, BatchRunner]:
    return {
        "faster-whisper": FasterWhisperBatchRunner.from_engine(fw_engine),
        # greedy: openai-whisper's beam search is Python-bound and slow on 2 CPU cores
        "openai-whisper": OpenAIWhisperBatchRunner.from_engine(OpenAIWhisperEngine(device="cpu"), beam_size=1),
    }


def run_all(
    scheduler: Scheduler[Any, Any], runner: BatchRunner, size: int
) -> tuple[list[list[str]], dict[str, JobFinished[Any] | JobFailed]]:
    """The worker's loop, minus the AWS parts: batches until no job is held."""
    batches: list[list[str]] = []
    events: dict[str, JobFinished[Any] | JobFailed] = {}
    while len(scheduler):
        batch = scheduler.next_batch(size)
        if batch:
            batches.append([w.job for w in batch])
            scheduler.complete(batch, run_isolating(runner, batch))
        for event in scheduler.events():
            events[event.job] = event
    return batches, events


@pytest.mark.parametrize("engine", ["faster-whisper", "openai-whisper"])
def test_four_jobs_share_batches_and_each_gets_its_own_transcript(
    engine: str, runners: dict[str, BatchRunner], speech: dict[str, Path]
) -> None:
    # Given four jobs of different sentences (one asks for word timestamps, one brings a
    # prompt) and a poison file, all held by one worker
    scheduler: Scheduler[Any, Any] = Scheduler()
    streams = {}
    for job in JOB_TEXTS:
        stream = open_media(speech[job], 600)
        streams[job] = stream
        options = DecodeOptions(
            language="en", word_timestamps=job == "job0", initial_prompt="Weekly notes." if job == "job2" else None
        )
        scheduler.add(job, stream.windows(), options=options, expected_seconds=stream.duration)
    scheduler.add("poison", iter_windows(speech["poison"], 600), options=DecodeOptions(language="en"))

    # When they run in batches of 8
    batches, events = run_all(scheduler, runners[engine], size=8)

    # Then one batch held a window of every job...
    assert any(set(JOB_TEXTS) <= set(batch) for batch in batches)
    # ...the poison file failed alone with its classified error...
    assert isinstance(events["poison"], JobFailed) and isinstance(events["poison"].error, InvalidMedia)
    # ...and every other job got its own transcript back
    transcripts: dict[str, Transcript] = {}
    for job, text in JOB_TEXTS.items():
        event = events[job]
        assert isinstance(event, JobFinished), event
        transcripts[job] = assemble(event.results, streams[job].decoded_seconds)
        assert wer(text, transcripts[job].text) <= 0.2, (job, transcripts[job].text)
        others = [wer(other, transcripts[job].text) for o, other in JOB_TEXTS.items() if o != job]
        assert min(others) > 0.8  # not another job's words
        assert transcripts[job].language == "en"
        assert abs(transcripts[job].duration - decode(speech[job], 600).duration) < 0.05
    words0 = [w for s in transcripts["job0"].segments for w in s.words or []]
    assert len(words0) >= 15 and all(0 <= w.start <= w.end <= transcripts["job0"].duration + 0.01 for w in words0)
    assert all(s.words is None for s in transcripts["job1"].segments)
    for t in transcripts.values():  # sentence-level: three sentences, about 3 s each
        assert 2 <= len(t.segments) <= 4 and max(s.end - s.start for s in t.segments) < 8


def test_media_that_cannot_be_transcribed_is_refused_when_opened(speech: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidMedia):
        open_media(speech["poison"], 600)
    with pytest.raises(NoAudio):
        open_media(speech["video"], 600)
    with pytest.raises(TooLong):
        open_media(speech["job0"], 2)
    with pytest.raises(InvalidMedia):
        open_media(tmp_path / "missing.wav", 600)
    concat = tmp_path / "list.txt"
    concat.write_text(f"ffconcat version 1.0\nfile '{speech['job0']}'\n")
    with pytest.raises(InvalidMedia):
        open_media(concat, 600)


def test_a_long_file_streams_in_bounded_blocks_and_maps_back_to_the_source(three_minutes: tuple[str, Path]) -> None:
    _, path = three_minutes
    whole = decode(path, 600).samples
    with open_media(path, 600, block_seconds=64, max_carry_seconds=30) as stream:
        windows = list(stream.windows())
        assert stream.exhausted and stream.decoded_samples == len(whole)
        assert stream.peak_buffer_samples <= 65 * SAMPLE_RATE  # a block (carry included), never the file
    assert len(windows) >= 6 and all(w.duration <= 30.0 for w in windows)
    spans = [c for w in windows for c in w.chunks]
    assert all(a < b <= c for (a, b), (c, _) in itertools.pairwise(spans))  # ordered, no overlap
    for w in windows:  # each window is exactly the source audio at its chunks
        assert np.array_equal(w.audio, np.concatenate([whole[a:b] for a, b in w.chunks]))
    speech_seconds = sum(b - a for a, b in spans) / SAMPLE_RATE
    assert speech_seconds > 0.8 * len(whole) / SAMPLE_RATE  # espeak speaks almost throughout


def first_cue_lines(srt: str) -> Iterator[tuple[float, float, list[str]]]:
    for block in srt.strip().split("\n\n"):
        lines = block.split("\n")
        start, end = (
            sum(float(x) * f for x, f in zip(re.split("[:,]", s), (3600, 60, 1, 0.001), strict=True))
            for s in lines[1].split(" --> ")
        )
        yield start, end, lines[2:]


def test_three_minutes_batched_give_readable_subtitles_as_accurate_as_sequential(
    fw_engine: FasterWhisperEngine, runners: dict[str, BatchRunner], three_minutes: tuple[str, Path]
) -> None:
    text, path = three_minutes
    # sequential: faster-whisper's own transcribe, one 30 s window after another
    audio = decode(path, 600)
    sequential = library_transcribe(fw_engine, audio.samples, language="en")

    # batched: the same file as VAD windows through the batched runner, with words
    scheduler: Scheduler[Any, Any] = Scheduler()
    stream = open_media(path, 600)
    scheduler.add("long", stream.windows(), options=DecodeOptions(language="en", word_timestamps=True))
    _, events = run_all(scheduler, runners["faster-whisper"], size=8)
    event = events["long"]
    assert isinstance(event, JobFinished)
    batched = assemble(event.results, stream.decoded_seconds)

    seq_wer, batched_wer = wer(text, sequential), wer(text, batched.text)
    assert batched_wer <= 0.1
    assert batched_wer <= seq_wer + 0.01, (batched_wer, seq_wer)

    # sentence-level segments with punctuation
    sentences = len(re.findall(r"[.!?]", text))
    assert 0.7 * sentences <= len(batched.segments) <= 1.3 * sentences
    assert sum(s.text.rstrip().endswith((".", "?", "!")) for s in batched.segments) >= 0.8 * len(batched.segments)
    # readable cues: at most 7 s, at most 2 lines of at most 42 characters, in order
    srt = render(batched, "srt", cues=READABLE_CUES)
    cues = list(first_cue_lines(srt))
    assert len(cues) >= len(batched.segments)
    prev_end = 0.0
    for start, end, lines in cues:
        assert prev_end <= start < end <= start + 7.0 + 1e-9
        assert 1 <= len(lines) <= 2 and all(0 < len(line) <= 42 for line in lines), lines
        prev_end = end
    assert abs(cues[-1][1] - audio.duration) < 3.0


def test_each_window_is_decoded_once_and_timed_by_its_words_whether_or_not_they_are_asked(
    fw_engine: FasterWhisperEngine, three_minutes: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the three-minute file's windows and the batched faster-whisper runner, counting
    # the rows each greedy/beam decode (temperature 0) is given
    text, path = three_minutes
    runner = FasterWhisperBatchRunner.from_engine(fw_engine)
    rows: list[int] = []
    generate = runner.steps.generate

    def counted(encoder_output: Any, prompts: list[list[int]], *args: Any, **kwargs: Any) -> Any:
        if kwargs["temperature"] == 0:
            rows.append(len(prompts))
        return generate(encoder_output, prompts, *args, **kwargs)

    monkeypatch.setattr(runner.steps, "generate", counted)
    with open_media(path, 600) as stream:
        windows = list(stream.windows())
        duration = stream.decoded_seconds
    transcripts = {}
    for with_words in (False, True):
        # When the windows run in batches of 8, with and without word timestamps
        scheduler: Scheduler[Any, Any] = Scheduler()
        scheduler.add("long", iter(windows), options=DecodeOptions(language="en", word_timestamps=with_words))
        _, events = run_all(scheduler, runner, size=8)
        event = events["long"]
        assert isinstance(event, JobFinished)
        transcripts[with_words] = assemble(event.results, duration)

    # Then every window was decoded once (no second pass over a window's rest)...
    assert sum(rows) == 2 * len(windows)
    # ...the segments are the same either way: sentences timed by their words...
    plain, worded = transcripts[False], transcripts[True]
    assert [(s.text, s.start, s.end) for s in plain.segments] == [(s.text, s.start, s.end) for s in worded.segments]
    assert all(s.words is None for s in plain.segments) and all(s.words for s in worded.segments)
    for s in worded.segments:
        assert s.words is not None and (s.start, s.end) == (s.words[0].start, s.words[-1].end)
    # ...inside the audio, in order, one a sentence, as accurate as before
    assert all(0 <= a.start <= a.end <= b.start for a, b in itertools.pairwise(plain.segments))
    assert plain.segments[-1].end <= duration + 0.01
    sentences = len(re.findall(r"[.!?]", text))
    assert 0.8 * sentences <= len(plain.segments) <= 1.2 * sentences
    assert wer(text, plain.text) <= 0.1
    # ...and no less accurate than decoding with timestamp tokens (and second passes)
    tokens = FasterWhisperBatchRunner.from_engine(fw_engine, timestamp_tokens=True)
    scheduler = Scheduler()
    scheduler.add("long", iter(windows), options=DecodeOptions(language="en"))
    _, events = run_all(scheduler, tokens, size=8)
    event = events["long"]
    assert isinstance(event, JobFinished)
    assert wer(text, plain.text) <= wer(text, assemble(event.results, duration).text) + 0.01


def test_the_encoder_reads_a_cpu_batch_a_few_rows_at_a_time_with_the_same_output(
    fw_engine: FasterWhisperEngine, three_minutes: tuple[str, Path]
) -> None:
    from gpu_container.worker.whisper_lib import CPU_ENCODE_ROWS, FasterWhisperSteps

    _, path = three_minutes
    with open_media(path, 600) as stream:
        audios = [w.audio for w in itertools.islice(stream.windows(), 2 * CPU_ENCODE_ROWS + 1)]
    steps = FasterWhisperSteps(fw_engine.model)
    features = steps.features(audios)
    joined = np.asarray(steps.encode(features))  # in row groups of CPU_ENCODE_ROWS
    whole = np.asarray(fw_engine.model.encode(features))  # all rows in one call
    assert joined.shape == whole.shape == (len(audios), 1500, 384)
    np.testing.assert_allclose(joined, whole, rtol=1e-3, atol=1e-3)
    # A fallback's rows on a CPU come from that output, not the encoder again
    rows = [3, 0]
    again = np.asarray(steps.encoded_rows(steps.encode(features), features, rows))
    np.testing.assert_allclose(again, np.asarray(fw_engine.model.encode(features[rows])), rtol=1e-3, atol=1e-3)


def test_a_fallback_on_a_cpu_runs_no_encoder_again(
    fw_engine: FasterWhisperEngine, speech: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from gpu_container.worker.scheduler import Work

    # Given a runner for which every decode looks unlikely (so every window falls back to the
    # next temperature), counting the rows the encoder reads
    runner = FasterWhisperBatchRunner.from_engine(fw_engine).tune(temperatures=(0.0, 0.4))
    monkeypatch.setattr(runner, "defaults", dataclasses.replace(runner.defaults, log_prob_threshold=0.0))
    encoded: list[int] = []
    encode = runner.steps.encode

    def counted(features: Any) -> Any:
        encoded.append(len(features))
        return encode(features)

    monkeypatch.setattr(runner.steps, "encode", counted)
    batch = []
    for job in sorted(speech)[:2]:
        with open_media(speech[job], 600) as stream:
            batch.append(Work(job, 0, next(iter(stream.windows())), DecodeOptions(language="en"), None, 10.0))
    # When two windows run in one batch
    results = runner.run(batch)
    # Then the encoder read each once (one in each of the CPU's two lanes): the fallback decoded
    # again from its output
    assert encoded == [1, 1] and all(r.segments for r in results)


def test_a_cpu_batch_is_split_between_two_lanes_run_side_by_side_with_the_same_transcript(
    fw_engine: FasterWhisperEngine, three_minutes: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from gpu_container.worker.scheduler import Work

    # Given the worker's CPU engine (two replicas sharing the weights, one thread each) and the
    # library's way of loading it (one replica with both threads)
    assert fw_engine.lanes == 2 and fw_engine.model.model.num_workers == 2
    single = FasterWhisperEngine(device="cpu", cpu_threads=2, lanes=1)
    assert single.lanes == 1 and single.model.model.num_workers == 1
    _, path = three_minutes
    with open_media(path, 600) as stream:
        windows = list(itertools.islice(stream.windows(), 5))
    options = DecodeOptions(language="en", word_timestamps=True)
    batch = [Work("long", i, w, options, None) for i, w in enumerate(windows)]

    # When a batch of five windows runs on each, the lanes' model calls recorded
    laned = FasterWhisperBatchRunner.from_engine(fw_engine)
    calls: list[tuple[str, str, int, float, float]] = []
    for step in ("encode", "generate"):
        original = getattr(laned.steps, step)

        def recorded(first: Any, *args: Any, _step: str = step, _call: Any = original, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _call(first, *args, **kwargs)
            finally:
                rows = len(args[0]) if _step == "generate" else len(first)
                calls.append((_step, threading.current_thread().name, rows, started, time.perf_counter()))

        monkeypatch.setattr(laned.steps, step, recorded)
    split = laned.run(batch)
    whole = FasterWhisperBatchRunner.from_engine(single).run(batch)

    # Then it ran as two batches of its own, 3 windows and 2, on two threads at the same time...
    threads = {name for _, name, *_ in calls}
    assert len(threads) == 2
    decoded = sorted(rows for step, _, rows, *_ in calls if step == "generate")
    assert decoded == [2, 3]
    spans = [(min(c[3] for c in calls if c[1] == t), max(c[4] for c in calls if c[1] == t)) for t in sorted(threads)]
    assert max(a for a, _ in spans) < min(b for _, b in spans)  # the two lanes' work overlapped
    # ...and each window came back in its place with what the one-replica runner gives it
    assert len(split) == len(whole) == len(windows)
    for a, b in zip(split, whole, strict=True):
        assert [s.text for s in a.segments] == [s.text for s in b.segments]
        for x, y in zip(a.segments, b.segments, strict=True):
            assert abs(x.start - y.start) <= 0.02 and abs(x.end - y.end) <= 0.02


def test_a_lane_that_fails_fails_the_batch_after_the_other_lane_ended(
    fw_engine: FasterWhisperEngine, speech: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from gpu_container.worker.scheduler import Work

    # Given a runner whose second lane's decode fails, and whose first lane's is slow
    runner = FasterWhisperBatchRunner.from_engine(fw_engine)
    generate = runner.steps.generate
    running: list[int] = [0]
    ended_after_failure: list[bool] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith("lane"):
            raise RuntimeError("a lane's decode failed")
        running[0] += 1
        time.sleep(0.5)
        try:
            return generate(*args, **kwargs)
        finally:
            running[0] -= 1
            ended_after_failure.append(True)

    monkeypatch.setattr(runner.steps, "generate", flaky)
    with open_media(speech["job0"], 600) as stream:
        window = next(iter(stream.windows()))
    batch = [Work(f"job{i}", 0, window, DecodeOptions(language="en"), None) for i in range(2)]

    # When the batch runs, the lane's error comes out once the main lane's decode has ended
    with pytest.raises(RuntimeError, match="a lane's decode failed"):
        runner.run(batch)
    assert running == [0] and ended_after_failure == [True]
    # And the worker's isolation runs each window alone (one lane): both transcribed
    results = run_isolating(runner, batch)
    assert all(not isinstance(r, BaseException) and r.segments for r in results)
