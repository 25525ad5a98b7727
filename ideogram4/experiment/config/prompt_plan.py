"""Which prompts a job runs: the single `prompt`, a `prompts.file`, or the set's `items`.

Each prompt is parsed and serialised here, once: :attr:`PromptPlan.caption` is the exact string the
text encoder reads; the pipeline receives that string (a string is used verbatim), so what is
recorded is what ran. Token counts use the fast `tokenizers` library (no torch, no transformers).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from ideogram4.prompts import count_tokens_fast, parse_caption, serialize_caption, validate_caption

from .checks import ConfigError, problem
from .prompt_files import load_prompt_file

# letters, digits, '_', '-', '.'; no leading dot; short enough for "<id>__seed<N>__<hash>.png" (255 bytes)
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,159}")


@dataclass
class PromptPlan:
    id: str
    prompt: Any  # str or dict (plain python), as the user wrote it
    caption: str  # exact string fed to the text encoder
    issues: list[str] = field(default_factory=list)
    upsampled_from: str | None = None  # the plain prompt, when `caption` was written by prompt upsampling


def plan_prompts(
    single: Any, file: str | None, file_abspath: str | None, items: list, strict: bool
) -> tuple[list[PromptPlan], list[str], list[str]]:
    """(prompts, problems, warnings) for the job's prompt source."""
    entries, source_field, problems = _entries(single, file, file_abspath, items)
    out: list[PromptPlan] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for i, e in enumerate(entries):
        where = f"{source_field}[{i}]" if source_field != "prompt" else "prompt"
        pid, raw = str(e["id"]), e["prompt"]
        problems += _check_id(where, pid, seen)
        seen.add(pid)
        planned, entry_problems = _plan_one(where, pid, raw)
        problems += entry_problems
        if planned is None:
            continue
        for msg in planned.issues:
            hint = "" if strict else "; prompts.strict=true turns this into an error"
            text = problem(f"{where}.prompt", pid, f"caption schema: {msg}", "fix the caption (spec section G)" + hint)
            (problems if strict else warnings).append(text)
        out.append(planned)
    return out, problems, warnings


def _entries(single: Any, file: str | None, file_abspath: str | None, items: list) -> tuple[list, str, list[str]]:
    if single is not None:
        if isinstance(single, (dict, list)):
            what = "was parsed by Hydra as a mapping, not a caption string"
            fix = 'quote a JSON caption for Hydra: "prompt=\'{\\"high_level_description\\": ...}\'"'
            return [], "prompt", [problem("prompt", single, what, fix)]
        return [{"id": "prompt", "prompt": str(single)}], "prompt", []
    if file:
        try:
            return load_prompt_file(file, file_abspath or file), "prompts.file", []
        except ConfigError as e:
            return [], "prompts.file", list(e.problems)
    if not items:
        fix = 'pick a set (prompts=seed_example|typography|layout|plain), prompts.file=my.jsonl or prompt="..."'
        return [], "prompts.items", [problem("prompts.items", [], "no prompts to run", fix)]
    return items, "prompts.items", []


def _check_id(where: str, pid: str, seen: set[str]) -> list[str]:
    out = []
    if not _ID_RE.fullmatch(pid):
        fix = "use at most 160 letters, digits, '_', '-' or '.' (no spaces, slashes or line breaks)"
        out.append(problem(f"{where}.id", pid, "is not usable in a file name", fix))
    if pid in seen:
        out.append(problem(f"{where}.id", pid, "is used twice", "give every prompt its own id"))
    return out


def _plan_one(where: str, pid: str, raw: Any) -> tuple[PromptPlan | None, list[str]]:
    if not isinstance(raw, (str, dict)):
        fix = "give prose text or a structured caption"
        return None, [problem(f"{where}.prompt", raw, "must be a string or a caption mapping", fix)]
    if isinstance(raw, str) and not raw.strip():
        return None, [problem(f"{where}.prompt", raw, "is empty", "write a prompt")]
    try:
        parse_caption(raw)
        caption = serialize_caption(raw)
        caption.encode("utf-8")
    except UnicodeEncodeError as err:
        what = f"holds a character that is not valid text ({err.reason} at {err.start})"
        return None, [problem(f"{where}.prompt", pid, what, "remove the broken character (a lone surrogate)")]
    except ValueError as err:
        fix = "fix the JSON at that line/column, or write plain prose that does not start with '{'"
        return None, [problem(f"{where}.prompt", raw, str(err), fix)]
    issues = [str(x) for x in validate_caption(raw)]
    return PromptPlan(id=pid, prompt=raw, caption=caption, issues=issues), []


def check_token_counts(prompts: list[PromptPlan], limit: int, tokenizer_dir: str | None) -> list[str]:
    """Problems for captions over `limit` tokens after the chat template."""
    out = []
    # BPE never yields more tokens than UTF-8 bytes; the chat template adds < 32: most captions need no count.
    for p in prompts:
        if len(p.caption.encode("utf-8")) + 32 <= limit:
            continue
        n = count_tokens_fast(p.caption, tokenizer_dir)
        if n > limit:
            what = f"is {n} tokens after the chat template; the limit is {limit}"
            fix = f"shorten the caption by {n - limit} tokens (e.g. fewer or shorter elements[].desc)"
            out.append(problem(f"prompt[{p.id}]", p.caption, what, fix))
    return out


def tokenizer_dir_for(kind: str, source: str) -> str | None:
    """The model's own tokenizer folder for a local model; None: the bundled Qwen files (same vocabulary)."""
    folder = os.path.join(source, "tokenizer")
    return folder if kind == "local" and os.path.isfile(os.path.join(folder, "tokenizer.json")) else None
