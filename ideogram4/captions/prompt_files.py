"""The one prompt-file reader and its findings, used by `python -m ideogram4.captions` and the runner.

Accepted: a JSON caption file (one caption object), a JSON list, JSONL with one `{id, prompt}` per
line, YAML prompt sets like `conf/prompts/*.yaml` (`items: [{id, prompt}]`), and `-` for a JSON
document on standard input. An entry without an id takes its index ("0", "1", ...); a file holding
one caption takes the file's stem. A file that cannot be read raises the core's `PromptFileError`,
whose one line reads `file:line:col: what is wrong` (exit code 2 when the file cannot be opened at
all, else 1). `file_findings` lists every problem of the prompts read, each at its entry's line,
with the caption verifier's severity.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PromptFileError
from ..spec import MAX_TEXT_TOKENS
from .bounded import BoundError, load_yaml, loads_json
from .positions import join, json_lines, line_of, yaml_lines
from .schema import parse_caption, serialize_caption
from .verify import CaptionIssue, validate_caption

SET_KEYS = ("items", "prompts")  # a mapping holding a prompt set under one of these keys


@dataclass(frozen=True)
class PromptEntry:
    file: str
    id: str
    prompt: Any  # a string (prose or a JSON caption) or a caption mapping; anything else is reported
    line: int | None = None  # where the entry starts in its file (1-based), when known
    has_id: bool = True  # False when a prompt set's entry carried no id (one was made up from its index)
    # {JSON path in the file: line} and the path of this entry's caption in it, when the file says
    lines: dict[str, int] | None = field(default=None, compare=False, repr=False)
    prefix: str = ""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def where_of(self, path: str) -> str:
        """`file:line` of a value inside this entry's caption (`path` as the verifier writes it)."""
        if not self.lines or path == "prompt":
            return self.where
        line = line_of(self.lines, join(self.prefix, path)) or self.line
        return f"{self.file}:{line}" if line else self.file


def read_text(file: str) -> str:
    """The file's text; PromptFileError with the position of the first byte that is not UTF-8."""
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except FileNotFoundError:
        raise PromptFileError(file, "no such file", exit_code=2) from None
    except IsADirectoryError:
        raise PromptFileError(file, "is a folder; give a .json, .jsonl or .yaml file", exit_code=2) from None
    except OSError as e:
        raise PromptFileError(file, f"cannot be read ({e.strerror})", exit_code=2) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise PromptFileError(
            file, f"byte 0x{data[e.start]:02X} is not UTF-8; save the file as UTF-8", line, col
        ) from None


def load_entries(file: str) -> list[PromptEntry]:
    """Every prompt in `file`, in order."""
    text = read_text(file)
    suffix = Path(file).suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_entries(file, text)
    if suffix in (".yaml", ".yml"):
        return _document_entries(file, *_yaml_document(file, text))
    if suffix not in (".json", "") and file != "-":
        raise PromptFileError(file, f"unknown file type {suffix!r}: give a .json, .jsonl or .yaml file")
    return _document_entries(file, _json_document(file, text), json_lines(text))


def select(entries: list[PromptEntry], prompt_id: str | None, file: str) -> PromptEntry:
    """The entry named `prompt_id`, or the only one when no id is given."""
    if prompt_id is None:
        if len(entries) == 1:
            return entries[0]
        ids = ", ".join(e.id for e in entries[:20]) + (" ..." if len(entries) > 20 else "")
        raise PromptFileError(file, f"holds {len(entries)} prompts; pick one with --id (one of: {ids})", exit_code=2)
    for e in entries:
        if e.id == prompt_id:
            return e
    ids = ", ".join(e.id for e in entries[:20])
    raise PromptFileError(file, f"has no prompt with id {prompt_id!r}; ids here: {ids}", exit_code=2)


def _json_document(file: str, text: str) -> Any:
    try:
        return loads_json(text)
    except json.JSONDecodeError as e:
        raise PromptFileError(file, f"invalid JSON: {e.msg}", e.lineno, e.colno) from None
    except BoundError as e:
        raise PromptFileError(file, str(e), exit_code=2) from None


def _jsonl_entries(file: str, text: str) -> list[PromptEntry]:
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = loads_json(line)
        except BoundError as e:
            raise PromptFileError(file, str(e), lineno, exit_code=2) from None
        except json.JSONDecodeError as e:
            raise PromptFileError(
                file, f"invalid JSON: {e.msg} (write one {{id, prompt}} per line)", lineno, e.colno
            ) from None
        entries.append(_entry(file, item, len(entries), {"": lineno}))
    return entries


def _yaml_document(file: str, text: str) -> tuple[Any, dict[str, int]]:
    """The YAML document and the line of each of its values (for locations)."""
    import yaml

    try:
        doc, root = load_yaml(text)  # nesting and alias expansion bounded before any value is built
    except BoundError as e:
        raise PromptFileError(file, str(e), exit_code=2) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise PromptFileError(file, f"invalid YAML: {problem}", line, col) from None
    return doc, yaml_lines(root) if root is not None else {}


def _document_entries(file: str, doc: Any, lines: dict[str, int]) -> list[PromptEntry]:
    key = ""
    if isinstance(doc, dict) and any(k in doc for k in SET_KEYS):
        key = next(k for k in SET_KEYS if k in doc)
        items = doc[key]
        if not isinstance(items, list):
            raise PromptFileError(file, f"{key!r} must be a list of {{id, prompt}} entries, got {type(items).__name__}")
    elif isinstance(doc, list):
        items = doc
    elif isinstance(doc, (dict, str)):  # one caption (or one prose prompt) per file
        return [PromptEntry(file, Path(file).stem if file != "-" else "stdin", doc, 1, lines=lines)]
    else:
        raise PromptFileError(file, f"holds a {type(doc).__name__}; expected a caption object or a list of prompts")
    return [_entry(file, item, i, lines, join(key, i)) for i, item in enumerate(items)]


def _entry(file: str, item: Any, index: int, lines: dict[str, int] | None, at: str = "") -> PromptEntry:
    """A prompt set's item: {id, prompt}; a bare caption or string counts as a prompt without an id."""
    line = lines.get(at) if lines else None
    if isinstance(item, dict) and "prompt" in item:
        pid = item.get("id")
        found = str(pid) if pid is not None else str(index)
        return PromptEntry(file, found, item["prompt"], line, pid is not None, lines, join(at, "prompt"))
    return PromptEntry(file, str(index), item, line, has_id=False, lines=lines, prefix=at)


# --- findings --------------------------------------------------------------------------------------

# BPE never yields more tokens than UTF-8 bytes and the chat template adds fewer than this many, so a
# caption shorter than (limit - slack) bytes needs no tokenizer to know that it fits.
TEMPLATE_TOKEN_SLACK = 32


@dataclass(frozen=True)
class Finding:
    entry: PromptEntry
    issue: CaptionIssue
    lenient: bool = False  # a schema rule or a made-up id: the runner renders anyway unless prompts.strict
    at_value: bool = True  # reported at the line of the value the issue names (else at the entry's start)

    def severity(self, strict: bool = False) -> str:
        return "error" if strict else self.issue.severity

    def head(self, severity: str) -> str:
        """`file:line: [id] path: severity: message`, the same in every tool."""
        where = self.entry.where_of(self.issue.path) if self.at_value else self.entry.where
        return f"{where}: [{self.entry.id}] {self.issue.path}: {severity}: {self.issue.message}"

    def render(self, strict: bool = False) -> str:
        return self.head(self.severity(strict)) + (f"\n    fix: {self.issue.fix}" if self.issue.fix else "")


def token_issue(text: str, tokenizer_dir: str | None, limit: int) -> CaptionIssue | None:
    """The token-limit rule: counted only when the byte length says it might not fit."""
    if len(text.encode("utf-8")) + TEMPLATE_TOKEN_SLACK <= limit:
        return None
    from ..prompts import count_tokens_fast

    n = count_tokens_fast(text, tokenizer_dir)
    if n <= limit:
        return None
    fix = f"shorten it by {n - limit} tokens (e.g. fewer or shorter elements[].desc)"
    return CaptionIssue("prompt", f"is {n} tokens after the chat template; the limit is {limit}", fix)


def entry_findings(entry: PromptEntry, tokenizer_dir: str | None = None, limit: int | None = MAX_TEXT_TOKENS) -> list:
    """Every finding for one prompt: its form, the caption schema, the token limit (`limit=None`: not counted)."""
    prompt = entry.prompt
    if not isinstance(prompt, (str, dict)):
        return [
            Finding(
                entry,
                CaptionIssue("prompt", f"{prompt!r} is neither text nor a caption object", "give prose or a caption"),
            )
        ]
    if isinstance(prompt, str) and not prompt.strip():
        return [Finding(entry, CaptionIssue("prompt", "is empty", "write a prompt"))]
    try:
        parse_caption(prompt)
        text = serialize_caption(prompt)
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        what = f"holds a character that is not valid text ({e.reason} at {e.start})"
        return [Finding(entry, CaptionIssue("prompt", what, "remove the broken character (a lone surrogate)"))]
    except ValueError as e:
        fix = "fix the JSON at that line and column, or write plain prose that does not start with '{'"
        return [Finding(entry, CaptionIssue("prompt", str(e), fix))]
    found = [Finding(entry, issue, lenient=True) for issue in validate_caption(prompt)]
    too_long = token_issue(text, tokenizer_dir, limit) if limit is not None else None
    return found + ([Finding(entry, too_long)] if too_long else [])


def set_findings(entries: list[PromptEntry]) -> list[Finding]:
    """Prompt-set rules: every entry has an id, and no id is used twice in a file."""
    findings, seen = [], {}
    for e in entries:
        if not e.has_id and len(entries) > 1:
            fix = 'give every entry an id, e.g. {"id": "cat", ...}'
            findings.append(Finding(e, CaptionIssue("id", "missing", fix), lenient=True, at_value=False))
        elif e.id in seen:
            first = seen[e.id]
            findings.append(
                Finding(
                    e,
                    CaptionIssue("id", f"{e.id!r} is also used at {first.where}", "give every prompt its own id"),
                    at_value=False,
                )
            )
        seen.setdefault(e.id, e)
    return findings


def file_findings(
    entries: list[PromptEntry], tokenizer_dir: str | None = None, limit: int | None = MAX_TEXT_TOKENS
) -> list:
    """Every finding of a file's prompts, set rules first, each at its entry's line."""
    return set_findings(entries) + [f for e in entries for f in entry_findings(e, tokenizer_dir, limit)]
