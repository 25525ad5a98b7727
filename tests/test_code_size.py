"""Readable-size limits for the package and the Hydra plugins: modules up to 400 lines, functions up
to 60, and no `# fmt: skip` (packing arguments onto one line to pass the limits hides the size)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = (REPO / "ideogram4", REPO / "hydra_plugins")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(p for root in ROOTS for p in root.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_both_trees_have_modules():
    assert len([p for p in _modules() if "hydra_plugins" in p.parts]) >= 3
    assert len(_modules()) > 10


def test_no_module_over_400_lines():
    long = {_name(p): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by responsibility): {long}"


def test_no_function_over_60_lines():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{_name(path)}:{node.lineno} {node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_formatter_escapes():
    marker = "fmt: " + "skip"  # spelled in two parts so this file does not match itself
    skips = [
        f"{_name(p)}:{i}" for p in _modules() for i, line in enumerate(p.read_text().splitlines(), 1) if marker in line
    ]
    assert not skips, f"`# {marker}` packs code past the formatter: {skips}"
