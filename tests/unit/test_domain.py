"""Pure rules: the state machine table, key layout, media types, options, settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from batchscribe import keys, media_types
from batchscribe.jobs import sanitize_filename
from batchscribe.models import TERMINAL_STATUSES, JobOptions, JobStatus
from batchscribe.settings import ConfigError, IntakeSettings
from batchscribe.state_machine import TRANSITIONS, Transition, allowed, target


def test_no_transition_leaves_a_terminal_status() -> None:
    for transition, (sources, _) in TRANSITIONS.items():
        assert not sources & TERMINAL_STATUSES, transition


def test_the_documented_edges_exist() -> None:
    edges = {(s, target(t)) for t, (sources, _) in TRANSITIONS.items() for s in sources}
    P, Q, R = JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING
    expected = {
        (P, Q),
        (Q, R),
        (R, JobStatus.SUCCEEDED),
        (R, Q),
        *((s, JobStatus.CANCELLED) for s in (P, Q, R)),
        *((s, JobStatus.FAILED) for s in (P, Q, R)),
    }
    assert expected <= edges
    assert not allowed(Transition.SUCCEED, JobStatus.QUEUED)
    assert not allowed(Transition.ENQUEUE, JobStatus.RUNNING)


def test_upload_keys_round_trip_and_reject_anything_else() -> None:
    okey, job_id = keys.owner_key("arn:aws:iam::1:user/a"), keys.new_job_id()
    assert keys.parse_upload_key(keys.upload_key(okey, job_id)) == (okey, job_id)
    for bad in (
        "uploads/x/y/input",
        f"uploads/{okey}/{job_id}/input/../x",
        f"outputs/{okey}/{job_id}/input",
        "",
    ):
        assert keys.parse_upload_key(bad) is None
    assert keys.owner_key("a") != keys.owner_key("b")
    assert "user" not in okey


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("talk.wav", "talk.wav"),
        ("C:\\Users\\me\\talk.mp3", "talk.mp3"),
        ("../../x.wav", "x.wav"),
        ("a\nb\x00.wav", "a_b_.wav"),
        ("..", "upload"),
        ("x" * 400 + ".wav", "x" * 255),
    ],
)
def test_filenames_are_sanitized(raw: str, clean: str) -> None:
    assert sanitize_filename(raw) == clean


def test_media_types() -> None:
    assert media_types.is_supported("Audio/Mpeg; x=1")
    assert not media_types.is_supported("text/plain")
    assert media_types.guess("a.MP3") == "audio/mpeg"
    assert media_types.guess("notes.txt") is None
    assert all(media_types.is_supported(ct) for ct in media_types._BY_EXTENSION.values())


def test_job_options_defaults_and_validation() -> None:
    opts = JobOptions()
    assert (opts.language, opts.task, opts.formats) == ("auto", "transcribe", ["json", "txt", "srt", "vtt"])
    assert JobOptions(language="yue").language == "yue"
    assert JobOptions(formats=["srt", "srt", "txt"]).formats == ["srt", "txt"]
    bad_options: list[dict[str, object]] = [
        {"language": "english"},
        {"language": "zz"},  # shaped like a code, but not one of Whisper's
        {"language": "EN"},  # codes are exact, as the OpenAPI enum says
        {"word_timestamps": "yes"},
        {"word_timestamps": 1},
        {"task": "summarize"},
        {"formats": []},
        {"unknown": 1},
        {"initial_prompt": "x" * 1001},
    ]
    for bad in bad_options:
        with pytest.raises(ValidationError):
            JobOptions.model_validate(bad)


def test_the_language_list_is_whispers() -> None:
    """The core's copy of Whisper's language codes matches both engines' tokenizers."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES
    from whisper.tokenizer import LANGUAGES as OPENAI_WHISPER

    from batchscribe.languages import LANGUAGE_CHOICES, LANGUAGES, is_english_only

    assert LANGUAGES == OPENAI_WHISPER
    assert set(LANGUAGES) == set(_LANGUAGE_CODES)
    assert LANGUAGE_CHOICES[0] == "auto" and len(LANGUAGE_CHOICES) == 101
    assert is_english_only("tiny.en") and is_english_only("/models/Systran/faster-whisper-small.en/")
    assert not is_english_only("large-v3-turbo") and not is_english_only("tiny")


def test_settings_fail_loudly_naming_the_missing_variable() -> None:
    with pytest.raises(ConfigError, match="BATCHSCRIBE_TABLE_NAME: missing"):
        IntakeSettings.from_env({"BATCHSCRIBE_BUCKET_NAME": "b", "BATCHSCRIBE_JOBS_QUEUE_URL": "q"})
    s = IntakeSettings(table_name="t", bucket_name="b", jobs_queue_url="q", max_upload_bytes=5)
    assert IntakeSettings.from_env(s.to_env()) == s
    with pytest.raises(ConfigError, match="BATCHSCRIBE_MAX_UPLOAD_BYTES"):
        IntakeSettings.from_env({**s.to_env(), "BATCHSCRIBE_MAX_UPLOAD_BYTES": "-1"})
