import itertools

from gpu_container.worker.transcript import Segment, Transcript, render, tidy


def test_tidy_makes_cues_monotonic_and_non_overlapping() -> None:
    raw = [
        Segment(id=0, start=0.0, end=2.5, text=" Hello. "),
        Segment(id=1, start=2.0, end=2.0, text="World"),
        Segment(id=2, start=3.0, end=4.0, text="   "),
        Segment(id=3, start=3.5, end=99.0, text="End"),
    ]
    out = tidy(raw, duration=10.0)
    assert [s.text for s in out] == ["Hello.", "World", "End"]
    assert [s.id for s in out] == [0, 1, 2]
    for prev, cur in itertools.pairwise(out):
        assert prev.end <= cur.start < cur.end
    assert out[-1].end == 10.0


def test_renderings() -> None:
    t = Transcript(
        language="en",
        duration=3725.5,
        segments=[
            Segment(id=0, start=0, end=1.5, text="One."),
            Segment(id=1, start=3723.25, end=3725.5, text="Two."),
        ],
    )
    assert render(t, "srt") == "1\n00:00:00,000 --> 00:00:01,500\nOne.\n\n2\n01:02:03,250 --> 01:02:05,500\nTwo.\n"
    assert render(t, "vtt") == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nOne.\n\n01:02:03.250 --> 01:02:05.500\nTwo.\n"
    )
    assert render(t, "txt") == "One.\nTwo.\n"
    assert '"text": "One. Two."' in render(t, "json")


def test_the_json_transcript_is_versioned_and_carries_the_decoders_confidence() -> None:
    import json

    from gpu_container.worker.transcript import JSON_SCHEMA, sentence_segments

    joined = sentence_segments(
        [
            Segment(id=0, start=0, end=1, text="The weather", avg_logprob=-0.2, no_speech_prob=0.1),
            Segment(id=1, start=1, end=3, text="is warm.", avg_logprob=-0.5, no_speech_prob=0.4),
        ]
    )
    assert len(joined) == 1  # one sentence: its confidence is the length-weighted mean of its parts
    assert abs((joined[0].avg_logprob or 0) - (-0.2 * 1 + -0.5 * 2) / 3) < 1e-9
    t = Transcript(
        language="en",
        language_probability=0.97,
        duration=3.0,
        segments=joined,
        engine="faster-whisper",
        model="tiny.en",
    )
    data = json.loads(render(t, "json"))
    assert data["schema"] == JSON_SCHEMA == "batchscribe.transcript/1"
    assert (data["engine"], data["model"], data["language_probability"]) == ("faster-whisper", "tiny.en", 0.97)
    [seg] = data["segments"]
    assert set(seg) >= {"start", "end", "text", "avg_logprob", "no_speech_prob"}
    assert "compression_ratio" not in seg  # none given: left out, never null


def test_channel_segments_are_labelled_and_may_overlap_in_readable_cues() -> None:
    """Two speakers talking at once (channel identification): each keeps its own times in the
    subtitles, and every format names the speaker."""
    from gpu_container.worker.transcript import READABLE_CUES, Segment, Transcript, render

    t = Transcript(
        language="en",
        duration=6.0,
        segments=[
            Segment(id=0, start=0.0, end=4.0, text="I would like a table.", channel=0),
            Segment(id=1, start=2.0, end=5.0, text="Certainly, at eight.", channel=1),
        ],
    )
    srt = render(t, "srt", cues=READABLE_CUES)
    assert "00:00:02,000 --> 00:00:05,000\n[Channel 1] Certainly, at eight." in srt  # not pushed past 4.0
    assert "[Channel 0] I would like a table." in srt
    assert "<v Channel 1>Certainly, at eight." in render(t, "vtt")
    # one numbering in every format: JSON's channel N is "Channel N" in txt, srt and vtt
    assert render(t, "txt") == "[Channel 0] I would like a table.\n[Channel 1] Certainly, at eight.\n"
    assert '"channel": 1' in render(t, "json") and '"channel": 0' in render(t, "json")


def test_split_channel_cues_are_numbered_in_time_order() -> None:
    """A long segment of one channel is cut into several cues; the other channel's segment
    that starts meanwhile comes between them, not after."""
    from gpu_container.worker.transcript import READABLE_CUES, Segment, Transcript, render

    long_turn = "Good evening, I would like to book a table for four people on Friday at eight, by the window please."
    t = Transcript(
        language="en",
        duration=20.0,
        segments=[
            Segment(id=0, start=0.0, end=14.0, text=long_turn, channel=0),
            Segment(id=1, start=2.0, end=3.5, text="Certainly.", channel=1),
        ],
    )
    blocks = render(t, "srt", cues=READABLE_CUES).strip().split("\n\n")
    starts = [b.split("\n")[1].split(" --> ")[0] for b in blocks]
    assert len(blocks) >= 3 and starts == sorted(starts)
    assert [b.split("\n")[0] for b in blocks] == [str(i) for i in range(1, len(blocks) + 1)]
    assert blocks[1].endswith("[Channel 1] Certainly.")
