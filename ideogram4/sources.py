"""The one answer to "is this a local path, a hub repo or a file in a hub repo?", and hub fetching.

Weights (`checkpoints/`), LoRA files, the CLIP metric's model, the upsampling LM head and reproduction
all take a source as text. `parse_source` decides what it names, by one rule:

1. something that exists on disk (after `~` expansion, relative to the working folder) is local;
2. text that starts with `.`, `/` or `~` (or holds a Windows separator) is a local path, even missing;
3. `owner/repo` is a hub repo, unless its last part ends in a weights suffix (`loras/a.safetensors`:
   a repo name never does), which makes it a local path;
4. `owner/repo/some/file` is a file in a hub repo;
5. anything else (one bare name) is a local path.

Callers say which kinds they accept; the fetch helpers turn huggingface_hub's failures into one
line of the caller's error type saying what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError

LOCAL, HUB_REPO, HUB_FILE = "local", "hub repo", "hub file"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


@dataclass(frozen=True)
class Source:
    kind: str  # LOCAL | HUB_REPO | HUB_FILE
    text: str  # as given
    path: Path | None = None  # LOCAL: absolute, `~` expanded (may not exist)
    repo_id: str | None = None  # HUB_REPO / HUB_FILE
    filename: str | None = None  # HUB_FILE: the path inside the repo

    @property
    def is_local(self) -> bool:
        return self.kind == LOCAL

    @property
    def exists(self) -> bool:
        return self.path is not None and self.path.exists()

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else self.text


def parse_source(source: str | os.PathLike, base: str | None = None) -> Source:
    """Classify `source` by the module's rule (nothing is fetched; the disk is only looked at).

    A relative local path is taken relative to `base` (default: the working folder)."""
    text = os.fspath(source)
    expanded = os.path.join(base or os.getcwd(), os.path.expanduser(text))
    local = Source(LOCAL, text, path=Path(os.path.abspath(expanded)))
    if local.path.exists() or text.startswith((".", "/", "~")) or (os.sep != "/" and os.sep in text):
        return local
    parts = text.strip("/").split("/")
    if len(parts) < 2 or not all(parts) or (len(parts) == 2 and text.endswith(WEIGHT_SUFFIXES)):
        return local
    repo_id = "/".join(parts[:2])
    if len(parts) == 2:
        return Source(HUB_REPO, text, repo_id=repo_id)
    return Source(HUB_FILE, text, repo_id=repo_id, filename="/".join(parts[2:]))


def hub_offline() -> bool:
    """Whether huggingface_hub was told not to reach the hub (HF_HUB_OFFLINE, read now, not at import)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE) or flag


def _explain(e: Exception, repo_id: str, files: str, revision: str | None) -> str | None:
    """One line for a huggingface_hub failure (None: not one of the failures we explain)."""
    from huggingface_hub import errors

    offline = (
        f"{files} of {repo_id} is not in the local cache and the hub cannot be reached (offline or "
        f"HF_HUB_OFFLINE=1): download it where there is network (`hf download {repo_id}`) and copy the cache, "
        "or pass a local path"
    )
    # Most specific first: gated is a kind of not-found, a local-cache miss a kind of missing file.
    table = (
        (
            errors.GatedRepoError,
            f"{repo_id} is gated: accept its licence on the Hugging Face page, then log in (`hf auth login`) "
            "or set HF_TOKEN, and run again",
        ),
        (
            errors.RepositoryNotFoundError,
            f"{repo_id} was not found, or it is gated/private and no token was sent: check the name, then "
            "`hf auth login` or set HF_TOKEN",
        ),
        (
            errors.RevisionNotFoundError,
            f"{repo_id} has no revision {revision!r}: pin an existing branch, tag or commit",
        ),
        (errors.LocalEntryNotFoundError, offline),
        (errors.EntryNotFoundError, f"{repo_id} has no {files}: check the file name"),
    )
    return next((line for kind, line in table if isinstance(e, kind)), None)


def hub_folder(
    repo_id: str, patterns: list[str], revision: str | None = None, error: type[Exception] = CheckpointError
) -> Path:
    """Only the named files/folders of a repo, through huggingface_hub's cache."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, revision=revision))
    except Exception as e:
        line = _explain(e, repo_id, ", ".join(patterns), revision)
        if line is None:
            raise
        raise error(line) from e


def hub_file(
    repo_id: str, filename: str, revision: str | None = None, error: type[Exception] = CheckpointError
) -> Path:
    """One file of a hub repo through huggingface_hub's cache."""
    import huggingface_hub

    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, filename, revision=revision))
    except Exception as e:
        line = _explain(e, repo_id, filename + (f" at revision {revision!r}" if revision else ""), revision)
        if line is None:
            raise
        raise error(line) from e
