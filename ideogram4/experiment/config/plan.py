"""A composed Hydra config -> a checked, typed :class:`RunPlan` (fails in well under a second).

``OmegaConf.to_object`` turns the config into the dataclass tree of ``schema.py``; the section checks
of ``checks.py`` collect every problem; this module adds only the derived values: where the weights
come from, which device, the chronological guidance schedule, the seeds and the prompts.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, ValidationError

from ideogram4 import spec
from ideogram4.arguments import draw_seed
from ideogram4.checks import ArgumentError, check_device
from ideogram4.rules import polish_problems, seed_problems, steps_problems
from ideogram4.safetensors_header import lora_file_problem
from ideogram4.sources import HUB_FILE, parse_source

from ..run.paths import abspath, file_sha256, file_sha256_cached, folder_fingerprints, original_cwd
from .checks import check_sections, lora_name
from .components import components_identity, model_configs, plan_components, variant_warnings
from .edit_plan import outpaint_sides, plan_edit
from .literal import as_typed, literal
from .problems import ConfigError, core_problem, core_problems, problem
from .prompt_plan import PromptPlan, check_token_counts, plan_prompts, tokenizer_dir_for
from .schema import ModelConf, RunConf

# Prompt text is data, never an OmegaConf interpolation: "${price}" stays "${price}".
RAW_TEXT_FIELDS = ("prompt", "negative_prompt", "prompts.negative_prompt", "prompts.items")


@dataclass
class ModelPlan:
    conf: ModelConf
    kind: str  # hub | local | tiny
    source: str  # what from_pretrained gets ("tiny" is built into its cache folder at load time)
    device: str
    # components from elsewhere: {component: {"source": hub id or absolute path, "revision": ..., "local": bool}}
    components: dict[str, dict] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.conf.name

    @property
    def dtype(self) -> str:
        return "float32" if self.conf.tiny_variants else self.conf.dtype

    def model_configs(self) -> list[dict]:
        return model_configs(self.components)

    def tiny_cache_dir(self) -> str | None:
        return abspath(self.conf.cache_dir) if self.conf.cache_dir else None

    def cache_key(self) -> str:
        """Identity of a loaded pipeline: jobs with an equal key reuse it."""
        return json.dumps({**asdict(self.conf), "kind": self.kind, "source": self.source, "device": self.device})

    def identity(self) -> dict:
        """What determines the weights (part of the resume key): not where they run."""
        c = self.conf
        ident = {"source": self.source, "revision": c.revision, "tokenizer_source": c.tokenizer_source}
        ident.update(dtype=c.dtype, load_unconditional=c.load_unconditional, fp8_mode=c.fp8_mode)
        if c.fp8_fast_accum:  # changes fp8_matmul's numbers
            ident["fp8_fast_accum"] = True
        if self.kind == "tiny":
            ident["layout"] = c.layout
        if self.kind == "local":
            ident["files"] = folder_fingerprints(self.source)
        ident.update(components_identity(self.components, c.tiny_variants))
        return ident

    def pipeline_options(self) -> dict:
        """Keyword arguments for Ideogram4Pipeline.from_pretrained (dtype as a name: no torch here)."""
        c = self.conf
        options = dict(
            device=self.device,
            revision=c.revision,
            load_unconditional=c.load_unconditional,
            fp8_mode=c.fp8_mode,
            tokenizer_source=c.tokenizer_source or None,
            offload_text_encoder=c.offload in ("text_encoder", "all"),
            offload_transformers=c.offload in ("transformers", "all"),
            vae_tiling=c.vae_tiling,
            compile_blocks=c.compile_blocks,
            fp8_fast_accum=c.fp8_fast_accum,
        )
        if c.compile_mode is not None:
            options["compile_mode"] = c.compile_mode
        return options


@dataclass
class GenPlan:
    """Everything generation uses besides prompt and seed; `settings()` is part of the resume key."""

    height: int
    width: int
    steps: int
    cfg: float
    guidance_schedule: list[float]
    mu: float
    std: float
    final_step: str
    solver: str
    rand_device: str
    negative_prompt: str  # exact string (a caption mapping serialised)
    input_image: str | None
    input_image_sha256: str | None
    denoising_strength: float
    sampler: str  # the preset's name, or "<name>+custom" when its fields were overridden
    loras: list[dict] = field(default_factory=list)  # name, source, sha256, scale, target, merge
    edit: dict | None = None  # a masked edit: kind, generate()'s edit arguments, sha256 of its files
    edit_files: dict = field(default_factory=dict)  # mask_image / strength_map -> absolute path

    def settings(self) -> dict:
        """The resume key's settings: file contents by sha256, not by path."""
        skip = ("sampler", "input_image", "edit_files") + (() if self.loras else ("loras",))
        skip += () if self.edit else ("edit",)
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def recorded_settings(self) -> dict:
        """settings() plus where the files were (manifest, PNG): a location, not part of the key."""
        out = dict(self.settings(), input_image=self.input_image)
        if self.edit:
            out["edit"] = dict(self.edit, **self.edit_files)
        return out

    def edit_arguments(self) -> dict:
        """`generate`'s edit keyword arguments (none for a run without an edit)."""
        if not self.edit:
            return {}
        return {k: v for k, v in self.edit.items() if k != "kind" and not k.endswith("_sha256")} | self.edit_files

    def lora_specs(self) -> dict[str, dict]:
        """What LoraManager.sync takes."""
        keep = ("source", "scale", "target", "merge", "weight_name", "revision")
        return {d["name"]: {k: d[k] for k in keep} for d in self.loras}


@dataclass
class RunPlan:
    conf: RunConf
    model: ModelPlan
    gen: GenPlan
    prompts: list[PromptPlan]
    seeds: list[int]
    config: dict  # the full resolved config (plain)
    warnings: list[str] = field(default_factory=list)

    def items(self) -> list[tuple[PromptPlan, int]]:
        return [(p, s) for p in self.prompts for s in self.seeds]


# --- building the plan --------------------------------------------------------------------------


def build_plan(cfg: DictConfig, *, check_tokens: bool = True) -> RunPlan:
    """Validate the composed config; raise ConfigError listing every problem."""
    conf = typed_config(cfg)
    problems = check_sections(conf)
    model, model_problems = plan_model(conf)
    problems += model_problems
    seeds, seed_problems, warnings = plan_seeds(conf.seed, conf.images_per_prompt)
    problems += seed_problems
    prompts, prompt_problems, prompt_warnings = plan_prompts(
        conf.prompt,
        conf.prompts.file,
        abspath(conf.prompts.file) if conf.prompts.file else None,
        [asdict(i) for i in conf.prompts.items],
        conf.prompts.strict,
    )
    problems += prompt_problems
    warnings += prompt_warnings
    gen, gen_problems = plan_generation(conf)
    problems += gen_problems
    gen.edit, gen.edit_files, edit_problems = plan_edit(conf, prompts)  # with the input and each caption
    problems += edit_problems
    if not problems and check_tokens:
        problems += check_token_counts(prompts, conf.prompts.max_tokens, tokenizer_dir_for(model.kind, model.source))
    if problems:
        raise ConfigError(problems, warnings)
    warnings += variant_warnings(model, gen)
    config = asdict(conf)
    return RunPlan(conf=conf, model=model, gen=gen, prompts=prompts, seeds=seeds, config=config, warnings=warnings)


def typed_config(cfg: DictConfig) -> RunConf:
    """The dataclass tree, with prompt text taken literally (no interpolation)."""
    if "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    raw = OmegaConf.to_container(cfg, resolve=False)
    texts = [(leaf, text) for path in RAW_TEXT_FIELDS for leaf, text in _interpolated_strings(_lookup(raw, path), path)]
    if texts:  # escape them in a copy; the caller's config stays as Hydra composed it
        cfg = cfg.copy()
        for leaf, text in texts:
            OmegaConf.update(cfg, leaf, literal(as_typed(text)), merge=False)
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as e:
        key = e.full_key or "?"
        hint = "model=local model.path=/path/to/folder" if key == "model.path" else f"{key}=<value>"
        raise ConfigError([problem(key, "???", "is required but not set", f"pass {hint}")]) from None
    except ValidationError as e:
        what = str(e).splitlines()[0]
        raise ConfigError([problem(e.full_key or "config", None, what, "give a value of the right type")]) from None


def _lookup(tree: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _interpolated_strings(tree: Any, path: str):
    """(dotted path, text) of every string under `tree` that OmegaConf would interpolate."""
    if isinstance(tree, str) and "${" in tree:
        yield path, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from _interpolated_strings(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _interpolated_strings(v, f"{path}.{i}")


def plan_model(conf: RunConf) -> tuple[ModelPlan, list[str]]:
    m = conf.model
    kind, source, problems = resolve_model_source(m)
    components, component_problems = plan_components(m)
    problems += component_problems
    device_field = "device" if conf.device else "model.device"
    device = conf.device or ("cpu" if m.tiny_variants else m.device)
    try:
        device = check_device("device", device, auto=True)
    except ArgumentError as e:
        problems.append(core_problem(e, device_field))
    return ModelPlan(conf=m, kind=kind, source=source, device=device, components=components), problems


def resolve_model_source(m: ModelConf) -> tuple[str, str, list[str]]:
    """(kind, source, problems): "tiny", a local folder (absolute) or a hub repo id."""
    if m.source == "tiny":
        return "tiny", "tiny", []
    if m.path is None and m.source == "local":
        fix = "pass model=local model.path=/path/to/folder (official layout: transformer/, text_encoder/, vae/, tokenizer/)"
        return "local", "", [problem("model.path", None, "is required for model=local", fix)]
    key, given = ("model.path", m.path) if m.path is not None else ("model.source", m.source)
    where = parse_source(given, base=original_cwd())
    if m.path is None and not where.is_local:
        if where.kind == HUB_FILE:
            fix = f"give the repo id ({where.repo_id}) or a local folder"
            return "hub", given, [problem(key, given, "names a file inside a hub repo", fix)]
        return "hub", where.repo_id, []
    if not where.path.is_dir():
        fix = "point it at a folder with transformer/, text_encoder/, vae/ and tokenizer/, or give a hub repo id"
        return "local", str(where.path), [problem(key, given, f"is not a folder ({where.path})", fix)]
    return "local", str(where.path), []


def plan_seeds(seed: Any, per_prompt: int) -> tuple[list[int], list[str], list[str]]:
    """(seeds, problems, warnings): an int gives seed, seed+1, ...; a list gives each; null is random."""
    per_prompt = max(per_prompt, 1)
    if seed is None:
        seeds = [draw_seed() for _ in range(per_prompt)]
        return seeds, [], [f"seed = null: using random seeds {seeds} (recorded in the manifest)"]
    ok_int = isinstance(seed, int) and not isinstance(seed, bool)
    ok_list = isinstance(seed, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seed)
    if not (ok_int or ok_list):
        fix = "use seed=0, seed=[0,1,2] (one job) or -m seed=0,1,2 (a sweep)"
        return [], [problem("seed", seed, "must be an int, a list of ints or null", fix)], []
    if ok_list and not seed:
        return (
            [],
            [problem("seed", [], "is an empty list: nothing would be made", "give at least one seed, e.g. seed=[0]")],
            [],
        )
    starts = [seed] if ok_int else seed
    wanted = [s + k for s in starts for k in range(per_prompt)]
    problems = core_problems([finding for s in wanted for finding in seed_problems("seeds", s)])
    seeds = list(dict.fromkeys(wanted))
    warnings = []
    if len(seeds) < len(wanted):
        dupes = sorted({s for s in wanted if wanted.count(s) > 1})
        warnings.append(
            f"seed: {dupes} asked for more than once (seed={seed}, images_per_prompt={per_prompt}); "
            f"making {len(seeds)} image(s) per prompt, not {len(wanted)}"
        )
    return seeds, problems, warnings


def plan_generation(conf: RunConf) -> tuple[GenPlan, list[str]]:
    s, problems = conf.sampler, []
    if s.guidance_schedule is not None:
        schedule = [float(w) for w in s.guidance_schedule]
    elif not (steps_problems(s.steps) or polish_problems(s.polish_steps, s.steps)):
        schedule = spec.official_guidance_schedule(s.steps, conf.cfg, s.polish_steps, s.polish_cfg)
    else:
        schedule = []  # check_sampler reported why
    input_image, digest = None, None
    if conf.input_image is not None:
        input_image = abspath(conf.input_image)
        if os.path.isfile(input_image):  # hashed only once its header says it is a usable image
            outpaint = outpaint_sides(conf) is not None  # then the input is smaller than the output
            problems += input_image_problems(
                conf.input_image, input_image, conf.resolution.height, conf.resolution.width, outpaint
            )
            digest = None if problems else file_sha256(input_image)
        else:
            problems.append(
                problem("input_image", conf.input_image, f"no such file ({input_image})", "give an existing image file")
            )
    negative = conf.negative_prompt if conf.negative_prompt is not None else conf.prompts.negative_prompt
    loras = plan_loras(conf)
    gen = GenPlan(
        height=conf.resolution.height,
        width=conf.resolution.width,
        steps=s.steps,
        cfg=float(conf.cfg),
        guidance_schedule=schedule,
        mu=float(s.mu),
        std=float(s.std),
        final_step=s.final_step,
        solver=s.solver,
        rand_device=s.rand_device,
        negative_prompt=_serialized(negative),
        input_image=input_image,
        input_image_sha256=digest,
        denoising_strength=float(conf.denoising_strength),
        sampler=sampler_label(s),
        loras=loras,
    )
    return gen, problems


def input_image_problems(given: str, path: str, height: int, width: int, any_size: bool = False) -> list[str]:
    from ideogram4.image_files import ImageFileError, opened_image

    try:
        with opened_image(path) as im:
            size = im.size
            im.verify()
    except ImageFileError as e:
        return [problem("input_image", given, str(e), "give a PNG/JPEG/WebP file")]
    except (OSError, SyntaxError) as e:
        return [problem("input_image", given, f"is not a readable image ({e})", "give a PNG/JPEG/WebP file")]
    if size != (width, height) and not any_size:
        what = f"is {size[0]}x{size[1]} but the output is {width}x{height}"
        fix = f"resize it, or set resolution.width={size[0]} resolution.height={size[1]}"
        return [problem("input_image", given, what, fix)]
    return []


def plan_loras(conf: RunConf) -> list[dict]:
    """Each LoRA with its file's identity (sha256 for a local file; repo/file/revision on the hub)."""
    out = []
    for lora in conf.lora:
        where = parse_source(lora.path, base=original_cwd())
        local = where.is_local and where.path.is_file() and lora_file_problem(where.path) is None  # else reported
        source = str(where) if where.is_local else lora.path
        out.append(
            {
                "name": lora_name(lora),
                "source": source,
                "sha256": file_sha256_cached(source) if local else None,
                "scale": float(lora.scale),
                "target": lora.target,
                "merge": lora.merge,
                "weight_name": lora.weight_name,
                "revision": lora.revision,
            }
        )
    return out


def _serialized(negative: Any) -> str:
    from ideogram4.prompts import serialize_caption

    return serialize_caption(negative) if negative else ""


def sampler_label(s) -> str:
    """The preset name when the fields are the preset's, else "<name>+custom": record what ran."""
    p = spec.PRESETS.get(s.name)
    same = (
        p is not None
        and s.guidance_schedule is None
        and (s.steps, s.polish_steps, s.polish_cfg, s.mu, s.std, s.final_step)
        == (p.steps, p.polish_steps, p.polish_cfg, p.mu, p.std, p.final_step)
    )
    return s.name if same else f"{s.name}+custom"
