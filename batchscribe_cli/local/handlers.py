"""The real Lambda handlers, imported into the local stack's process: one environment serves
them all (written from each one's settings model), each takes one event at a time as one Lambda
environment does, and none records metrics (CloudWatch is not emulated)."""

from __future__ import annotations

import functools
import importlib
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from batchscribe import aws
from batchscribe.settings import EnvSettings, powertools_env

Handler = Callable[[dict[str, Any], Any], Any]
# the Lambda handlers the local stack runs in its own process (lambdas/<name>/handler.py)
IN_PROCESS = ("api", "on_upload", "dead_letter", "sweeper", "reconciler", "scaler", "notify", "webhook")


def merged_env(*parts: dict[str, str]) -> dict[str, str]:
    """One environment from several processes' settings; a name may not mean two things."""
    out: dict[str, str] = {}
    for part in parts:
        for k, v in part.items():
            if out.get(k, v) != v:
                raise ValueError(f"{k} would be both {out[k]!r} and {v!r}")
            out[k] = v
    return out


def handler_env(settings: Mapping[str, EnvSettings]) -> dict[str, str]:
    """The environment the in-process handlers share: each one's settings, Powertools quiet."""
    return merged_env(
        *(settings[name].to_env() for name in IN_PROCESS),
        powertools_env(log_level="WARNING"),
        {"POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true"},
    )


class ProcessEnvironment:
    """Variables set in this process's environment for the stack's life, put back at the end.
    The cached AWS clients are dropped at each change, so the next ones read the new values."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def set(self, values: Mapping[str, str]) -> None:
        for k, v in values.items():
            self._saved.setdefault(k, os.environ.get(k))
            os.environ[k] = v
        aws.reset()

    def restore(self) -> None:
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved.clear()
        aws.reset()


def one_at_a_time(handler: Handler) -> Handler:
    """A handler that takes one event at a time, however many threads call it."""
    lock = threading.Lock()

    @functools.wraps(handler)
    def serialised(event: dict[str, Any], context: Any) -> Any:
        with lock:
            return handler(event, context)

    return serialised


def load(names: tuple[str, ...] = IN_PROCESS) -> dict[str, Handler]:
    """Each handler, imported before any thread runs (concurrent first imports of one library,
    Powertools, from several threads can see half-initialised modules), one event at a time
    (Powertools keeps the current event and context on shared router and processor objects)."""
    modules = {name: importlib.import_module(f"lambdas.{name}.handler") for name in names}
    for module in modules.values():
        _drop_metrics(module)
    # with none recorded, Powertools warns at the end of every invocation: a log line on
    # Lambda, but here it would print on the user's terminal at every call
    warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)
    return {name: one_at_a_time(module.handler) for name, module in modules.items()}


def _no_metric(*_: Any, **__: Any) -> None:
    return None


def _drop_metrics(module: Any) -> None:
    """CloudWatch is not emulated here. Powertools keeps one metric set per process and
    empties it when a Lambda invocation ends; with every handler in this one process, and
    metrics off, it would only fill up (and print itself at 100 values, from any thread).
    The local stack's handlers record none."""
    metrics = getattr(module, "metrics", None)
    if metrics is not None:
        metrics.add_metric = _no_metric
