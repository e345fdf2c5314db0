"""The `batchscribe` command.

    batchscribe transcribe FILE [--engine E] [--model M] [--batched] [--format F] [-o OUT]

runs the worker's own engine code on one local file, with no AWS involved.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
EXIT_FAILED = 1


def _err(message: str, hint: str | None = None) -> None:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def cmd_transcribe(args: argparse.Namespace) -> int:
    from batchscribe.models import JobOptions
    from gpu_container.worker import media
    from gpu_container.worker.engines import load_engine
    from gpu_container.worker.errors import PermanentJobError
    from gpu_container.worker.transcript import render

    path = Path(args.file)
    if not path.is_file():
        _err(f"{path} does not exist or is not a file")
        return EXIT_USAGE
    options = JobOptions(
        language=args.language,
        task=args.task,
        word_timestamps=args.word_timestamps,
        formats=[args.format],
        initial_prompt=args.initial_prompt,
    )
    started = time.perf_counter()
    try:
        audio = media.decode(path, args.max_duration)
        engine = load_engine(
            args.engine,
            model=args.model,
            model_path=args.model_path,
            device=args.device,
            batched="always" if args.batched else "auto",
            beam_size=args.beam_size,
        )
    except PermanentJobError as exc:
        _err(f"{exc} ({exc.code})", "check that the file plays and has an audio stream")
        return EXIT_FAILED
    loaded = time.perf_counter()
    progress = _progress(audio.duration, quiet=args.quiet or args.output is None)
    transcript = engine.transcribe(audio.samples, options, progress)
    done = time.perf_counter()
    text = render(transcript, args.format)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if not args.quiet:
        print(
            f"{path.name}: {audio.duration:.1f} s of audio, {len(transcript.segments)} segments, "
            f"language {transcript.language}; {engine.name}/{engine.model_name} on {engine.device}: "
            f"load {loaded - started:.2f} s, transcribe {done - loaded:.2f} s "
            f"(real-time factor {(done - loaded) / max(audio.duration, 1e-6):.3f})",
            file=sys.stderr,
        )
    return 0


def _progress(total: float, quiet: bool) -> Any:
    if quiet:
        return lambda _seconds: None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    bar = Progress(
        TextColumn("transcribing"),
        BarColumn(),
        TaskProgressColumn(),
        transient=True,
        console=Console(stderr=True),
    )
    task = bar.add_task("", total=max(total, 0.001))
    bar.start()

    def update(seconds: float) -> None:
        bar.update(task, completed=min(seconds, total))
        if seconds >= total - 0.5:
            bar.stop()

    return update


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchscribe", description="Asynchronous Whisper transcription.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="transcribe one local file (no AWS involved)")
    t.add_argument("file")
    t.add_argument("--engine", choices=["faster-whisper", "openai-whisper"], default="faster-whisper")
    t.add_argument("--model", default="tiny.en", help="model name (default: tiny.en, bundled)")
    t.add_argument("--model-path", help="a CTranslate2 model folder to use instead of resolving --model")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    t.add_argument("--batched", action="store_true", help="faster-whisper's batched pipeline (long audio)")
    t.add_argument("--beam-size", type=int, default=5)
    t.add_argument("--language", default="auto")
    t.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    t.add_argument("--word-timestamps", action="store_true")
    t.add_argument("--initial-prompt")
    t.add_argument("--format", choices=["txt", "json", "srt", "vtt"], default="txt")
    t.add_argument("-o", "--output", help="write here instead of standard output")
    t.add_argument("--max-duration", type=float, default=4 * 3600, help="refuse longer media (seconds)")
    t.add_argument("-q", "--quiet", action="store_true")
    t.set_defaults(func=cmd_transcribe)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
