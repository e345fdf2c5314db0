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
