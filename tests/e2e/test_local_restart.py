"""`batchscribe local up` as a user runs it, stopped with Ctrl-C (SIGINT) and started again on
the same data folder: a job whose file went up in parts is still the same job after the
restart (its pinned multipart ETag survives the snapshot) and runs to success."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from batchscribe_cli.client import MULTIPART_BYTES, Client
from harness.audio import SHORT_TEXT, convert, speak
from tests.e2e.local_up import API_LINE, local_up
from tests.e2e.waits import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Speech in a 48 kHz stereo float WAV padded to 50 s: ~18 MiB, so it goes up in two parts."""
    d = tmp_path_factory.mktemp("audio")
    wav = convert(
        speak(SHORT_TEXT, d / "short.wav"),
        d / "big.wav",
        "-af",
        "apad=whole_dur=50",
        "-ar",
        "48000",
        "-ac",
        "2",
        "-c:a",
        "pcm_f32le",
    )
    assert wav.stat().st_size > MULTIPART_BYTES
    return wav


def test_a_multipart_upload_survives_a_ctrl_c_restart(tmp_path: Path, big_wav: Path) -> None:
    data = tmp_path / "data"
    # Given a stack without workers (the job stays queued) and a file uploaded in parts
    with local_up(data, "--max-workers", "0") as first:
        api = first.wait_for(API_LINE).split("=", 1)[1]
        client = Client(api, owner="erin")
        job_id = client.submit(big_wav, {"language": "en"})["job_id"]
        wait_until(lambda: client.get(job_id)["status"] == "queued", 60)
        first.proc.send_signal(signal.SIGINT)
        first.wait_for("saved")
        assert first.proc.wait(timeout=120) == 0
    # When it starts again on the same folder, with a worker
    with local_up(data, "--max-workers", "1") as second:
        api = second.wait_for(API_LINE).split("=", 1)[1]
        client = Client(api, owner="erin")
        done = client.wait(job_id, timeout=300)
        # Then the job is the same job and it succeeds (not `input_changed`)
        assert done["status"] == "succeeded", done.get("error")
        assert "weather" in client.result_text(done, "txt").lower()
