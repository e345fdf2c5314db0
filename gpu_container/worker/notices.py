"""What a succeeded job's result tells the user beside its transcript (`result.warnings`):

- `no_speech`: nothing was said (silence, music, a fraction of a second): the transcript is
  empty, and the job still succeeded;
- `low_confidence`: over a third of the speech is in segments that fail Whisper's own checks
  for a failed decode even after its temperature fallback: a compression ratio over 2.4 (the
  text loops, "I'm sorry, I'm sorry, …") or an average log-probability under -1.0. Those are
  the thresholds openai-whisper and faster-whisper use (`compression_ratio_threshold`,
  `log_prob_threshold`). Measured here on tiny.en: espeak-ng English 0.8-0.9, German 17.9,
  French 23.6. An English-only model cannot say which language it heard (it has no language
  tokens), so this is the check it allows: on such a model the notice says that speech in
  another language is the likely cause.
"""

from __future__ import annotations

from batchscribe import errors, languages
from batchscribe.models import Notice
from gpu_container.worker.transcript import Transcript

LOOP_RATIO = 2.4  # Whisper's compression_ratio_threshold
UNLIKELY_LOGPROB = -1.0  # Whisper's log_prob_threshold
DOUBTFUL_SHARE = 1 / 3  # of the speech time, in segments that fail those checks


def notices(transcript: Transcript, model: str) -> list[Notice]:
    if not transcript.text.strip():
        return [
            Notice(
                code=errors.NO_SPEECH,
                message=f"no speech was found in the {transcript.duration:.1f} s of audio: the transcript is empty",
            )
        ]
    share = doubtful_share(transcript)
    if share <= DOUBTFUL_SHARE:
        return []
    why = f"{share:.0%} of the speech failed Whisper's checks (repeated or unlikely text)"
    if languages.is_english_only(model):
        advice = (
            f"{model} is an English-only model: if the speech is not English, the text is likely wrong; "
            "submit it again with a multilingual model (--model, see `batchscribe models`)"
        )
    else:
        advice = "check the transcript against the audio (noise, music or overlapping speech can cause this)"
    return [Notice(code=errors.LOW_CONFIDENCE, message=f"{why}; {advice}")]


def doubtful_share(transcript: Transcript) -> float:
    """The share of the transcript's speech time in segments that fail Whisper's checks."""
    total = doubtful = 0.0
    for s in transcript.segments:
        length = max(s.end - s.start, 0.0)
        total += length
        looping = s.compression_ratio is not None and s.compression_ratio > LOOP_RATIO
        unlikely = s.avg_logprob is not None and s.avg_logprob < UNLIKELY_LOGPROB
        if looping or unlikely:
            doubtful += length
    return doubtful / total if total > 0 else 0.0
