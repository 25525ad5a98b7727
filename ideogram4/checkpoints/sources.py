"""Where the weights are: a hub repo id, a local folder, or DiffSynth-style `ModelConfig`s -> local paths.

Sources: a hub repo id (`ideogram-ai/ideogram-4-fp8`, `ideogram-ai/ideogram-4-nf4`,
`DiffSynth-Studio/ideogram-4-bf16-repackage`, a diffusers-layout repo), a local folder in either
layout, or `ModelConfig`s naming single files or folders. Nothing here reads a tensor.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

log = logging.getLogger(__name__)

COMPONENTS = ("transformer", "unconditional_transformer", "text_encoder", "vae", "tokenizer")
REQUIRED = ("transformer", "text_encoder", "vae", "tokenizer")
# The bf16 repackage ships no tokenizer; DiffSynth takes it from the fp8 release.
DEFAULT_TOKENIZER_REPO = "ideogram-ai/ideogram-4-fp8"


@dataclass
class ModelConfig:
    """One component's files, as in DiffSynth-Studio: a hub file pattern or a local path."""

    model_id: str | None = None
    origin_file_pattern: str | None = None
    path: str | None = None
    revision: str | None = None

    @property
    def component(self) -> str:
        ref = (self.origin_file_pattern or self.path or "").replace("\\", "/").strip("/")
        parts = ref.split("/")
        for part in reversed(parts[:-1] if len(parts) > 1 and "." in parts[-1] else parts):
            if part in COMPONENTS:
                return part
        raise CheckpointError(
            f"cannot tell which component {ref!r} is: the path must contain one of the folders {', '.join(COMPONENTS)} "
            "(e.g. origin_file_pattern='transformer/diffusion_pytorch_model.safetensors')"
        )


def is_local(source: str) -> bool:
    return os.path.isdir(os.path.expanduser(source)) or source.startswith((".", "/", "~"))


def hub_download(repo_id: str, patterns: list[str], revision: str | None = None) -> Path:
    """Only the named files/folders of a repo, through huggingface_hub's cache; clear errors for the usual failures."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, revision=revision))
    except GatedRepoError as e:
        raise CheckpointError(
            f"{repo_id} is gated: accept its licence on the Hugging Face page, then log in "
            "(`hf auth login`) or set HF_TOKEN, and run again"
        ) from e
    except RepositoryNotFoundError as e:
        raise CheckpointError(
            f"{repo_id} was not found, or it is gated/private and no token was sent: check the name, then "
            "`hf auth login` or set HF_TOKEN"
        ) from e
    except RevisionNotFoundError as e:
        raise CheckpointError(f"{repo_id} has no revision {revision!r}: pin an existing branch, tag or commit") from e
    except LocalEntryNotFoundError as e:
        raise CheckpointError(
            f"{repo_id} ({', '.join(patterns)}) is not in the local cache and the hub cannot be reached "
            "(offline or HF_HUB_OFFLINE=1): download it on a machine with network access "
            f"(`hf download {repo_id}`) and copy the cache, or pass a local folder as the source"
        ) from e


def resolve_source(
    source: str, revision: str | None = None, tokenizer_source: str | None = None, load_unconditional: bool = True
) -> dict[str, Path]:
    """A folder or repo id -> {component: local folder}. Raises CheckpointError naming what is missing."""
    wanted = [c for c in COMPONENTS if load_unconditional or c != "unconditional_transformer"]
    if is_local(source):
        root = Path(os.path.expanduser(source))
        if not root.is_dir():
            raise CheckpointError(
                f"model folder {root} does not exist: check the source path (a folder with transformer/, text_encoder/, vae/, tokenizer/)"
            )
    else:
        root = hub_download(source, [f"{c}/*" for c in wanted], revision)
    found = {c: root / c for c in wanted if (root / c).is_dir()}
    if "tokenizer" not in found:
        if tokenizer_source:
            found["tokenizer"] = resolve_tokenizer(tokenizer_source, revision=None)
        elif not is_local(source):
            log.info("%s has no tokenizer/; using %s's, as DiffSynth-Studio does", source, DEFAULT_TOKENIZER_REPO)
            found["tokenizer"] = resolve_tokenizer(DEFAULT_TOKENIZER_REPO)
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        hint = " (pass tokenizer_source=... for a repo without one)" if missing == ["tokenizer"] else ""
        raise CheckpointError(
            f"{source} is missing {', '.join(f'{m}/' for m in missing)}: an Ideogram 4 checkpoint folder needs "
            f"{', '.join(f'{c}/' for c in REQUIRED)} (and optionally unconditional_transformer/){hint}"
        )
    return found


def resolve_tokenizer(source: str, revision: str | None = None) -> Path:
    if is_local(source):
        p = Path(os.path.expanduser(source))
        return p / "tokenizer" if (p / "tokenizer").is_dir() else p
    return hub_download(source, ["tokenizer/*"], revision) / "tokenizer"


def resolve_model_configs(model_configs: list[ModelConfig], tokenizer_config: ModelConfig | None) -> dict[str, Path]:
    """DiffSynth-style configs -> {component: local folder}. The component's whole folder is fetched (config + weights)."""
    found: dict[str, Path] = {}
    for mc in list(model_configs) + ([tokenizer_config] if tokenizer_config else []):
        component = mc.component
        if mc.path:
            p = Path(os.path.expanduser(mc.path))
            if not p.exists():
                raise CheckpointError(f"ModelConfig(path={mc.path!r}) does not exist")
            found[component] = p  # a named file is used as named; a folder is searched (weight_files)
        elif mc.model_id:
            found[component] = hub_download(mc.model_id, [f"{component}/*"], mc.revision) / component
        else:
            raise CheckpointError("a ModelConfig needs model_id + origin_file_pattern, or path")
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        raise CheckpointError(
            f"model_configs name no {', '.join(missing)}: add ModelConfig(model_id=..., origin_file_pattern='{missing[0]}/...')"
            + (
                " and tokenizer_config=ModelConfig(model_id=..., origin_file_pattern='tokenizer/')"
                if "tokenizer" in missing
                else ""
            )
        )
    return found
