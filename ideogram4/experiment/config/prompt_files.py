"""A user's own prompt file (``prompts.file``): .jsonl, .json or .yaml -> [{id, prompt}, ...].

Every failure is a ConfigError naming the file, the line/column where the parser stopped and the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .checks import ConfigError, problem

FIELD = "prompts.file"


def load_prompt_file(path: str, full: str) -> list[dict]:
    """Entries of the file at `full` (`path` is what the user typed, for messages)."""
    if not os.path.isfile(full):
        fix = "give an existing .jsonl/.json/.yaml path (relative paths are from the directory you ran in)"
        raise ConfigError([problem(FIELD, path, f"no such file ({full})", fix)])
    suffix = Path(full).suffix.lower()
    parsers = {".jsonl": _parse_jsonl, ".json": _parse_json, ".yaml": _parse_yaml, ".yml": _parse_yaml}
    if suffix not in parsers:
        raise ConfigError(
            [problem(FIELD, path, f"unsupported file type {suffix!r}", "use .jsonl, .json, .yaml or .yml")]
        )
    try:
        text = Path(full).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        what = f"is not UTF-8 text (byte {e.start}: {e.reason})"
        raise ConfigError([problem(FIELD, path, what, "save the file as UTF-8")]) from None
    entries = parsers[suffix](path, text)
    if isinstance(entries, dict):
        entries = entries.get("items", entries.get("prompts"))
    if not isinstance(entries, list) or not entries:
        fix = "make it a list of {id, prompt} entries (or a mapping with an `items` list)"
        raise ConfigError([problem(FIELD, path, "holds no list of prompts", fix)])
    return [_entry(i, e) for i, e in enumerate(entries)]


def _entry(i: int, e: Any) -> dict:
    if isinstance(e, str):
        e = {"id": f"p{i:03d}", "prompt": e}
    if not isinstance(e, dict) or "prompt" not in e:
        fix = "give each entry a `prompt` (string or caption mapping) and an `id`"
        raise ConfigError([problem(f"{FIELD}[{i}]", e, "is not an {id, prompt} entry", fix)])
    return {"id": str(e.get("id", f"p{i:03d}")), "prompt": e["prompt"]}


def _parse_jsonl(path: str, text: str) -> list:
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as e:
            fix = 'write one JSON object per line, e.g. {"id": "cat", "prompt": "a cat"}'
            raise ConfigError([problem(FIELD, path, f"line {lineno}, column {e.colno}: {e.msg}", fix)]) from None
    return entries


def _parse_json(path: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        fix = "fix the JSON syntax at that position"
        raise ConfigError([problem(FIELD, path, f"line {e.lineno}, column {e.colno}: {e.msg}", fix)]) from None


def _parse_yaml(path: str, text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = f"{where}{getattr(e, 'problem', None) or e}"
        raise ConfigError([problem(FIELD, path, what, "fix the YAML syntax at that position")]) from None
