"""A file whose name says nothing of its type (no extension) is declared by what its first
bytes show, so a FLAC file called `recording` is not refused 415; `--content-type` names it
outright."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchscribe import media_types
from batchscribe_cli.client import Client
from harness.audio import convert, have_tools, speak

pytestmark = pytest.mark.skipif(not have_tools(), reason="needs espeak-ng and ffmpeg")

CONTAINERS = [
    ("flac", [], "audio/flac"),
    ("wav", [], "audio/wav"),
    ("mp3", [], "audio/mpeg"),
    ("ogg", [], "audio/ogg"),
    ("m4a", ["-c:a", "aac"], "audio/mp4"),
    ("mkv", [], "video/x-matroska"),
    ("aiff", [], "audio/aiff"),
]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak("Hello there.", tmp_path_factory.mktemp("sniff") / "hello.wav")


@pytest.mark.parametrize(("ext", "args", "expected"), CONTAINERS, ids=[c[0] for c in CONTAINERS])
def test_the_first_bytes_name_the_container(
    speech: Path, tmp_path: Path, ext: str, args: list[str], expected: str
) -> None:
    made = convert(speech, tmp_path / f"x.{ext}", *args)
    bare = made.rename(tmp_path / "recording")  # no extension left

    head = bare.read_bytes()[: media_types.SNIFF_BYTES]
    assert media_types.sniff(head) == expected
    assert media_types.is_supported(expected)


def test_text_and_noise_are_not_media() -> None:
    assert media_types.sniff(b"hello, world\n") is None
    assert media_types.sniff(b"") is None


def created_with(monkeypatch: pytest.MonkeyPatch, path: Path, **kw: Any) -> dict[str, Any]:
    sent: dict[str, Any] = {}
    monkeypatch.setattr(Client, "_create", lambda _self, body, *_a: sent.update(body) or {"job_id": "x"})
    Client("http://127.0.0.1:1", owner="ann").create_job(path, **kw)
    return sent


def test_the_client_declares_a_bare_flac_file_as_flac(
    speech: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = convert(speech, tmp_path / "x.flac").rename(tmp_path / "recording")

    assert created_with(monkeypatch, bare)["content_type"] == "audio/flac"
    # the extension still wins, and an explicit type over both
    assert created_with(monkeypatch, speech)["content_type"] == "audio/wav"
    assert created_with(monkeypatch, bare, content_type="audio/x-flac")["content_type"] == "audio/x-flac"
