"""From batched window results to a job's transcript and subtitles (pure: no model, no media)."""

from __future__ import annotations

import itertools
import re
from types import SimpleNamespace
from typing import Any

import numpy as np

from batchscribe.whisper_models import SAMPLE_RATE
from gpu_container.worker import batched
from gpu_container.worker.batched import WindowResult, WindowSegment, assemble, split_timestamped
from gpu_container.worker.transcript import (
    READABLE_CUES,
    Segment,
    Transcript,
    Word,
    render,
    sentence_segments,
    subtitle_cues,
    wrap_lines,
)
from gpu_container.worker.windows import Window

TB = 50363  # tiny.en's <|0.00|>
EOT = 50256


def ts(seconds: float) -> int:
    return TB + round(seconds / 0.02)


def test_timestamped_tokens_split_into_segments_and_an_unclosed_tail_is_kept() -> None:
    tokens = [ts(0), 1, 2, ts(3.2), ts(3.2), 3, ts(6.0), ts(6.5), 4, 5]
    assert split_timestamped(tokens, TB, EOT, duration=9.0) == [
        (0.0, 3.2, [1, 2]),
        (3.2, 6.0, [3]),
        (6.5, 9.0, [4, 5]),  # the model stopped before closing it: ends at the window's end
    ]
    assert split_timestamped([ts(0), ts(0)], TB, EOT, duration=5.0) == []


def test_window_times_map_back_to_the_source_across_dropped_silence() -> None:
    # speech at 10-12 s and 20-21 s of the source, concatenated into a 3 s window
    chunks = ((10 * SAMPLE_RATE, 12 * SAMPLE_RATE), (20 * SAMPLE_RATE, 21 * SAMPLE_RATE))
    w = Window(index=0, audio=np.zeros(3 * SAMPLE_RATE, np.float32), chunks=chunks)
    assert (w.start, w.end, w.duration) == (10.0, 21.0, 3.0)
    assert w.to_source(0.5) == 10.5
    assert w.to_source(2.5) == 20.5
    assert w.to_source(2.0) == 20.0  # a start on the cut belongs to the later chunk...
    assert w.to_source(2.0, is_end=True) == 12.0  # ...an end to the earlier one
    assert w.to_source(9.0) == 21.0  # clamped
    # a word straddling the cut stays inside the chunk its middle falls in
    assert w.span_to_source(1.8, 2.4) == (20.0, 20.4)


def test_assemble_orders_regroups_into_sentences_and_picks_the_main_language() -> None:
    results = [
        WindowResult(
            language="en",
            speech_seconds=28,
            segments=[
                WindowSegment(0.0, 2.0, " The weather is warm."),
                WindowSegment(2.0, 4.0, " We will meet at the office"),
            ],
        ),
        WindowResult(language="de", speech_seconds=2, segments=[WindowSegment(4.2, 6.0, " after lunch. Thank you.")]),
    ]
    t = assemble(results, duration=6.5)
    assert t.language == "en"
    assert [s.text for s in t.segments] == [
        "The weather is warm.",
        "We will meet at the office after lunch.",
        "Thank you.",
    ]
    for prev, cur in itertools.pairwise(t.segments):
        assert prev.end <= cur.start < cur.end
    assert [s.id for s in t.segments] == [0, 1, 2]
    assert assemble([], duration=3.0).segments == []


def test_sentences_split_at_word_timestamps() -> None:
    words = [
        Word(start=0.0, end=0.4, word=" Hello"),
        Word(start=0.4, end=0.9, word=" there."),
        Word(start=1.5, end=1.9, word=" How"),
        Word(start=1.9, end=2.3, word=" are"),
        Word(start=2.3, end=2.8, word=" you?"),
    ]
    (a, b) = sentence_segments([Segment(id=0, start=0.0, end=2.8, text=" Hello there. How are you?", words=words)])
    assert (a.text, a.start, a.end) == ("Hello there.", 0.0, 0.9)
    assert (b.text, b.start, b.end) == ("How are you?", 1.5, 2.8)
    assert b.words == words[2:]


def _words(text: str, start: float, seconds_per_word: float) -> list[Word]:
    out = []
    for i, w in enumerate(text.split()):
        out.append(Word(start=start + i * seconds_per_word, end=start + (i + 1) * seconds_per_word, word=" " + w))
    return out


def check_cues(t: Transcript) -> None:
    srt = render(t, "srt", cues=READABLE_CUES)
    prev_end = 0.0
    for block in srt.strip().split("\n\n"):
        lines = block.split("\n")
        start, end = (
            sum(float(x) * f for x, f in zip(re.split("[:,]", stamp), (3600, 60, 1, 0.001), strict=True))
            for stamp in lines[1].split(" --> ")
        )
        assert prev_end <= start < end <= start + 7.0 + 1e-9, lines[1]
        assert 1 <= len(lines[2:]) <= 2 and all(0 < len(line) <= 42 for line in lines[2:]), lines
        prev_end = end


def test_a_long_segment_is_cut_into_readable_cues_at_word_timestamps() -> None:
    text = (
        "The library is open every day except Sunday, and the store closes at eight in the evening, "
        "so we need more chairs for the party before the river floods the middle of the town."
    )
    seg = Segment(id=0, start=0.0, end=16.0, text=text, words=_words(text, 0.0, 0.5))
    t = Transcript(language="en", duration=20.0, segments=[seg])

    cues = subtitle_cues(t)

    check_cues(t)
    assert len(cues) >= 3
    assert " ".join(" ".join(c.lines) for c in cues) == text  # every word, once, in order
    assert cues[0].lines[-1].endswith("Sunday,")  # cut after punctuation where it can
    assert cues[0].start == 0.0 and cues[1].start == seg.words[len(cues[0].text.split())].start  # type: ignore[index]


def test_cues_without_word_timestamps_split_by_interpolated_times() -> None:
    text = "Please send me the report by Friday because the meeting was moved to next Tuesday morning."
    t = Transcript(language="en", duration=12.0, segments=[Segment(id=0, start=1.0, end=11.0, text=text)])
    cues = subtitle_cues(t)
    check_cues(t)
    assert len(cues) == 2
    assert cues[0].start == 1.0 and abs(cues[-1].end - 11.0) < 1e-6
    assert " ".join(" ".join(c.lines) for c in cues) == text


def test_two_lines_are_balanced_and_short_segments_keep_one_cue() -> None:
    assert wrap_lines("The weather today is sunny and warm, we will meet.", 42, 2) == [
        "The weather today is sunny",
        "and warm, we will meet.",
    ]
    assert wrap_lines("x " * 60, 42, 2) is None
    t = Transcript(language="en", duration=3.0, segments=[Segment(id=0, start=0.0, end=1.5, text="One.")])
    assert render(t, "srt", cues=READABLE_CUES) == render(t, "srt") == "1\n00:00:00,000 --> 00:00:01,500\nOne.\n"


def _aligned(*words: tuple[str, float, float]) -> list[dict[str, object]]:
    return [{"word": w, "start": s, "end": e, "probability": 0.9} for w, s, e in words]


def test_a_window_decoded_without_timestamps_is_cut_into_segments_at_its_words() -> None:
    # speech at 10-16 s and 30-34 s of the source, concatenated: window 0-6 s is chunk 0, 6-10 s chunk 1
    chunks = ((10 * SAMPLE_RATE, 16 * SAMPLE_RATE), (30 * SAMPLE_RATE, 34 * SAMPLE_RATE))
    window = Window(index=0, audio=np.zeros(10 * SAMPLE_RATE, np.float32), chunks=chunks)
    piece = {"start": 0.0, "end": 10.0, "tokens": [1], "text": "…", "avg_logprob": -0.2, "no_speech_prob": 0.01,
             "temperature": 0.0}  # fmt: skip
    piece["words"] = _aligned(
        (" Good", 0.1, 0.4), (" morning.", 0.4, 0.9),  # a sentence ends
        (" We", 1.0, 1.2), (" met", 1.2, 1.5),  # a pause of 2 s within the chunk
        (" at", 3.6, 3.8), (" noon", 3.8, 5.6),  # the chunk ends: a dropped pause follows
        (" and", 6.1, 6.3), (" left", 6.3, 6.8),
    )  # fmt: skip
    cut = batched._split_at_words([piece], window, keep_words=False)
    assert [(p["text"], p["start"], p["end"], p["words"]) for p in cut] == [
        (" Good morning.", 0.1, 0.9, None),
        (" We met", 1.0, 1.5, None),
        (" at noon", 3.6, 5.6, None),
        (" and left", 6.1, 6.8, None),
    ]
    assert all(p["avg_logprob"] == -0.2 for p in cut)  # the window's confidence on each
    kept = batched._split_at_words([piece], window, keep_words=True)
    assert [[w["word"] for w in p["words"]] for p in kept] == [
        [" Good", " morning."],
        [" We", " met"],
        [" at", " noon"],
        [" and", " left"],
    ]

    # in the source: the last segment is in the second chunk, 20 s after the cut
    result = batched._to_result(window, "en", cut, with_words=False)
    timed = [(s.text, s.start, s.end) for s in result.segments]
    assert timed[-2:] == [(" at noon", 13.6, 15.6), (" and left", 30.1, 30.8)]

    # alignment that gave no words: the piece keeps the window's span
    bare = batched._split_at_words([{**piece, "words": []}], window, keep_words=False)
    assert [(p["start"], p["end"], p["words"]) for p in bare] == [(0.0, 10.0, None)]


def test_a_decode_without_timestamps_is_one_piece_and_silence_is_none() -> None:
    defaults = batched.whisper_lib.DecodingDefaults(
        temperatures=(0.0,), compression_ratio_threshold=2.4, log_prob_threshold=-1.0, no_speech_threshold=0.6,
        best_of=5, max_initial_timestamp=1.0, prepend_punctuations="", append_punctuations="",
    )  # fmt: skip

    class Tok:
        eot = EOT

    said = batched._whole(batched._Decoded([5, 6, EOT], -0.3, 0.1, 0.0, " w5 w6"), Tok(), 12.5, defaults)
    assert said.resume_at is None  # never a second pass
    assert [(p["start"], p["end"], p["tokens"], p["text"]) for p in said.pieces] == [(0.0, 12.5, [5, 6], " w5 w6")]
    silent = batched._whole(batched._Decoded([5, EOT], -1.5, 0.9, 0.0, " w5"), Tok(), 12.5, defaults)
    assert silent.pieces == [] and silent.resume_at is None
    assert batched._whole(batched._Decoded([EOT], -0.1, 0.1, 0.0), Tok(), 12.5, defaults).pieces == []


def test_whisper_unpunctuated_mode_is_recognised_and_short_or_spaceless_text_is_not() -> None:
    assert batched.unpunctuated(" yesterday after work I went to the market and I bought Apple's bread and tea")
    assert not batched.unpunctuated(" Yesterday, after work, I went to the market, and I bought apples.")
    assert not batched.unpunctuated(" Please send me the report")  # too few words to tell
    assert not batched.unpunctuated(" 我们明天在办公室见面然后一起吃午饭")  # no spaces: one "word"
    spaced = " \u6628\u5929 \u4e0b\u73ed \u540e \u6211 \u53bb\u4e86 \u5e02\u573a\uff0c \u4e70\u4e86"
    spaced += " \u82f9\u679c \u548c\u8336"
    assert not batched.unpunctuated(spaced)  # 9 "words" and a full-width comma


def test_a_second_pass_over_a_window_is_cut_at_its_words_in_window_time() -> None:
    # speech at 10-16 s and 30-34 s of the source: window 0-6 s is chunk 0, 6-10 s chunk 1
    chunks = ((10 * SAMPLE_RATE, 16 * SAMPLE_RATE), (30 * SAMPLE_RATE, 34 * SAMPLE_RATE))
    window = Window(index=0, audio=np.zeros(10 * SAMPLE_RATE, np.float32), chunks=chunks)

    def piece(*words: tuple[str, float, float]) -> dict[str, object]:
        return {"start": words[0][1], "end": words[-1][2], "tokens": [1], "text": "".join(w for w, _, _ in words),
                "avg_logprob": -0.2, "no_speech_prob": 0.01, "temperature": 0.0, "words": _aligned(*words)}  # fmt: skip

    class Loop(batched._WindowLoop):
        """The shared loop with a scripted model: the first pass stops at 3 s (a window decoded
        again with timestamp tokens), the second gives the rest, in times from where it began."""

        def __init__(self) -> None:
            self.steps = SimpleNamespace(multilingual=False, language_codes=frozenset())
            self.segments_by_words = True
            self.passes: list[float] = []

        def _pass(self, items: Any, audios: list[np.ndarray], languages: Any) -> list[Any]:
            self.passes.append(len(audios[0]) / SAMPLE_RATE)
            if len(self.passes) == 1:
                return [batched._Pass("en", [piece((" Good", 0.1, 0.4), (" morning.", 0.4, 0.9))], resume_at=3.0)]
            rest = piece((" at", 0.6, 0.8), (" noon", 0.8, 2.6), (" and", 3.1, 3.3), (" left", 3.3, 3.8))
            return [batched._Pass("en", [rest], resume_at=None)]

    item = SimpleNamespace(window=window, options=SimpleNamespace(language="en", word_timestamps=False))
    (result,) = Loop().run([item])

    # the rest began 3 s in: " noon" ends in chunk 0 and " and" starts in chunk 1 (20 s later)
    assert [(s.text, s.start, s.end) for s in result.segments] == [
        (" Good morning.", 10.1, 10.9),
        (" at noon", 13.6, 15.6),
        (" and left", 30.1, 30.8),
    ]
