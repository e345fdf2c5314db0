"""Test speech, made at run time with espeak-ng (and ffmpeg for other containers): the one
source of test audio for the tests, the benchmarks and the chaos run, and the one way they
compare a transcript with the text spoken (`spoken_words`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

SENTENCES = [
    "The weather today is sunny and warm.",
    "We will meet at the office after lunch.",
    "Please send me the report by Friday.",
    "The train to the city leaves at nine.",
    "My sister has two small dogs and a cat.",
    "Our team finished the project on time.",
    "The children are playing in the garden.",
    "I would like a cup of coffee with milk.",
    "The library is open every day except Sunday.",
    "He bought a new phone last week.",
    "The meeting was moved to next Tuesday.",
    "She reads a book before going to sleep.",
    "The store closes at eight in the evening.",
    "We need more chairs for the party.",
    "The river runs through the middle of the town.",
    "Thank you for your help with the move.",
]
SHORT_TEXT = " ".join(SENTENCES[:3])


def spoken_words(text: str) -> str:
    """The words of `text` as WER compares them: lower case, punctuation dropped."""
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def have_tools() -> bool:
    return bool(shutil.which("espeak-ng") and shutil.which("ffmpeg"))


def speak(text: str, out: Path) -> Path:
    """WAV speech of `text` (US English, a little slower than espeak's default)."""
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "150", "-g", "4", "-w", str(out), text],
        check=True,
        capture_output=True,
    )
    return out


def convert(src: Path, out: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *args, str(out)], check=True)
    return out


def long_text(seconds: float) -> str:
    """Enough distinct sentences for about `seconds` of speech (about 2.6 s a sentence)."""
    n = max(1, int(seconds / 3.4))
    return " ".join(SENTENCES[i % len(SENTENCES)] for i in range(n))


def make_video_only(out: Path) -> Path:
    """One second of test-pattern video with no audio stream."""
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=1:size=64x64:rate=5",
            "-c:v",
            "mpeg4",
            str(out),
        ],
        check=True,
    )
    return out
