"""openai-whisper's timestamp rules per decoding step: the library's per-row loop
(whisper.decoding.ApplyTimestampRules) against the worker's rules over the whole batch
(whisper_lib.batched_timestamp_rules), in one process, on the same logits and token histories.

For each batch size, `--repeats` steps of each, alternating (so background load hits both
alike); each step applies the rules to a fresh copy of random logits over tiny.en's vocabulary
(51,864) after a history of `--history` sampled tokens mixing text and timestamp pairs. The
copy is made outside the timing. Prints and records the median milliseconds per step and the
ratio. On CUDA each step ends in a synchronize, so the loop's GPU->CPU syncs are in its time.
A measurement, not a test.

    python -m bench.bench_timestamp_rules                  # CPU, batches 8, 32, 64
    python -m bench.bench_timestamp_rules --device cuda --batch-sizes 8 32 64 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from whisper.decoding import ApplyTimestampRules
from whisper.tokenizer import get_tokenizer

from bench.provenance import ROOT, load_average, record
from gpu_container.worker import whisper_lib

VOCAB = 51864  # tiny.en's (a multilingual model's is 51,865: the cost is the same)


def history(rows: int, length: int, tokenizer: Any, g: torch.Generator) -> torch.Tensor:
    """The start sequence, then segments: a timestamp, text, a later timestamp, over and over."""
    begin = tokenizer.timestamp_begin
    out = []
    for _ in range(rows):
        row, stamp = [*tokenizer.sot_sequence], begin
        while len(row) < length + len(tokenizer.sot_sequence):
            text = torch.randint(0, tokenizer.eot, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g)
            stamp += int(torch.randint(1, 40, (1,), generator=g))
            row += [stamp, *text.tolist(), stamp + 1]
            stamp += 1
        out.append(row[: length + len(tokenizer.sot_sequence)])
    return torch.tensor(out)


def time_step(apply: Callable[[torch.Tensor, torch.Tensor], None], logits: torch.Tensor, tokens: torch.Tensor) -> float:
    work = logits.clone()
    if work.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    apply(work, tokens)
    if work.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(rows: int, args: argparse.Namespace, tokenizer: Any) -> dict[str, Any]:
    g = torch.Generator().manual_seed(rows)
    sample_begin = len(tokenizer.sot_sequence)
    tokens = history(rows, args.history, tokenizer, g).to(args.device)
    logits = torch.randn(rows, VOCAB, generator=g).to(args.device, torch.float16 if args.fp16 else torch.float32)
    loop = ApplyTimestampRules(tokenizer, sample_begin, None)
    batched = whisper_lib.batched_timestamp_rules(tokenizer, sample_begin, None)
    times: dict[str, list[float]] = {"loop": [], "batched": []}
    for _ in range(args.warmup):
        time_step(loop.apply, logits, tokens), time_step(batched.apply, logits, tokens)
    for _ in range(args.repeats):
        times["loop"].append(time_step(loop.apply, logits, tokens))
        times["batched"].append(time_step(batched.apply, logits, tokens))
    loop_ms, batched_ms = (statistics.median(times[k]) * 1000 for k in ("loop", "batched"))
    return {
        "batch": rows,
        "loop_ms_per_step": round(loop_ms, 3),
        "batched_ms_per_step": round(batched_ms, 3),
        "speedup": round(loop_ms / batched_ms, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--history", type=int, default=60, help="tokens decoded before the step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fp16", action="store_true", help="half-precision logits (as on a GPU)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started, load_start = time.perf_counter(), load_average()
    tokenizer = get_tokenizer(False)
    rows = []
    for size in args.batch_sizes:
        rows.append(measure(size, args, tokenizer))
        r = rows[-1]
        print(
            f"B={size:4d}  loop {r['loop_ms_per_step']:8.3f} ms/step  batched {r['batched_ms_per_step']:7.3f} ms/step"
            f"  {r['speedup']}x"
        )
    out = args.out or ROOT / "bench" / "results" / f"timestamp-rules-{args.device.split(':')[0]}.json"
    result = {**record(started, load_start, argv), "device": args.device, "history": args.history, "rows": rows}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
