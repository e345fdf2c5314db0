"""openai-whisper's timestamp rules over the whole batch (whisper_lib.batched_timestamp_rules)
mask exactly what the library's per-row loop (whisper.decoding.ApplyTimestampRules) masks, for
any token history and any logits: checked step by step over many decoding steps, on histories
the rules themselves produced and on arbitrary ones."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from whisper.decoding import ApplyTimestampRules
from whisper.tokenizer import get_tokenizer

from gpu_container.worker import whisper_lib

TOKENIZER = get_tokenizer(False)  # tiny.en's
VOCAB = 51864  # tiny.en's vocabulary: the timestamps are its last 1501 tokens
PROMPT = list(TOKENIZER.sot_sequence_including_notimestamps[:-1])  # what a decode starts from


def _filters(max_initial: int | None) -> tuple[ApplyTimestampRules, object]:
    begin = len(PROMPT)
    return (
        ApplyTimestampRules(TOKENIZER, begin, max_initial),
        whisper_lib.batched_timestamp_rules(TOKENIZER, begin, max_initial),
    )


def _logits(rows: int, g: torch.Generator, stamp_bias: float) -> torch.Tensor:
    """Random logits, the timestamps lifted by `stamp_bias` (so both kinds of token win often)."""
    logits = torch.randn(rows, VOCAB, generator=g) * 3
    logits[:, TOKENIZER.timestamp_begin :] += stamp_bias
    return logits


def _same_masks(tokens: torch.Tensor, logits: torch.Tensor, max_initial: int | None) -> torch.Tensor:
    loop, batched = _filters(max_initial)
    expected, got = logits.clone(), logits.clone()
    loop.apply(expected, tokens)
    batched.apply(got, tokens)  # type: ignore[attr-defined]
    assert torch.equal(torch.isinf(expected), torch.isinf(got))
    assert torch.equal(expected, got)
    return expected


@settings(max_examples=8, deadline=None)
@given(
    rows=st.integers(1, 12),
    steps=st.integers(1, 30),
    seed=st.integers(0, 2**31 - 1),
    bias=st.floats(-4, 6),
    max_initial=st.sampled_from([None, 0, 50]),
    sample=st.booleans(),
)
def test_the_same_masks_at_every_step_of_a_decode(
    rows: int, steps: int, seed: int, bias: float, max_initial: int | None, sample: bool
) -> None:
    """Greedy or sampled tokens drawn from the masked logits, step after step, as a decode runs:
    pairs, the end of a pair, text after a timestamp, and the first step's rules all occur."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.tensor([PROMPT] * rows)
    for _ in range(steps):
        masked = _same_masks(tokens, _logits(rows, g, bias), max_initial)
        if sample:
            nxt = torch.multinomial(torch.softmax(masked, dim=-1), 1, generator=g)
        else:
            nxt = masked.argmax(dim=-1, keepdim=True)
        tokens = torch.cat([tokens, nxt], dim=1)


@settings(max_examples=25, deadline=None)
@given(
    history=st.lists(st.lists(st.integers(0, VOCAB - 1), min_size=3, max_size=3), min_size=1, max_size=16),
    length=st.integers(0, 12),
    seed=st.integers(0, 2**31 - 1),
)
def test_the_same_masks_for_any_history(history: list[list[int]], length: int, seed: int) -> None:
    """Histories the rules would never produce (timestamps going back, text between lone
    timestamps): the batched rules still mask as the loop does."""
    g = torch.Generator().manual_seed(seed)
    rows = len(history)
    stamps = torch.randint(TOKENIZER.timestamp_begin, VOCAB, (rows, length), generator=g)
    text = torch.randint(0, TOKENIZER.eot, (rows, length), generator=g)
    pick = torch.rand(rows, length, generator=g) < 0.5
    tail = torch.where(pick, stamps, text)
    tokens = torch.cat([torch.tensor([PROMPT] * rows), tail, torch.tensor(history)], dim=1)
    _same_masks(tokens, _logits(rows, g, 2.0), None)


@pytest.mark.parametrize("rows", [1, 8])
def test_a_first_step_allows_only_early_timestamps(rows: int) -> None:
    tokens = torch.tensor([PROMPT] * rows)
    masked = _same_masks(tokens, torch.zeros(rows, VOCAB), 50)
    allowed = torch.isfinite(masked).nonzero()[:, 1].unique()
    assert allowed.min() == TOKENIZER.timestamp_begin and allowed.max() == TOKENIZER.timestamp_begin + 50
