"""No credentials and no real AWS account ids in the repository: every file git would commit
(tracked, or new and not ignored) is scanned for access keys, secret keys, private keys and
12-digit account ids; the fake ids the tests and the local stack use are allowed by name."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# 12-digit numbers that may appear, each with why
ALLOWED_ACCOUNTS = {
    "000000000000": "the local stack's (moto's) account",
    "111111111111": "the tests' fake account",
    "123456789012": "AWS documentation's example account (cdk.context.json's AZ lookup key)",
    "017000801446": "AWS's own public account that publishes the Powertools Lambda layer",
}
ALLOWED_KEYS = {"AKIAIOSFODNN7EXAMPLE": "AWS documentation's example access key id"}

PATTERNS = {
    "access key id": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    "secret access key": re.compile(
        r"(?i)(?:aws)?_?secret_?(?:access)?_?key['\"]?\s*[:=]\s*['\"]?(?![A-Za-z0-9/+=]*EXAMPLE)[A-Za-z0-9/+=]{40}\b"
    ),
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
    "session token": re.compile(r"(?i)session_?token['\"]?\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{100,}"),
}
# an account id where one is expected: in an ARN, an ECR host, or next to the word "account"
ACCOUNT = re.compile(
    r"(?:arn:aws[a-z-]*:[a-z0-9-]*:[a-z0-9-]*:(\d{12}):)"
    r"|(?:\b(\d{12})\.dkr\.ecr\.)"
    r"|(?:(?i:account)[\w\"' :=]{0,30}?\b(\d{12})\b)"
)


def committed_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def scan(text: str) -> list[str]:
    found = []
    for what, pattern in PATTERNS.items():
        found += [f"{what}: {m.group(0)[:24]}…" for m in pattern.finditer(text) if m.group(0) not in ALLOWED_KEYS]
    for m in ACCOUNT.finditer(text):
        account = next(g for g in m.groups() if g)
        if account not in ALLOWED_ACCOUNTS:
            found.append(f"account id: {account}")
    return found


def test_the_scanner_finds_what_it_looks_for() -> None:
    """A scanner that cannot fail proves nothing: real-looking secrets are caught, fakes pass."""
    leaks = [
        "AKIA" + "Z" * 16,
        "aws_secret_access_key = " + "a1B2" * 10,
        "-----BEGIN RSA " + "PRIVATE KEY-----",
        "arn:aws:iam::" + "4" * 12 + ":role/x",
        "account_id: " + "5" * 12,
        "6" * 12 + ".dkr.ecr.us-east-1.amazonaws.com/x",
    ]
    for leak in leaks:
        assert scan(leak), leak
    for fake in ("arn:aws:iam::111111111111:user/alice", "AKIAIOSFODNN7EXAMPLE", "size 123456789012345 bytes"):
        assert scan(fake) == [], fake


def test_no_secrets_or_account_ids_in_the_repository() -> None:
    files = committed_files()
    assert len(files) > 50
    problems = []
    for path in files:
        if path.stat().st_size > 5_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # audio samples, images
        problems += [f"{path.relative_to(ROOT)}: {p}" for p in scan(text)]
    assert problems == []


@pytest.mark.parametrize("account", sorted(ALLOWED_ACCOUNTS))
def test_each_allowed_account_is_still_used(account: str) -> None:
    """The allowlist does not outlive its reasons."""
    assert any(account in p.read_text(errors="ignore") for p in committed_files() if p.stat().st_size < 5_000_000)
