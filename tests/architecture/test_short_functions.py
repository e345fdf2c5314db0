"""Functions stay short (STYLE.md: at most 80 lines, most much shorter). Checked for the CDK
app (`stacks/` and `app.py`): a construct is a list of named steps, not one long body."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 80
CDK_APP = [*sorted((ROOT / "stacks").rglob("*.py")), ROOT / "app.py"]


def long_functions(paths: Iterable[Path], limit: int = MAX_LINES) -> list[str]:
    """Every function or method (nested ones too) longer than `limit` lines, decorators excluded."""
    found = []
    for path in paths:
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_of_the_cdk_app_is_longer_than_80_lines() -> None:
    assert len(CDK_APP) > 10  # the constructs are all read
    assert long_functions(CDK_APP) == []


def test_the_check_finds_a_long_function_and_a_long_nested_one(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))  # def line + 80: one line too long
    nested = "class C:\n    def m(self) -> None:\n        def inner() -> None:\n" + "".join(
        f"            y{i} = {i}\n" for i in range(MAX_LINES)
    )
    short = "def ok() -> None:\n" + "".join(f"    z{i} = {i}\n" for i in range(MAX_LINES - 1))
    (tmp_path / "long.py").write_text(f"def f() -> None:\n{body}")
    (tmp_path / "nested.py").write_text(nested)
    (tmp_path / "short.py").write_text(short)
    found = long_functions(sorted(tmp_path.glob("*.py")))
    assert [line.rsplit("/", 1)[-1] for line in found] == [
        "long.py:1 f (81 lines)",
        "nested.py:2 m (82 lines)",
        "nested.py:3 inner (81 lines)",
    ]
