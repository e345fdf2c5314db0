"""IAM in the local stack: every AWS call a component makes is allowed only if the policy the CDK
stack synthesizes for that component's role allows its action on its resource (policies.py,
requests.py); a denied call fails as on AWS, with botocore's ClientError AccessDenied (or
AccessDeniedException) naming the role, the action and the resource, before it is sent.

Checked on the caller's side, by a botocore hook (`provide-client-params`: the operation and
the caller's own parameters, for calls and presigned URLs alike) on every client
`batchscribe.aws.client` makes: moto's server-side check takes every non-S3 request for
resource `*` and fails on a browser's presigned POST (NOTES.md, "moto's IAM").

Who calls: the in-process Lambda handlers share one process and one client cache, so the
principal is per call, a context variable set while a handler (or the event source that feeds
it, which Lambda runs with the function's role) works (`as_role`). A call made with none set is
the platform's (provisioning, snapshots, moto housekeeping, the tests): not checked. A worker
process checks every call against the worker role's policy, installed through its environment
(`worker_env`: a sitecustomize on its PYTHONPATH; the worker program knows nothing of it)."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from batchscribe_cli.local.policies import Context, Policy
from batchscribe_cli.local.requests import Checks, UnknownOperation, checks, presigned_post
from batchscribe_cli.local.requests import context as request_context

POLICY_ENV = "LOCAL_IAM_POLICY"  # a worker's policy (the local stack's own variable, not a service setting)
CHECKS_ENV = "LOCAL_IAM_CHECKS"  # where a worker writes what it checked, at exit
DENIALS = "denials.log"  # in that folder: each worker's denials, a line each, as they happen
SITECUSTOMIZE = f"""# written by {__name__}: the local stack's IAM check in a worker process
from {__name__} import install_from_env, run_next_sitecustomize

install_from_env()
run_next_sitecustomize(__file__)
"""

_principal: contextvars.ContextVar[str | None] = contextvars.ContextVar("local_iam_principal", default=None)
_presigning_post = contextvars.ContextVar("local_iam_presigning_post", default=False)
# services whose denial is "AccessDenied" (query/XML protocols); the others say AccessDeniedException
_ACCESS_DENIED = {"s3": "AccessDenied", "sqs": "AccessDenied"}


class Enforcer:
    """Checks each call of a component against its policy; counts what it checked."""

    def __init__(self, policies: Mapping[str, Policy], say: Callable[[str], None], default: str | None = None) -> None:
        self.policies = dict(policies)
        self.say = say
        self.default = default  # a worker process's component; None in the stack's own process
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.denied: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    def component(self) -> str | None:
        return _principal.get() or self.default

    def check_call(self, service: str, operation: str, params: Mapping[str, Any]) -> None:
        component = self.component()
        if component is None:
            return  # the platform's own call
        try:
            pairs = checks(service, operation, params)
        except UnknownOperation as exc:
            self.say(f"IAM: refused {component}'s call {exc}")
            raise _error(service, operation, "AccessDenied", f"local IAM check: unknown operation {exc}") from None
        self.check(component, service, operation, pairs, request_context(service, operation, params))

    def check(
        self, component: str, service: str, operation: str, pairs: Checks, context: Context | None = None
    ) -> None:
        policy = self.policies.get(component)
        if policy is None:
            raise RuntimeError(f"no policy for component {component!r} in policies.json")
        for action, resource in pairs:
            allowed = policy.allows(action, resource, context)
            with self._lock:
                (self.counts if allowed else self.denied)[(component, action, resource)] += 1
            if not allowed:
                message = (
                    f"User: {policy.principal} is not authorized to perform: {action} on resource: {resource} "
                    f"because no identity-based policy allows the {action} action "
                    f"(local stack: the policy the CDK stack synthesizes for {policy.role})"
                )
                self.say(f"IAM: denied {component}: {action} on {resource} ({service}.{operation})")
                raise _error(service, operation, _ACCESS_DENIED.get(service, "AccessDeniedException"), message)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "checked": [[*key, n] for key, n in sorted(self.counts.items())],
                "denied": [[*key, n] for key, n in sorted(self.denied.items())],
            }


def collect(enforcer: Enforcer, folder: Path) -> dict[str, Any]:
    """This process's checks and those the workers wrote in `folder` as they exited, added up."""
    summaries = [enforcer.summary()]
    for path in sorted(folder.glob("checks-*.json")) if folder.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            summaries.append(json.loads(path.read_text()))
    total: dict[str, Counter[tuple[str, str, str]]] = {"checked": Counter(), "denied": Counter()}
    for summary in summaries:
        for kind, counts in total.items():
            for component, action, resource, n in summary[kind]:
                counts[(component, action, resource)] += n
    return {kind: [[*key, n] for key, n in sorted(counts.items())] for kind, counts in total.items()}


def _error(service: str, operation: str, code: str, message: str) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 403}}
    return ClientError(response, operation)


_enforcer: Enforcer | None = None


def enforce(enforcer: Enforcer | None) -> None:
    """Check every call from now on with `enforcer` (None: check nothing)."""
    global _enforcer
    _enforcer = enforcer
    if enforcer is not None:
        install()


def enforcing() -> Enforcer | None:
    return _enforcer


# ---- the principal ---------------------------------------------------------------------

T = TypeVar("T")


@contextlib.contextmanager
def acting_as(component: str | None) -> Iterator[None]:
    token = _principal.set(component)
    try:
        yield
    finally:
        _principal.reset(token)


def as_role(component: str, fn: Callable[..., T]) -> Callable[..., T]:
    """`fn`, whose AWS calls are made with `component`'s role."""

    @functools.wraps(fn)
    def with_role(*args: Any, **kwargs: Any) -> T:
        with acting_as(component):
            return fn(*args, **kwargs)

    return with_role


# ---- the hook on every client ----------------------------------------------------------


def _before_call(params: Mapping[str, Any], model: Any, context: Mapping[str, Any], **_: Any) -> None:
    enforcer = _enforcer
    if enforcer is None:
        return
    operation = model.name
    if context.get("is_presign_request") and operation == "CreateBucket":
        # botocore builds a presigned POST's URL as a CreateBucket: the POST itself was checked
        if _presigning_post.get() or enforcer.component() is None:
            return
        raise RuntimeError("a presigned POST made without the local IAM check's wrapper")
    enforcer.check_call(model.service_model.service_name, operation, params)


def _checked_post(generate: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(generate)
    def generate_presigned_post(Bucket: str, Key: str, *args: Any, **kwargs: Any) -> Any:
        enforcer = _enforcer
        component = enforcer.component() if enforcer is not None else None
        if enforcer is not None and component is not None:
            enforcer.check(component, "s3", "PresignedPost", presigned_post(Bucket, Key))
        token = _presigning_post.set(True)
        try:
            return generate(Bucket, Key, *args, **kwargs)
        finally:
            _presigning_post.reset(token)

    return generate_presigned_post


def _hooked(client: Any) -> Any:
    if not getattr(client, "_iam_hooked", False):
        client._iam_hooked = True
        client.meta.events.register("provide-client-params", _before_call)
        if hasattr(client, "generate_presigned_post"):
            client.generate_presigned_post = _checked_post(client.generate_presigned_post)
    return client


def install() -> None:
    """Every client `batchscribe.aws` makes from now on in this process is checked (while an
    enforcer is set). Once per process; install it before `harness.faults`, which wraps on top."""
    from batchscribe import aws

    wrapper: Any = aws.client
    while wrapper is not None:
        if getattr(wrapper, "_iam", False):
            return
        wrapper = getattr(wrapper, "original", None)
    original = aws.client

    def client(service: str) -> Any:
        return _hooked(original(service))

    client._iam = True  # type: ignore[attr-defined]
    client.original = original  # type: ignore[attr-defined]
    client.cache_clear = original.cache_clear  # type: ignore[attr-defined]  # aws.reset() still works
    aws.client = client  # type: ignore[assignment]
    aws.reset()  # clients made before are made again, hooked


# ---- worker processes ------------------------------------------------------------------


def worker_env(policy: Policy, folder: Path, pythonpath: str = "") -> dict[str, str]:
    """The environment that makes a worker process check its calls against `policy`: a
    sitecustomize module (imported by Python at start) in `folder`/site, first on PYTHONPATH
    (it then runs the next sitecustomize on the path, e.g. the chaos harness's); the policy;
    and `folder`/checks, where each worker writes what it checked."""
    site, checks_folder = folder / "site", folder / "checks"
    site.mkdir(parents=True, exist_ok=True)
    checks_folder.mkdir(parents=True, exist_ok=True)
    for old in [*checks_folder.glob("checks-*.json"), checks_folder / DENIALS]:  # an earlier run's
        old.unlink(missing_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(site), pythonpath) if p)
    return {POLICY_ENV: policy.to_json(), CHECKS_ENV: str(checks_folder), "PYTHONPATH": path}


def run_next_sitecustomize(this_file: str) -> None:
    """Python imports only the first sitecustomize on the path: run the one after this one."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(this_file))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def install_from_env() -> None:
    """In a worker process (the sitecustomize): check every call against the policy in the
    environment; say each denial on stderr (the worker's log) and in the checks folder's
    denials.log (the stack says it on its terminal); write the counts at exit."""
    raw = os.environ.get(POLICY_ENV)
    if not raw:
        return
    import atexit

    policy = Policy.from_json(raw)
    folder = Path(os.environ.get(CHECKS_ENV) or os.devnull)

    def say(line: str) -> None:
        print(f"local stack: {line}", file=sys.stderr, flush=True)
        if folder.is_dir():
            with contextlib.suppress(OSError), (folder / DENIALS).open("a") as out:
                out.write(f"{line} (worker pid {os.getpid()})\n")

    enforcer = Enforcer({policy.component: policy}, say, default=policy.component)
    enforce(enforcer)
    if folder.is_dir():
        out = folder / f"checks-{os.getpid()}.json"
        atexit.register(lambda: out.write_text(json.dumps(enforcer.summary())))


class WorkerDenials:
    """What the workers were denied, said on the stack's terminal as it happens (each worker
    appends its denials to the checks folder's denials.log)."""

    def __init__(self, folder: Path, say: Callable[[str], None]) -> None:
        self.path = folder / DENIALS
        self.say = say
        self.offset = 0

    def __call__(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            self.say(f"{line}; see the worker's log")
