"""Channel identification: a two-channel call with one speaker per channel comes back with
both speakers' words, each segment tagged with its channel, merged by time, and labelled in
every format. Without the option the same file is one mono mix, untagged."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from batchscribe.models import JobStatus
from batchscribe.repository import JobRepository
from gpu_container.worker.engines import Engine
from gpu_container.worker.windows import SplitStream, open_channels
from harness.audio import speak, spoken_words
from tests.conftest import Stack
from tests.integration.workers import make_worker, s3_text, submit

pytestmark = pytest.mark.slow

CALLER = "Hello, I would like to book a table for two people tonight."
AGENT = "Certainly. We have a table free at eight o'clock this evening."


@pytest.fixture(scope="module")
def call_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Left: the caller, from the start. Right: the agent, answering once the caller is done."""
    d = tmp_path_factory.mktemp("call")
    caller, agent = speak(CALLER, d / "caller.wav"), speak(AGENT, d / "agent.wav")
    out = d / "call.wav"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(caller), "-i", str(agent), "-filter_complex",
         "[0:a]apad[l];[1:a]adelay=4500,apad[r];[l][r]join=inputs=2:channel_layout=stereo[a]",
         "-map", "[a]", "-t", "12", str(out)],
        check=True,
    )  # fmt: skip
    return out


def test_the_stereo_file_opens_as_one_stream_per_channel(call_recording: Path) -> None:
    stream = open_channels(call_recording, 600)
    assert isinstance(stream, SplitStream) and stream.channels == 2
    windows = list(stream.windows())
    assert {w.channel for w in windows} == {0, 1}
    assert stream.window_channels == [w.channel for w in windows]
    assert [w.progress_end for w in windows] == sorted(w.progress_end for w in windows)  # progress only grows


def test_each_channel_is_transcribed_apart_and_tagged(
    aws_stack: Stack, call_recording: Path, engines: dict[str, Engine]
) -> None:
    job_id = submit(aws_stack, call_recording, "audio/wav", language="en", channels="split")
    make_worker(aws_stack, engines["faster-whisper"], max_jobs=1).run()
    job = JobRepository(aws_stack.table).get(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.result is not None
    outputs = job.result.outputs
    data = json.loads(s3_text(aws_stack, outputs["json"]))
    by_channel = {ch: " ".join(s["text"] for s in data["segments"] if s["channel"] == ch) for ch in (0, 1)}
    caller, agent = spoken_words(by_channel[0]), spoken_words(by_channel[1])
    assert "hello" in caller and "people" in caller
    assert "certainly" in agent and "evening" in agent
    assert "hello" not in agent and "evening" not in caller  # each channel holds its own speaker only
    starts = [s["start"] for s in data["segments"]]
    assert starts == sorted(starts) and data["segments"][0]["channel"] == 0  # merged by time: the caller first
    assert min(s["start"] for s in data["segments"] if s["channel"] == 1) >= 4.0
    srt, vtt, txt = (s3_text(aws_stack, outputs[f]) for f in ("srt", "vtt", "txt"))
    # one numbering in every format: the JSON's channel 0 is "Channel 0" in txt, srt and vtt
    assert "[Channel 0] " in srt and "[Channel 1] " in srt and "[Channel 2]" not in srt
    assert "<v Channel 0>" in vtt and "<v Channel 1>" in vtt
    assert txt.splitlines()[0].startswith("[Channel 0] ")
    cue_starts = re.findall(r"^(\d\d:\d\d:\d\d,\d\d\d) -->", srt, flags=re.MULTILINE)
    assert cue_starts == sorted(cue_starts)  # cues in time order across channels


def test_without_the_option_the_channels_are_mixed(
    aws_stack: Stack, call_recording: Path, engines: dict[str, Engine]
) -> None:
    job_id = submit(aws_stack, call_recording, "audio/wav", language="en")
    make_worker(aws_stack, engines["faster-whisper"], max_jobs=1).run()
    job = JobRepository(aws_stack.table).get(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.result is not None
    data = json.loads(s3_text(aws_stack, job.result.outputs["json"]))
    assert all("channel" not in s for s in data["segments"])
    text = spoken_words(" ".join(s["text"] for s in data["segments"]))
    assert "hello" in text and "evening" in text
