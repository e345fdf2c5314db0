"""Every option and argument of every command says what it does in `--help`, and a mistake in
a command's options shows that command's usage, not the top-level one."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from batchscribe_cli.cli import build_parser, main


def commands(
    parser: argparse.ArgumentParser, path: str = "batchscribe"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{path} {name}")


def test_every_option_and_argument_has_help() -> None:
    missing = [
        f"{path}: {'/'.join(action.option_strings) or action.dest}"
        for path, parser in commands(build_parser())
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and action.help in (None, "")
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["submit", "a.wav", "--no-such-flag"], "usage: batchscribe submit"),
        (["cancel", "abcdef", "--nope"], "usage: batchscribe cancel"),
        (["local", "up", "--nope"], "usage: batchscribe local up"),
    ],
)
def test_an_unknown_option_shows_the_commands_usage(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.startswith(usage) and "unrecognized arguments" in err and argv[-1] in err
