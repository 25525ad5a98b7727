"""A PNG's embedded settings -> the run config that remakes exactly that image.

The ``ideogram4:config`` chunk is the whole resolved config of the job that made the image (a sweep
job's overrides included); ``ideogram4:settings`` names the one image of that job (prompt id, seed,
absolute paths) and ``ideogram4:caption`` holds the exact string the text encoder read. The rebuilt
config runs that caption verbatim as a one-prompt set, so neither the prompt file nor the working
folder of the original run is needed; the user's overrides go on top.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ideogram4.spec import PNG_CAPTION_KEY, PNG_CONFIG_KEY, PNG_PROVENANCE_KEY, PNG_SETTINGS_KEY

from ..config.schema import RunConf, register_configs

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
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
        return self.record.get("settings") or {}


def read_embedded(path: str | Path) -> Embedded:
    """Pixels and metadata of a runner PNG; ReproduceError (one line) for anything else."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ReproduceError(f"{path}: no such file. Fix: give the path of a PNG made by run.py")
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()  # chunk checksums: a flipped byte or a cut file fails here
        with Image.open(path) as im:
            im.load()
            text = dict(getattr(im, "text", {}) or {})
            pixels = np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        raise ReproduceError(f"{path} is not an image. Fix: give a PNG made by run.py") from None
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
    return Embedded(path, pixels, text[PNG_CAPTION_KEY], record, config, provenance)


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


def reproduction_config(emb: Embedded, overrides: dict[str, Any]) -> tuple[DictConfig, list[str]]:
    """(config, ignored): the PNG's job config pinned to its one image, with `overrides` on top.

    `ignored` says which recorded keys this runner no longer knows (each a possible cause of other pixels)."""
    ignored: list[str] = []
    base = OmegaConf.structured(RunConf)
    data = known_keys(base, emb.config, "", ignored)
    for key, value in {**pins(emb), **overrides}.items():
        set_path(data, key, value)
    try:
        cfg = OmegaConf.merge(base, data)
    except OmegaConfBaseException as e:
        what = str(e).splitlines()[0]
        raise ReproduceError(f"{emb.path}: its config does not fit this runner's schema ({what})") from None
    return cfg, ignored


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
    rec, s = emb.record, emb.settings
    model = rec.get("model") or {}
    out: dict[str, Any] = {
        "prompt": None,
        "prompts.file": None,
        "prompts.items": [{"id": rec.get("prompt_id", "image"), "prompt": emb.caption}],
        "seed": rec.get("seed"),
        "images_per_prompt": 1,
        "batch_size": 1,
        "negative_prompt": s.get("negative_prompt", ""),
        "input_image": s.get("input_image"),  # absolute: the original's working folder is not needed
        "metrics": [],  # scoring is not part of the pixels
        "tracker.name": "none",
        "tracker.mode": "disabled",
        "reproduce": None,
        "reproduce_strict": False,
    }
    for key in ("mask_image", "strength_map"):  # absolute too, matched by sha256 (check_input_files)
        if (s.get("edit") or {}).get(key):
            out[key] = s["edit"][key]
    if model.get("kind") == "local" and model.get("source"):
        out["model.path"] = model["source"]  # absolute, where the config may hold a relative path
    fields = ("name", "scale", "target", "merge", "weight_name", "revision")  # the path: absolute, as recorded
    out["lora"] = [{"path": x["source"], **{k: x.get(k) for k in fields}} for x in s.get("loras") or []]
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
