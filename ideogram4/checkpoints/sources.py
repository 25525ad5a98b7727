"""Where the weights are: a hub repo id, a local folder, or DiffSynth-style `ModelConfig`s -> local paths.

Sources: a hub repo id (`ideogram-ai/ideogram-4-fp8`, `ideogram-ai/ideogram-4-nf4`,
`DiffSynth-Studio/ideogram-4-bf16-repackage`, a diffusers-layout repo), a local folder in either
layout, or `ModelConfig`s naming single files or folders. A source and `ModelConfig`s together: each
config replaces its component, the source gives the rest (a transformer-only repo such as
`fal/ideogram-v4-instant` over a base release), and nothing is fetched for a replaced component.
Nothing here reads a tensor; whether a text is a path or a hub id is `ideogram4.sources`' rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from ..sources import HUB_FILE, hub_folder, parse_source
from ..spec import COMPONENTS

log = logging.getLogger(__name__)

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
    # which component this is; None: the folder named in origin_file_pattern / path (DiffSynth's rule)
    component: str | None = None

    def component_name(self) -> str:
        if self.component is not None:
            if self.component not in COMPONENTS:
                raise CheckpointError(f"ModelConfig(component={self.component!r}): use one of {', '.join(COMPONENTS)}")
            return self.component
        ref = (self.origin_file_pattern or self.path or "").replace("\\", "/").strip("/")
        parts = ref.split("/")
        for part in reversed(parts[:-1] if len(parts) > 1 and "." in parts[-1] else parts):
            if part in COMPONENTS:
                return part
        raise CheckpointError(
            f"cannot tell which component {ref!r} is: the path must contain one of the folders {', '.join(COMPONENTS)} "
            "(e.g. origin_file_pattern='transformer/diffusion_pytorch_model.safetensors'), or pass component=..."
        )

    def repo_folder(self) -> str:
        """The folder of the repo that holds the component: the pattern's folder, else the component's name."""
        pattern = (self.origin_file_pattern or "").replace("\\", "/").strip("/")
        parts = pattern.split("/") if pattern else []
        if parts and "." in parts[-1]:
            parts = parts[:-1]
        return "/".join(parts) or self.component_name()


def resolve_source(
    source: str,
    revision: str | None = None,
    tokenizer_source: str | None = None,
    load_unconditional: bool = True,
    elsewhere: tuple[str, ...] = (),
) -> dict[str, Path]:
    """A folder or repo id -> {component: local folder}. Raises CheckpointError naming what is missing.

    `elsewhere`: components another source provides; they are neither fetched nor required here."""
    wanted = [c for c in COMPONENTS if (load_unconditional or c != "unconditional_transformer") and c not in elsewhere]
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
    if "tokenizer" not in found and "tokenizer" not in elsewhere:
        if tokenizer_source:
            found["tokenizer"] = resolve_tokenizer(tokenizer_source, revision=None)
        elif not where.is_local:
            log.info("%s has no tokenizer/; using %s's, as DiffSynth-Studio does", source, DEFAULT_TOKENIZER_REPO)
            found["tokenizer"] = resolve_tokenizer(DEFAULT_TOKENIZER_REPO)
    missing = [c for c in REQUIRED if c not in found and c not in elsewhere]
    if missing:
        hint = " (pass tokenizer_source=... for a repo without one)" if missing == ["tokenizer"] else ""
        raise CheckpointError(
            f"{source} is missing {', '.join(f'{m}/' for m in missing)}: an Ideogram 4 checkpoint folder needs "
            f"{', '.join(f'{c}/' for c in REQUIRED)} (and optionally unconditional_transformer/){hint}"
        )
    return found


def resolve_tokenizer(source: str, revision: str | None = None) -> Path:
    where = parse_source(source)
    config = ModelConfig(path=source) if where.is_local else ModelConfig(model_id=where.repo_id, revision=revision)
    return resolve_component(config, "tokenizer")


def resolve_component(mc: ModelConfig, component: str) -> Path:
    """One component's local file or folder. A local folder that holds a `<component>/` folder (a
    checkpoint folder) means that folder; any other folder or file is the component's own."""
    if mc.path:
        p = parse_source(mc.path).path
        if p is None or not p.exists():
            raise CheckpointError(f"ModelConfig(path={mc.path!r}) does not exist")
        return p / component if (p / component).is_dir() else p  # a named file is used as named
    if mc.model_id:
        folder = mc.repo_folder() if mc.origin_file_pattern else component
        return hub_folder(mc.model_id, [f"{folder}/*"], mc.revision) / folder
    raise CheckpointError("a ModelConfig needs model_id + origin_file_pattern, or path")


def resolve_model_configs(
    model_configs: list[ModelConfig], tokenizer_config: ModelConfig | None, required: tuple[str, ...] = REQUIRED
) -> dict[str, Path]:
    """DiffSynth-style configs -> {component: local folder}. The component's whole folder is fetched (config + weights)."""
    found: dict[str, Path] = {}
    for mc in list(model_configs) + ([tokenizer_config] if tokenizer_config else []):
        component = mc.component_name()
        found[component] = resolve_component(mc, component)
    missing = [c for c in required if c not in found]
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
