"""Per-component sources and the distilled-variant guard, as the runner plans them (no torch here).

`model.<component>.source` names where one component comes from when not from `model.source`: a hub
repo id, a local checkpoint folder, the component's own folder or one file. The guard
(`ideogram4.variants`) is worded here in config keys.
"""

from __future__ import annotations

import json

from ideogram4 import spec
from ideogram4.sources import HUB_FILE, parse_source
from ideogram4.spec import COMPONENTS

from ..run.paths import folder_fingerprints, original_cwd
from .problems import API_TO_CONFIG, problem
from .schema import ModelConf


def plan_components(m: ModelConf) -> tuple[dict[str, dict], list[str]]:
    """The components whose source is not `model.source` (ideogram4.sources decides local or hub); a
    local one must exist."""
    out, problems = {}, []
    for component in COMPONENTS:
        c = getattr(m, component)
        if c.source is None and c.revision is None:
            continue
        text = c.source if c.source is not None else m.path or m.source
        where = parse_source(text, base=original_cwd())
        if where.kind == HUB_FILE:
            fix = f"give the repo id ({where.repo_id}) or a local path"
            problems.append(problem(f"model.{component}.source", text, "names a file inside a hub repo", fix))
        elif where.is_local and not where.exists:
            fix = "give an existing folder or .safetensors file, or a hub repo id such as fal/ideogram-v4-instant"
            what = f"no such file or folder ({where.path})"
            problems.append(problem(f"model.{component}.source", text, what, fix))
        local = where.is_local
        out[component] = {"source": str(where) if local else where.repo_id, "revision": c.revision, "local": local}
    variant = spec.variant_for(m.source)
    if variant and spec.VARIANTS[variant].kind == "transformer" and not m.tiny_variants:
        what = "is a transformer-only repo: it has no text encoder, VAE or tokenizer"
        problems.append(
            problem("model.source", m.source, what, f"use model={variant} (its transformer over a base release)")
        )
    return out, problems


def model_side_range(m: ModelConf) -> tuple[int, int]:
    """The image sides the model's DiT supports, read as the loader reads them (`spec.side_range` of the DiT's
    config.json, `Ideogram4Config.side_range` once loaded), before any weights load: the tiny build's declared
    range; a local DiT's config.json; else the released range (the hub releases' configs carry none)."""
    if m.source == "tiny" or m.tiny_variants:
        return spec.side_range({"min_side": spec.TINY_MIN_SIDE})  # what ideogram4.tiny writes in config.json
    where = parse_source(m.transformer.source or m.path or m.source, base=original_cwd())
    if where.is_local:
        folder = where.path.parent if where.path.is_file() else where.path
        for config in (folder / "transformer" / "config.json", folder / "config.json"):
            try:
                return spec.side_range(json.loads(config.read_text()))
            except (OSError, ValueError, AttributeError):
                continue  # no such file, or not a config: the loader says what is wrong with the folder
    return spec.side_range({})


def model_configs(components: dict[str, dict]) -> list[dict]:
    """from_pretrained's ModelConfig fields for each component from elsewhere (plain dicts: no torch here)."""
    out = []
    for component, c in components.items():
        where = {"path": c["source"]} if c["local"] else {"model_id": c["source"], "revision": c["revision"]}
        out.append(dict(where, component=component))
    return out


def components_identity(components: dict[str, dict], tiny_variants: bool) -> dict:
    """What the components from elsewhere add to the weights' identity (the resume key): a local
    one's files by fingerprint; the tiny stand-ins are other weights than the hub sources they replace."""
    ident = {}
    if components:
        fingerprinted = {
            k: dict(c, files=folder_fingerprints(c["source"])) if c["local"] else c for k, c in components.items()
        }
        ident["components"] = fingerprinted
    if tiny_variants:
        ident["tiny_variants"] = True
    return ident


def config_value(value) -> str:
    """A value as written in an override: true/false, 1.0, '' for an empty string."""
    return str(value).lower() if isinstance(value, bool) else repr(value) if value == "" else str(value)


def variant_warnings(model, gen) -> list[str]:
    """What this run does that a distilled variant's card warns against (transformer or LoRA variant)."""
    from ideogram4.variants import card_warnings

    sources = [model.components.get("transformer", {}).get("source"), *(d["source"] for d in gen.loras)]
    lines = []
    for variant in dict.fromkeys(v for v in map(spec.variant_for, sources) if v):
        for w in card_warnings(variant, gen.guidance_schedule, model.conf.load_unconditional, gen.negative_prompt):
            fix = ", ".join(f"{API_TO_CONFIG[k]}={config_value(v)}" for k, v in w.fix)
            lines.append(f"{variant}: {w.what}. The card's setting: {fix} (sampler={w.preset}); the run goes on")
        if spec.VARIANTS[variant].note:
            lines.append(f"{variant}: {spec.VARIANTS[variant].note}")
    return lines
