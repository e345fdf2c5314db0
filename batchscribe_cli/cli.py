"""The `batchscribe` command.

    batchscribe local up [--port 8000] [--max-workers N] [--data-dir DIR]   the whole pipeline, locally
    batchscribe submit FILE [--wait] [--format F] [--language L] [--task translate] [-o OUT]
    batchscribe status ID | wait ID | result ID --format F [-o FILE] | list [--status S] | cancel ID
    batchscribe demo                                                          local stack + a sample, end to end
    batchscribe transcribe FILE [--engine E] [--model M] [--batched] [--format F] [-o OUT]   no AWS at all

The job commands talk to `--api URL` (or $BATCHSCRIBE_API, or `--stack NAME`'s ApiUrl output);
a deployed API is called with SigV4 from the standard AWS credential chain.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from batchscribe.settings import ClientSettings

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


# ---- the job commands ----------------------------------------------------------------

HINTS = {
    "unsupported_media_type": "convert it to a common audio format first, e.g. `ffmpeg -i INPUT output.mp3`",
    "file_too_large": "split it (`ffmpeg -i INPUT -f segment -segment_time 3600 -c copy part%03d.mp3`) "
    "or raise max_upload_mb in cdk.json",
    "job_not_found": "check the id with `batchscribe list`; jobs of other identities are not visible",
    "job_not_cancellable": "it has already finished; `batchscribe status ID` shows how",
    "invalid_media": "the file could not be decoded: check that it plays, or convert it with ffmpeg",
    "no_audio": "the file has no audible audio stream",
    "too_long": "split the file into shorter parts",
    "retries_exhausted": "the job log (`batchscribe status ID`, log_url) says what went wrong each time",
    "upload_expired": "the file was not uploaded in time; submit again",
    "upload_too_large": "the uploaded file was larger than declared; submit again",
    "unsupported_model": "ask for a model the workers have (the deployment's `model`), or none",
    "invalid_request": "see the details above",
}
TERMINAL = ("succeeded", "failed", "cancelled")


def _client(args: argparse.Namespace) -> Any:
    from batchscribe_cli.client import Client, api_url_from_stack

    env = ClientSettings.from_env()
    url = args.api or env.api
    if not url and args.stack:
        url = api_url_from_stack(args.stack)
    if not url:
        raise UsageError(
            "no API to talk to: start one with `batchscribe local up` and pass --api URL "
            f"(or set {ClientSettings.env_name('api')}), or name a deployed stack with --stack"
        )
    return Client(url, owner=args.owner or env.owner)


class UsageError(Exception):
    pass


def _report(error: Any) -> int:
    from batchscribe_cli.client import ApiError

    if isinstance(error, ApiError):
        _err(str(error), HINTS.get(error.code))
        if error.code == "invalid_request" and error.details:
            for d in error.details:
                print(f"  {d.get('field')}: {d.get('message')}", file=sys.stderr)
        return EXIT_FAILED
    _err(str(error))
    return EXIT_USAGE if isinstance(error, UsageError) else EXIT_FAILED


def _print_job(job: dict[str, Any]) -> None:
    line = f"{job['job_id']}  {job['status']:<9}  {job['progress']:>3}%  {job['input']['filename']}"
    if job.get("error"):
        line += f"  [{job['error']['code']}] {job['error']['message']}"
    print(line)


def _wait(client: Any, job_id: str, quiet: bool = False) -> dict[str, Any]:
    if quiet or (not sys.stderr.isatty() and not ClientSettings.from_env().progress):
        last = [""]

        def plain(job: dict[str, Any]) -> None:
            text = f"{job['status']} {job['progress']}%"
            if text != last[0] and not quiet:
                print(f"  {job_id[:8]}: {text}", file=sys.stderr, flush=True)
                last[0] = text

        return dict(client.wait(job_id, plain))
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(f"{job_id[:8]} pending", total=100)

        def update(job: dict[str, Any]) -> None:
            bar.update(task, completed=job["progress"], description=f"{job_id[:8]} {job['status']}")

        return dict(client.wait(job_id, update))


def _finish(client: Any, job: dict[str, Any], fmt: str, output: str | None) -> int:
    if job["status"] != "succeeded":
        error = job.get("error") or {"code": job["status"], "message": f"the job was {job['status']}"}
        _err(f"job {job['job_id']} {job['status']}: {error['message']} ({error['code']})", HINTS.get(error["code"]))
        return EXIT_FAILED
    text = client.result_text(job, fmt)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path} does not exist or is not a file")
    client = _client(args)
    options: dict[str, Any] = {"language": args.language, "task": args.task}
    if args.model:
        options["model"] = args.model
    if args.word_timestamps:
        options["word_timestamps"] = True
    job = client.submit(path, options)
    print(job["job_id"])
    if not args.wait:
        print(f"submitted; follow it with `batchscribe wait {job['job_id']}`", file=sys.stderr)
        return 0
    return _finish(client, _wait(client, job["job_id"], args.quiet), args.format, args.output)


def cmd_status(args: argparse.Namespace) -> int:
    job = _client(args).get(args.job_id)
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    _print_job(job)
    for key in ("created_at", "started_at", "finished_at"):
        if job.get(key):
            print(f"  {key}: {job[key]}")
    if job.get("log_url"):
        print(f"  log: {job['log_url']}")
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    client = _client(args)
    job = _wait(client, args.job_id, args.quiet)
    _print_job(job)
    return 0 if job["status"] == "succeeded" else EXIT_FAILED


def cmd_result(args: argparse.Namespace) -> int:
    client = _client(args)
    job = client.get(args.job_id)
    if job["status"] not in TERMINAL:
        raise UsageError(f"job {args.job_id} is still {job['status']}; `batchscribe wait {args.job_id}` first")
    return _finish(client, job, args.format, args.output)


def cmd_list(args: argparse.Namespace) -> int:
    page = _client(args).list(status=args.status, limit=args.limit)
    for job in page["jobs"]:
        _print_job(job)
    if not page["jobs"]:
        print("no jobs", file=sys.stderr)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    _print_job(_client(args).cancel(args.job_id))
    return 0


def cmd_local_up(args: argparse.Namespace) -> int:
    from batchscribe.settings import Timings
    from batchscribe_cli.local import LocalConfig, LocalStack

    config = LocalConfig(
        port=args.port,
        max_workers=args.max_workers,
        data_dir=Path(args.data_dir),
        timings=Timings.local().replace(idle_exit_seconds=args.idle_seconds),
        worker_image=args.worker_image,
    )
    LocalStack(config).run_forever()
    return 0


SAMPLE = Path(__file__).resolve().parent / "samples" / "sample.mp3"


def cmd_demo(args: argparse.Namespace) -> int:
    from batchscribe_cli.client import Client
    from batchscribe_cli.local import LocalConfig, LocalStack

    sample = Path(args.file) if args.file else SAMPLE
    config = LocalConfig(port=0, max_workers=2, data_dir=Path(args.data_dir))
    with LocalStack(config) as stack:
        client = Client(stack.url, owner="demo")
        print(f"\n$ batchscribe submit {sample.name} --wait   (against {stack.url})", flush=True)
        job = client.submit(sample, {"language": "en"})
        done = _wait(client, job["job_id"], quiet=False)
        if done["status"] != "succeeded":
            return _finish(client, done, "txt", None)
        result = done["result"]
        print(
            f"\njob {done['job_id']} succeeded: {result['duration_seconds']:.1f} s of audio, "
            f"{result['engine']}/{result['model']}, real-time factor {result['real_time_factor']:.3f}\n"
        )
        print("--- transcript (txt) ---")
        print(client.result_text(done, "txt"), end="")
        print("--- subtitles (srt) ---")
        print(client.result_text(done, "srt"), end="", flush=True)
        print()
        time.sleep(config.timings.idle_exit_seconds + 2)  # let the worker exit: the stack scales back to zero
    return 0


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", help=f"API URL (default: ${ClientSettings.env_name('api')})")
    p.add_argument("--stack", help="read the API URL from this deployed stack's outputs")
    p.add_argument("--owner", help="local stack only: act as this owner (default: local)")


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

    local = sub.add_parser("local", help="the local stack").add_subparsers(dest="local_command", required=True)
    up = local.add_parser("up", help="start the whole pipeline on this machine (foreground; Ctrl-C stops it)")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--max-workers", type=int, default=2)
    up.add_argument("--data-dir", default=".local-data", help="worker logs and caches")
    up.add_argument("--idle-seconds", type=float, default=5, help="a worker exits after this long without work")
    up.add_argument(
        "--worker-image",
        help="run workers from this image with podman (e.g. localhost/batchscribe-worker:cpu from `make image`)",
    )
    up.set_defaults(func=cmd_local_up)

    s = sub.add_parser("submit", help="create a job, upload the file, optionally wait for the result")
    s.add_argument("file")
    s.add_argument("--wait", action="store_true", help="wait with a progress bar, then print the result")
    s.add_argument("--format", choices=["txt", "json", "srt", "vtt"], default="txt")
    s.add_argument("--language", default="auto")
    s.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    s.add_argument("--model")
    s.add_argument("--word-timestamps", action="store_true")
    s.add_argument("-o", "--output")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_submit)

    st = sub.add_parser("status", help="a job's status")
    st.add_argument("job_id")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    w = sub.add_parser("wait", help="wait for a job, with a progress bar")
    w.add_argument("job_id")
    w.add_argument("-q", "--quiet", action="store_true")
    w.set_defaults(func=cmd_wait)
    r = sub.add_parser("result", help="print or save a finished job's transcript")
    r.add_argument("job_id")
    r.add_argument("--format", choices=["txt", "json", "srt", "vtt"], default="txt")
    r.add_argument("-o", "--output")
    r.set_defaults(func=cmd_result)
    li = sub.add_parser("list", help="your jobs, newest first")
    li.add_argument("--status", choices=[*list(TERMINAL), "pending", "queued", "running"])
    li.add_argument("--limit", type=int, default=20)
    li.set_defaults(func=cmd_list)
    c = sub.add_parser("cancel", help="cancel a job that has not finished")
    c.add_argument("job_id")
    c.set_defaults(func=cmd_cancel)
    for p in (s, st, w, r, li, c):
        _add_target(p)

    d = sub.add_parser("demo", help="start the local stack, transcribe a sample end to end, stop")
    d.add_argument("file", nargs="?", help="an audio file instead of the bundled sample")
    d.add_argument("--data-dir", default=".local-data")
    d.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import requests

    from batchscribe_cli.client import ApiError

    try:
        return int(args.func(args))
    except (ApiError, UsageError) as exc:
        return _report(exc)
    except requests.ConnectionError:
        _err(
            f"cannot reach the API at {getattr(args, 'api', None) or ClientSettings.from_env().api}",
            f"is the local stack running (`batchscribe local up`)? Or check --api / {ClientSettings.env_name('api')}",
        )
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
