"""Where the weights are: a hub repo id, a local folder, or DiffSynth-style `ModelConfig`s -> local paths.

Sources: a hub repo id (`ideogram-ai/ideogram-4-fp8`, `ideogram-ai/ideogram-4-nf4`,
`DiffSynth-Studio/ideogram-4-bf16-repackage`, a diffusers-layout repo), a local folder in either
layout, or `ModelConfig`s naming single files or folders. Nothing here reads a tensor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from ..sources import HUB_FILE, hub_folder, parse_source

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


def resolve_source(
    source: str, revision: str | None = None, tokenizer_source: str | None = None, load_unconditional: bool = True
) -> dict[str, Path]:
    """A folder or repo id -> {component: local folder}. Raises CheckpointError naming what is missing."""
    wanted = [c for c in COMPONENTS if load_unconditional or c != "unconditional_transformer"]
    where = parse_source(source)
    if where.kind == HUB_FILE:
        raise CheckpointError(
            f"model source {source!r} names a file inside a hub repo: give the repo id ({where.repo_id}) "
            "or a local folder"
        )
    if where.is_local:
        root = where.path
        if not root.is_dir():
            raise CheckpointError(
                f"model folder {root} does not exist: check the source path (a folder with transformer/, text_encoder/, vae/, tokenizer/)"
            )
    else:
        root = hub_folder(where.repo_id, [f"{c}/*" for c in wanted], revision)
    found = {c: root / c for c in wanted if (root / c).is_dir()}
    if "tokenizer" not in found:
        if tokenizer_source:
            found["tokenizer"] = resolve_tokenizer(tokenizer_source, revision=None)
        elif not where.is_local:
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
    where = parse_source(source)
    if where.is_local:
        return where.path / "tokenizer" if (where.path / "tokenizer").is_dir() else where.path
    return hub_folder(where.repo_id, ["tokenizer/*"], revision) / "tokenizer"


def resolve_model_configs(model_configs: list[ModelConfig], tokenizer_config: ModelConfig | None) -> dict[str, Path]:
    """DiffSynth-style configs -> {component: local folder}. The component's whole folder is fetched (config + weights)."""
    found: dict[str, Path] = {}
    for mc in list(model_configs) + ([tokenizer_config] if tokenizer_config else []):
        component = mc.component
        if mc.path:
            p = parse_source(mc.path).path
            if p is None or not p.exists():
                raise CheckpointError(f"ModelConfig(path={mc.path!r}) does not exist")
            found[component] = p  # a named file is used as named; a folder is searched (weight_files)
        elif mc.model_id:
            found[component] = hub_folder(mc.model_id, [f"{component}/*"], mc.revision) / component
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
