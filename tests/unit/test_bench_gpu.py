"""The GPU benchmark's parts, on CPU: the random-weight CTranslate2 model holds exactly the torch
model's weights, its vocabulary puts openai-whisper's special tokens at their ids, held jobs'
windows are buffered before the clock starts, tokens are counted as decoded (and the ask raised
when a library decodes fewer), and the packed site tree and the device call fit one call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import bench_gpu, gpu_models
from bench.gpu_work import Counter, Item, Replay, wait_primed
from gpu_container.worker.batched import DecodeOptions
from gpu_container.worker.batches import Batches
from gpu_container.worker.convert import _mapping, read_ct2
from gpu_container.worker.windows import Window
from scripts import pack_gpu_site


def window(seconds: float = 1.0) -> Window:
    n = int(seconds * 16_000)
    return Window(index=0, audio=np.zeros(n, np.float32), chunks=((0, n),))


@pytest.mark.slow
def test_the_ct2_folder_holds_the_torch_models_weights_exactly(tmp_path: Path) -> None:
    """Read back with the worker's own CTranslate2 reader and mapping (convert.py, the inverse
    direction), every openai-whisper tensor comes out as the torch model has it."""
    model = gpu_models.torch_model("tiny", "cpu")
    folder = gpu_models.ct2_folder(model, tmp_path / "ct2", quantization="float32")

    back = dict(_mapping(read_ct2(folder / "model.bin")))

    state = {k: v.numpy() for k, v in model.state_dict().items() if k != "alignment_heads"}
    assert set(back) == set(state)
    for name, value in state.items():
        assert np.array_equal(back[name], value), name
    files = {p.name for p in folder.iterdir()}
    assert {"model.bin", "config.json", "vocabulary.json", "tokenizer.json", "preprocessor_config.json"} <= files
    assert json.loads((folder / "preprocessor_config.json").read_text()) == {"feature_size": 80}


@pytest.mark.parametrize(("n_vocab", "multilingual"), [(51864, False), (51866, True)])
def test_the_vocabulary_puts_whispers_special_tokens_at_their_ids(n_vocab: int, multilingual: bool) -> None:
    from whisper.tokenizer import get_tokenizer

    tokens = gpu_models.vocabulary(n_vocab)
    whisper = get_tokenizer(multilingual, num_languages=n_vocab - 51765 - int(multilingual), language="en")

    assert len(tokens) == n_vocab
    assert tokens[whisper.sot] == "<|startoftranscript|>" and tokens[whisper.eot] == "<|endoftext|>"
    assert tokens[whisper.no_timestamps] == "<|notimestamps|>" and tokens[whisper.timestamp_begin] == "<|0.00|>"
    assert tokens[-1] == "<|30.00|>" and tokens[whisper.sot + 1] == "<|en|>"


def test_held_jobs_are_buffered_before_the_clock_starts() -> None:
    """Batches pulls each job's windows on a prefetch thread: a step taken too early would find
    them not ready and run a partial batch. wait_primed returns once every queue is full."""
    streams = [Replay([window(), window()], 2.0), Replay([window()], 1.0)]
    batches = Batches(lambda _key: None, batch_size=3, read_ahead=8)  # type: ignore[arg-type,return-value]
    for i, stream in enumerate(streams):
        batches.add(f"job{i}", ("e", "m"), stream, DecodeOptions())  # type: ignore[arg-type]

    wait_primed(streams)

    assert all(s.primed.is_set() for s in streams)
    for i in range(len(streams)):
        batches.remove(f"job{i}")


class FakeRunner:
    """Decodes half the tokens it is asked for, as CTranslate2's generate does."""

    class Steps:
        def generate(self, n: int, ask: int) -> list[Any]:
            return [type("G", (), {"tokens": list(range(ask // 2))})() for _ in range(n)]

    def __init__(self) -> None:
        self.steps = self.Steps()
        self.max_tokens = 0

    def tune(self, *, max_tokens: int) -> None:
        self.max_tokens = max_tokens

    def run(self, batch: list[Any]) -> list[Any]:
        return self.steps.generate(len(batch), self.max_tokens)


def test_tokens_are_counted_as_decoded_and_the_ask_raised_to_decode_the_target() -> None:
    runner = FakeRunner()
    counter = Counter(runner)
    items = [Item(window()) for _ in range(8)]

    asked = bench_gpu.calibrate(runner, counter, items, 100)

    assert asked == 200 and runner.max_tokens == 200
    counter.reset()
    runner.run(items[:4])
    assert counter.tokens_mean == 100 and counter.batches == [4]


def test_the_quick_plan_is_small_and_the_device_plan_fills_batches_of_128() -> None:
    quick = bench_gpu.plan_for(bench_gpu.arguments(["--device", "cpu", "--quick"]))
    full = bench_gpu.plan_for(bench_gpu.arguments(["--device", "cuda"]))

    assert quick.shapes == ["tiny"] and quick.batches == [2] and quick.tokens == 8
    assert full.shapes == ["large-v3-turbo", "large-v3"] and max(full.batches) == 128
    assert full.worker_batches == [None, 128] and full.beam5_batches == [None]
    assert full.budget_s < 8 * 60 - 60  # the whole call stays under 8 minutes


def test_the_site_tree_must_leave_room_for_the_repository() -> None:
    assert pack_gpu_site.fits(52.2, 2.7) is None
    assert "over its 56 MiB share" in str(pack_gpu_site.fits(57.0, 2.7))
    assert "exceed one call" in str(pack_gpu_site.fits(55.0, 8.5))
    assert all("==" in pin for pin in pack_gpu_site.pins(pack_gpu_site.WHEELS + pack_gpu_site.SDISTS))


def test_make_bench_gpu_prints_the_exact_device_call(tmp_path: Path) -> None:
    missing = pack_gpu_site.run_call(tmp_path / "site.tar.xz")
    assert "make bench-gpu-pack" in missing

    tar = tmp_path / "site.tar.xz"
    tar.write_bytes(b"x" * 1024)
    text = pack_gpu_site.run_call(tar)
    call = json.loads(text.splitlines()[1])

    assert call == {"command": "bash bench/gpu/run.sh", "carry": ["build/gpu/site.tar.xz"], "timeout_s": 480}
    assert (pack_gpu_site.ROOT / "bench" / "gpu" / "run.sh").exists()
    assert call["timeout_s"] <= 8 * 60  # the limit: one call under 8 minutes
