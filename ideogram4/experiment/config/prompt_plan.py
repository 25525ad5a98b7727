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

from ideogram4.captions.prompt_files import PromptEntry, file_findings, load_entries, token_issue
from ideogram4.errors import PromptFileError
from ideogram4.prompts import serialize_caption

from .problems import problem

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
    """(prompts, problems, warnings) for the job's prompt source.

    The findings are the captions' own (`file_findings`, the rules `python -m ideogram4.captions check`
    applies, at the same lines). With `strict` each keeps the verifier's severity, as `check` reports
    it; without, the schema rules and made-up ids only warn, so a sketchy caption still renders."""
    entries, problems = _entries(single, file, file_abspath, items)
    findings = file_findings(entries, limit=None)  # tokens are counted later, with the model's tokenizer
    warnings: list[str] = []
    blocked: set[int] = set()
    for f in findings:
        severity = "warning" if f.lenient and not strict else f.issue.severity
        hint = "; prompts.strict=true stops on it" if severity != f.issue.severity else ""
        (problems if severity == "error" else warnings).append(f"{f.head(severity)}. Fix: {f.issue.fix}{hint}")
        if not f.lenient:
            blocked.add(id(f.entry))
    out = []
    for e in entries:
        problems += _check_id(e)
        if id(e) not in blocked:
            issues = [str(f.issue) for f in findings if f.entry is e]
            out.append(PromptPlan(id=e.id, prompt=e.prompt, caption=serialize_caption(e.prompt), issues=issues))
    return out, problems, warnings


def _entries(single: Any, file: str | None, file_abspath: str | None, items: list) -> tuple[list, list[str]]:
    if single is not None:
        if isinstance(single, (dict, list)):
            what = "was parsed by Hydra as a mapping, not a caption string"
            fix = 'quote a JSON caption for Hydra: "prompt=\'{\\"high_level_description\\": ...}\'"'
            return [], [problem("prompt", single, what, fix)]
        return [PromptEntry("prompt", "prompt", str(single))], []
    if file:
        try:
            return load_entries(file_abspath or file), []
        except PromptFileError as e:
            where = f"line {e.line}, column {e.col}: " if e.line else ""
            fix = "give an existing .jsonl/.json/.yaml file (relative paths are from the directory you ran in)"
            fix = fix if e.exit_code == 2 else "fix the file at that position"
            return [], [problem("prompts.file", file, f"{where}{e.message} ({e.file})", fix)]
    if not items:
        fix = 'pick a set (prompts=seed_example|typography|layout|plain), prompts.file=my.jsonl or prompt="..."'
        return [], [problem("prompts.items", [], "no prompts to run", fix)]
    return [PromptEntry(f"prompts.items[{i}]", str(e["id"]), e["prompt"]) for i, e in enumerate(items)], []


def _check_id(entry: PromptEntry) -> list[str]:
    """Ids name the output files: a runner rule on top of the captions' (duplicates are theirs)."""
    if _ID_RE.fullmatch(entry.id):
        return []
    fix = "use at most 160 letters, digits, '_', '-' or '.' (no spaces, slashes or line breaks)"
    return [problem(f"{entry.where}.id", entry.id, "is not usable in a file name", fix)]


def check_token_counts(prompts: list[PromptPlan], limit: int, tokenizer_dir: str | None) -> list[str]:
    """Problems for captions over `limit` tokens after the chat template."""
    out = []
    for p in prompts:
        issue = token_issue(p.caption, tokenizer_dir, limit)
        if issue is not None:
            out.append(problem(f"prompt[{p.id}]", p.caption, issue.message, issue.fix))
    return out


def tokenizer_dir_for(kind: str, source: str) -> str | None:
    """The model's own tokenizer folder for a local model; None: the bundled Qwen files (same vocabulary)."""
    folder = os.path.join(source, "tokenizer")
    return folder if kind == "local" and os.path.isfile(os.path.join(folder, "tokenizer.json")) else None
