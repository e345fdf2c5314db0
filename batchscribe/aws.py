"""Small cached boto3 client factories. Nothing is created at import time, so tests can
start moto first; `reset()` forgets the cache between tests. The endpoint comes from the
standard AWS_ENDPOINT_URL variables (the local stack sets them).

`per_process` caches what a handler builds once per process from its settings (its logic
object and clients); `reset()` forgets those too."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)


@cache
def client(service: str) -> Any:
    if service == "s3":
        # Virtual-host style needs DNS for the bucket; path style works everywhere, moto included.
        return boto3.client(
            "s3", config=_CONFIG.merge(Config(signature_version="s3v4", s3={"addressing_style": "path"}))
        )
    return boto3.client(service, config=_CONFIG)


T = TypeVar("T")
_process_caches: list[Callable[[], None]] = []


def per_process(factory: Callable[[], T]) -> Callable[[], T]:
    """Build once per process (at the first call, never at import), forget on reset()."""
    cached = cache(factory)
    _process_caches.append(cached.cache_clear)
    return cached


def reset() -> None:
    client.cache_clear()
    for clear in _process_caches:
        clear()
