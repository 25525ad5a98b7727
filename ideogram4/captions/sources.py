"""Caption files and prompt sets read into entries that know where they came from.

Accepted: a JSON caption file (one caption object), a JSON list, JSONL with one `{id, prompt}` per
line, YAML prompt sets like `conf/prompts/*.yaml` (`items: [{id, prompt}]`), and `-` for a JSON
document on standard input. A file that cannot be read raises `SourceError`, whose one line reads
`file:line:col: what is wrong` (exit code 2 when the file cannot be opened at all, else 1).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SET_KEYS = ("items", "prompts")  # a mapping holding a prompt set under one of these keys


class SourceError(Exception):
    def __init__(self, file: str, message: str, line: int | None = None, col: int | None = None, exit_code: int = 1):
        super().__init__(message)
        self.file, self.message, self.line, self.col, self.exit_code = file, message, line, col, exit_code

    def __str__(self) -> str:
        where = ":".join(str(x) for x in (self.file, self.line, self.col) if x is not None)
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class PromptEntry:
    file: str
    id: str
    prompt: Any  # a string (prose or a JSON caption) or a caption mapping; anything else is reported
    line: int | None = None  # where the entry starts in its file (1-based), when known
    has_id: bool = True  # False when a prompt set's entry carried no id (one was made up from its index)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


def read_text(file: str) -> str:
    """The file's text; SourceError with the position of the first byte that is not UTF-8."""
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except FileNotFoundError:
        raise SourceError(file, "no such file", exit_code=2) from None
    except IsADirectoryError:
        raise SourceError(file, "is a folder; give a .json, .jsonl or .yaml file", exit_code=2) from None
    except OSError as e:
        raise SourceError(file, f"cannot be read ({e.strerror})", exit_code=2) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SourceError(file, f"byte 0x{data[e.start]:02X} is not UTF-8; save the file as UTF-8", line, col) from None


def load_entries(file: str) -> list[PromptEntry]:
    """Every prompt in `file`, in order."""
    text = read_text(file)
    suffix = Path(file).suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_entries(file, text)
    if suffix in (".yaml", ".yml"):
        doc, lines = _yaml_document(file, text)
        return _document_entries(file, doc, lines)
    if suffix not in (".json", "") and file != "-":
        raise SourceError(file, f"unknown file type {suffix!r}: give a .json, .jsonl or .yaml file")
    return _document_entries(file, _json_document(file, text), [])


def select(entries: list[PromptEntry], prompt_id: str | None, file: str) -> PromptEntry:
    """The entry named `prompt_id`, or the only one when no id is given."""
    if prompt_id is None:
        if len(entries) == 1:
            return entries[0]
        ids = ", ".join(e.id for e in entries[:20]) + (" ..." if len(entries) > 20 else "")
        raise SourceError(file, f"holds {len(entries)} prompts; pick one with --id (one of: {ids})", exit_code=2)
    for e in entries:
        if e.id == prompt_id:
            return e
    ids = ", ".join(e.id for e in entries[:20])
    raise SourceError(file, f"has no prompt with id {prompt_id!r}; ids here: {ids}", exit_code=2)


def _json_document(file: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SourceError(file, f"invalid JSON: {e.msg}", e.lineno, e.colno) from None


def _jsonl_entries(file: str, text: str) -> list[PromptEntry]:
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise SourceError(
                file, f"invalid JSON: {e.msg} (write one {{id, prompt}} per line)", lineno, e.colno
            ) from None
        entries.append(_entry(file, item, len(entries), lineno))
    return entries


def _yaml_document(file: str, text: str) -> tuple[Any, list[int]]:
    """The YAML document and the first line of each item of its prompt set (for locations)."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise SourceError(file, f"invalid YAML: {problem}", line, col) from None
    items = root
    if isinstance(root, yaml.MappingNode):
        items = next((v for k, v in root.value if getattr(k, "value", None) in SET_KEYS), None)
    lines = [n.start_mark.line + 1 for n in items.value] if isinstance(items, yaml.SequenceNode) else []
    return doc, lines


def _document_entries(file: str, doc: Any, lines: list[int]) -> list[PromptEntry]:
    if isinstance(doc, dict) and any(k in doc for k in SET_KEYS):
        key = next(k for k in SET_KEYS if k in doc)
        items = doc[key]
        if not isinstance(items, list):
            raise SourceError(file, f"{key!r} must be a list of {{id, prompt}} entries, got {type(items).__name__}")
    elif isinstance(doc, list):
        items = doc
    elif isinstance(doc, (dict, str)):  # one caption (or one prose prompt) per file
        return [PromptEntry(file, Path(file).stem if file != "-" else "stdin", doc, 1)]
    else:
        raise SourceError(file, f"holds a {type(doc).__name__}; expected a caption object or a list of prompts")
    return [_entry(file, item, i, lines[i] if i < len(lines) else None) for i, item in enumerate(items)]


def _entry(file: str, item: Any, index: int, line: int | None) -> PromptEntry:
    """A prompt set's item: {id, prompt}; a bare caption or string counts as a prompt without an id."""
    if isinstance(item, dict) and "prompt" in item:
        pid = item.get("id")
        return PromptEntry(file, str(pid) if pid is not None else str(index), item["prompt"], line, pid is not None)
    return PromptEntry(file, str(index), item, line, has_id=False)
