"""What the CLI shows while a user waits: the upload's size in a unit that fits it (a small
file is not `100% (0/0 MiB)`), and a running job's audio length and estimated finish."""

from __future__ import annotations

from typing import Any

import pytest

from batchscribe.api_models import InputView, JobView
from batchscribe.models import JobOptions, JobStatus
from batchscribe.settings import ClientSettings
from batchscribe_cli import cli


@pytest.mark.parametrize(
    ("sent", "total", "shown"),
    [
        (12_000, 12_000, "100% (12/12 KiB)"),
        (1_572_864, 3_355_443, " 46% (1.5/3.2 MiB)"),
        (16 * 2**20, 40 * 2**20, " 40% (16/40 MiB)"),
    ],
)
def test_the_upload_bar_shows_sizes_in_a_unit_that_fits(
    sent: int, total: int, shown: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ClientSettings.env_name("progress"), "true")
    show = cli._upload_progress(quiet=False)
    assert show is not None

    show(sent, total)

    assert capsys.readouterr().err.strip("\r\n") == f"uploading {shown}"


def job(**changes: Any) -> JobView:
    base: dict[str, Any] = {
        "job_id": "a" * 32,
        "status": JobStatus.RUNNING,
        "priority": "normal",
        "progress": 40,
        "attempt": 1,
        "created_at": "2026-12-07T10:00:00.000Z",
        "updated_at": "2026-12-07T10:00:00.000Z",
        "input": InputView(filename="talk.wav", content_type="audio/wav", size_bytes=1, duration_seconds=1200.4),
        "options": JobOptions(),
        "estimated_finish_at": "2026-12-07T10:12:30.000Z",
    }
    return JobView(**{**base, **changes})


def test_a_running_job_shows_its_audio_length_and_when_it_should_end() -> None:
    note = cli._running_note(job())
    assert note.startswith(" (20:00 of audio, done ~") and note.endswith(")")


def test_before_a_worker_opened_the_file_nothing_is_claimed() -> None:
    bare = job(input=InputView(filename="t.wav", content_type="audio/wav", size_bytes=1), estimated_finish_at=None)
    assert cli._running_note(bare) == ""
