"""What a succeeded job's result warns of: a transcript much of which fails Whisper's own
checks for a failed decode (looping text, unlikely tokens) is `low_confidence`, and on an
English-only model the notice names speech in another language as the likely cause."""

from __future__ import annotations

from batchscribe import errors
from gpu_container.worker.notices import notices
from gpu_container.worker.transcript import Segment, Transcript


def transcript(*segments: tuple[float, float, float, float]) -> Transcript:
    """Segments of (start, end, compression ratio, average log-probability)."""
    return Transcript(
        language="en",
        duration=60,
        segments=[
            Segment(id=i, start=a, end=b, text="words", compression_ratio=ratio, avg_logprob=logprob)
            for i, (a, b, ratio, logprob) in enumerate(segments)
        ],
    )


def test_a_clean_transcript_has_no_notice() -> None:
    assert notices(transcript((0, 10, 1.1, -0.3), (10, 20, 0.9, -0.5)), "tiny.en") == []


def test_a_little_doubtful_text_is_no_notice() -> None:
    assert notices(transcript((0, 25, 1.1, -0.3), (25, 30, 9.0, -0.2)), "tiny.en") == []  # 1/6 of it


def test_looping_text_on_an_english_only_model_says_the_language_may_be_why() -> None:
    [notice] = notices(transcript((0, 20, 17.9, -0.17), (20, 25, 1.0, -0.3)), "tiny.en")
    assert notice.code == errors.LOW_CONFIDENCE
    assert "80%" in notice.message and "tiny.en is an English-only model" in notice.message


def test_unlikely_text_on_a_multilingual_model_is_low_confidence_without_the_language_advice() -> None:
    [notice] = notices(transcript((0, 20, 1.2, -1.6)), "large-v3")
    assert notice.code == errors.LOW_CONFIDENCE and "English-only" not in notice.message
