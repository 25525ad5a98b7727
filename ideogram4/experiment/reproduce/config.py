"""A PNG's embedded settings -> the run config that remakes exactly that image.

The ``ideogram4:config`` chunk is the whole resolved config of the job that made the image (a sweep
job's overrides included); ``ideogram4:settings`` names the one image of that job (prompt id, seed,
absolute paths) and ``ideogram4:caption`` holds the exact string the text encoder read. The rebuilt
config runs that caption verbatim as a one-prompt set, so neither the prompt file nor the working
folder of the original run is needed; the user's overrides go on top.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ideogram4.image_files import ImageFileError, opened_image
from ideogram4.spec import PNG_CAPTION_KEY, PNG_CONFIG_KEY, PNG_PROVENANCE_KEY, PNG_SETTINGS_KEY

from ..config.literal import literal, literal_tree
from ..config.schema import RunConf, register_configs


def conf_dir() -> Path:
    """The runner's Hydra config folder, found as package data: it ships in the wheel as
    ideogram4/experiment/conf (in a source checkout that is a link to the top-level conf/)."""
    return Path(str(importlib.resources.files("ideogram4.experiment") / "conf"))


CONF_DIR = conf_dir()

# keys of the reproduce command itself, never carried into the regenerated run
OWN_KEYS = ("reproduce", "reproduce_strict")


class ReproduceError(ValueError):
    """The PNG or the reproduction request cannot be used; the message says why and what to do."""


@dataclass
class Embedded:
    """What one PNG carries: its pixels and the metadata the runner wrote into it."""

    path: Path
    pixels: Any  # (H, W, 3) uint8 numpy array
    caption: str
    record: dict  # the ideogram4:settings chunk (prompt_id, seed, settings, model, ...)
    config: dict  # the ideogram4:config chunk (the job's full resolved config)
    provenance: dict | None  # the ideogram4:provenance chunk (None: an image made before it existed)

    @property
    def settings(self) -> dict:
        return _mapping(self, "settings", self.record.get("settings") or {})


def read_embedded(path: str | Path) -> Embedded:
    """Pixels and metadata of a runner PNG; ReproduceError (one line) for anything else."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ReproduceError(f"{path}: no such file. Fix: give the path of a PNG made by run.py")
    try:
        with opened_image(path) as im:  # the pixel limit, before a byte is decoded
            fmt = im.format
            im.verify()  # chunk checksums: a flipped byte or a cut file fails here
        with opened_image(path) as im:
            im.load()
            text = dict(getattr(im, "text", {}) or {})
            pixels = np.asarray(im.convert("RGB"))
    except ImageFileError as e:
        raise ReproduceError(str(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        what = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ReproduceError(
            f"{path} is damaged or truncated ({what}). Fix: use an intact copy of the image "
            "(reproduction compares against its pixels)"
        ) from None
    if fmt != "PNG":
        raise ReproduceError(f"{path} is a {fmt}, not a PNG: only run.py's PNGs carry their settings")
    missing = [k for k in (PNG_CONFIG_KEY, PNG_SETTINGS_KEY, PNG_CAPTION_KEY) if k not in text]
    if missing:
        raise ReproduceError(
            f"{path} has no Ideogram 4 runner metadata (no {', '.join(repr(k) for k in missing)} text chunk): "
            "it was not made by run.py, or an editor or upload stripped its metadata. Fix: use the PNG as "
            "run.py wrote it (its job folder's images/)"
        )
    record, config = _json_chunk(path, text, PNG_SETTINGS_KEY), _json_chunk(path, text, PNG_CONFIG_KEY)
    provenance = _json_chunk(path, text, PNG_PROVENANCE_KEY) if PNG_PROVENANCE_KEY in text else None
    return Embedded(path, pixels, str(text[PNG_CAPTION_KEY]), record, config, provenance)  # iTXt: a str subclass


def _json_chunk(path: Path, text: dict, key: str) -> dict:
    try:
        value = json.loads(text[key])
    except json.JSONDecodeError as e:
        raise ReproduceError(
            f"{path}: its {key!r} text chunk is not valid JSON ({e}): the metadata is damaged"
        ) from None
    if not isinstance(value, dict):
        raise ReproduceError(f"{path}: its {key!r} text chunk is not a JSON object: the metadata is damaged")
    return value


# --- the config ------------------------------------------------------------------------------------

# What a PNG may set: the keys that decide the pixels. Anything naming a file, folder, host or tracker
# (model path/source/cache_dir, LoRA and input paths, tracker, output, metrics) comes from the user's
# own config and command line; every string taken is escaped, so nothing in a PNG is interpolated.
PIXEL_KEYS: dict[str, tuple[str, ...] | None] = {
    "model": (
        "name",
        "revision",
        "dtype",
        "device",
        "load_unconditional",
        "fp8_mode",
        "fp8_fast_accum",
        "offload",
        "vae_tiling",
        "compile_blocks",
        "compile_mode",
        "layout",
        "tiny_variants",
    ),
    "sampler": None,  # None: the whole section
    "resolution": None,
    "prompts": ("negative_prompt", "max_tokens"),
    "cfg": None,
    "seed": None,
    "device": None,
    "negative_prompt": None,
    "denoising_strength": None,
    "deterministic": None,
    "outpaint": None,  # masked edits: everything but the mask and strength-map files (matched by sha256)
    "edit_elements": None,
    "mask_blur": None,
    "paste_back": None,
    "edit_margin": None,
}
LORA_PIXEL_KEYS = ("scale", "target", "merge")
# keys that name a place: a PNG's value is named when it is not used, never followed
PLACE_KEYS = ("model.cache_dir", "model.path", "model.tokenizer_source", "tracker.dir", "prompts.upsample_head")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass
class Taken:
    """The config a reproduction runs, and what it says about the PNG's own config."""

    config: DictConfig
    differences: list[str]  # recorded keys this runner does not know (each a possible cause of other pixels)
    notes: list[str]  # recorded places not followed


def reproduction_config(emb: Embedded, overrides: dict[str, Any]) -> Taken:
    """The PNG's pixel settings pinned to its one image, on this runner's defaults, `overrides` on top."""
    unknown: list[str] = []
    base = OmegaConf.structured(RunConf)
    known = known_keys(base, emb.config, "", unknown)
    data = pixel_settings(emb, known, overrides)
    for key, value in {**pins(emb), **overrides}.items():
        set_path(data, key, value)
    try:
        cfg = OmegaConf.merge(base, data)
    except OmegaConfBaseException as e:
        what = str(e).splitlines()[0]
        raise ReproduceError(f"{emb.path}: its config does not fit this runner's schema ({what})") from None
    notes = [
        f"{key} = {_shown(_get(known, key))} in the PNG is not used (a place: taken from your config, now "
        f"{_shown(OmegaConf.select(cfg, key))})"
        for key in PLACE_KEYS
        if _get(known, key) is not None and _get(known, key) != OmegaConf.select(cfg, key)
    ]
    return Taken(cfg, unknown, notes)


def pixel_settings(emb: Embedded, known: dict, overrides: dict[str, Any]) -> dict:
    """The PNG config's PIXEL_KEYS (escaped), the model's places from its conf/model/ file, LoRA settings."""
    data: dict[str, Any] = {}
    for key, fields in PIXEL_KEYS.items():
        if key not in known:
            continue
        value = known[key]
        if fields is not None:
            value = {k: v for k, v in _mapping(emb, key, value).items() if k in fields}
        data[key] = literal_tree(value)
    data["model"] = {**model_places(emb, known, overrides), **data.get("model", {})}
    data["lora"] = lora_settings(emb, overrides)
    return data


def model_places(emb: Embedded, known: dict, overrides: dict[str, Any]) -> dict:
    """Where the weights come from: the recorded model's conf/model/<name>.yaml (or the user's choice)."""
    recorded = _mapping(emb, "model", known.get("model") or {})
    if "model" in overrides:
        return {}
    name = recorded.get("name")
    conf = CONF_DIR / "model" / f"{name}.yaml"
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or not conf.is_file():
        names = ", ".join(sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")))
        raise ReproduceError(
            f"{emb.path} was made with model {_shown(name)}, which this runner does not have. "
            f"Fix: pass model=<{names}> (the weight fingerprints are compared)"
        )
    node = OmegaConf.to_container(OmegaConf.load(conf), resolve=False)
    if isinstance(node.get("model"), dict):  # a global-package file (fal_*: it also picks a sampler)
        node = node["model"]
    local = recorded.get("path") or (recorded.get("source") if node.get("source") == "local" else None)
    if local and not any(k in overrides for k in ("model.path", "model.source")):
        raise ReproduceError(
            f"{emb.path} was made with local weights ({_shown(local)}); a reproduction never reads a path "
            "from a PNG. Fix: pass model.path=/folder/with/those/weights (their fingerprints are compared)"
        )
    return node


def lora_settings(emb: Embedded, overrides: dict[str, Any]) -> list:
    """The user's `lora=[...]` list (its files matched by sha256); without one, each recorded LoRA is named."""
    recorded = [lo for lo in _list(emb, "settings.loras", emb.settings.get("loras")) if isinstance(lo, dict)]
    if "lora" in overrides or not recorded:
        return []  # the user's list goes on top (set_path); scale/target/merge differences are named
    entries = []
    for lo in recorded:
        name = str(lo.get("name"))
        if not _SAFE_NAME.fullmatch(name):
            raise ReproduceError(f"{emb.path}: its settings name a LoRA {_shown(name)}: the metadata is damaged")
        settings = ",".join(f"{k}:{json.dumps(lo.get(k))}" for k in LORA_PIXEL_KEYS if k in lo)
        entries.append(f"{{path:/path/to/{name}.safetensors,name:{name},{settings}}}")
    first = recorded[0]
    raise ReproduceError(
        f"{emb.path} was made with LoRA {first.get('name')} (sha256 {str(first.get('sha256'))[:12]}..., then at "
        f"{_shown(first.get('source'))}); a reproduction never reads a LoRA from a path in the PNG. "
        f"Fix: pass 'lora=[{','.join(entries)}]' (each file is matched by its sha256)"
    )


def _mapping(emb: Embedded, key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ReproduceError(
            f"{emb.path}: its recorded {key} is a {type(value).__name__}, not a mapping: the "
            "metadata is damaged. Fix: use the PNG as run.py wrote it"
        )
    return value


def _list(emb: Embedded, key: str, value: Any) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ReproduceError(
            f"{emb.path}: its recorded {key} is a {type(value).__name__}, not a list: the "
            "metadata is damaged. Fix: use the PNG as run.py wrote it"
        )
    return value


def _get(tree: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def known_keys(schema: Any, data: Any, prefix: str, notes: list[str]) -> Any:
    """`data` without the keys this runner's schema no longer has (each one noted)."""
    if not (isinstance(data, dict) and OmegaConf.is_dict(schema) and OmegaConf.is_config(schema)):
        return data
    structured = OmegaConf.get_type(schema) not in (dict, None)
    out = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if structured and key not in schema:
            shown = json.dumps(value, default=str)[:60]
            notes.append(f"config key {where} = {shown} is unknown to this runner: ignored")
            continue
        out[key] = known_keys(schema[key], value, f"{where}.", notes) if key in schema else value
    return out


def set_path(data: dict, dotted: str, value: Any) -> None:
    """data["a"]["b"] = value for "a.b" (a group override replaces the whole node, as Hydra does)."""
    *parents, leaf = dotted.split(".")
    for key in parents:
        if not isinstance(data.get(key), dict):
            data[key] = {}
        data = data[key]
    data[leaf] = value


def pins(emb: Embedded) -> dict[str, Any]:
    """Config values that make the job exactly this image, whatever folder the command runs in."""
    rec = emb.record
    pid = rec.get("prompt_id", "image")
    out: dict[str, Any] = {
        "prompt": None,
        "prompts.file": None,
        "prompts.items": [{"id": literal(str(pid)), "prompt": literal(emb.caption)}],
        "seed": rec.get("seed"),
        "images_per_prompt": 1,
        "batch_size": 1,
        "negative_prompt": literal_tree(emb.settings.get("negative_prompt", "")),
        "metrics": [],  # scoring is not part of the pixels
        "tracker.name": "none",
        "tracker.mode": "disabled",
        "reproduce": None,
        "reproduce_strict": False,
    }
    if rec.get("upsampled_from"):
        out["prompts.upsample"] = False  # the recorded caption is used verbatim: no second upsampling
    return out


# --- the user's overrides -------------------------------------------------------------------------


def override_values(composed: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """{key: value} for each override, read from `composed` (Hydra already applied it there).

    A group override (``model=local``) gives the whole group node, as Hydra composes it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = {}
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.key_or_group
        if key in OWN_KEYS or key.startswith("hydra") or o.is_delete():
            continue
        if o.is_sweep_override():
            raise ReproduceError(f"{o.input_line}: a reproduction makes one image. Fix: give a single value")
        value = OmegaConf.select(composed, key, throw_on_missing=False)
        out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return out


def compose_overrides(overrides: list[str]) -> dict[str, Any]:
    """Hydra-compose conf/ with `overrides` (groups, types and typos checked as run.py does)."""
    if not overrides:
        return {}
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            composed = compose(config_name="config", overrides=list(overrides))
        return override_values(composed, list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ReproduceError(f"overrides {' '.join(overrides)}: {str(e).splitlines()[0]}") from None
    finally:
        GlobalHydra.instance().clear()


def check_input_files(emb: Embedded, cfg, abspath) -> None:
    """An img2img or masked edit is only reproduced from the same files (input, mask: same sha256)."""
    edit = emb.settings.get("edit") or {}
    for key, want, recorded in (
        ("input_image", emb.settings.get("input_image_sha256"), emb.settings.get("input_image")),
        ("mask_image", edit.get("mask_image_sha256"), edit.get("mask_image")),
        ("strength_map", edit.get("strength_map_sha256"), edit.get("strength_map")),
    ):
        if want:
            check_file(emb, key, want, recorded or "(path not recorded)", getattr(cfg, key), abspath)


def check_file(emb: Embedded, key: str, want: str, recorded: str, given: str | None, abspath) -> None:
    from ..config.plan import file_sha256

    fix = f"Fix: pass {key}=/path/to/that/image"
    made = f"{emb.path} was made from the {key.replace('_', ' ')} {recorded} (sha256 {want[:12]}...)"
    if given is None:
        raise ReproduceError(f"{made}. {fix}")
    path = abspath(given)
    if not os.path.isfile(path):
        raise ReproduceError(f"{made}, and {path} does not exist. {fix}")
    got = file_sha256(path)
    if got != want:
        raise ReproduceError(
            f"{key.replace('_', ' ')} {path} is not the one {emb.path.name} was made from: sha256 {got[:12]}... "
            f"now, {want[:12]}... then ({recorded}). {fix}"
        )
