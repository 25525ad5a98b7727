"""Config checks: one small function per config section, each returning a list of problems.

A problem reads ``field = value: what is wrong. Fix: what to do`` and all of them are collected into
one :class:`ConfigError`, so a researcher learns about every mistake at once, in seconds, before any
weights load. The allowed values come from ``ideogram4.spec`` (the core rejects the same names), so
validation accepts nothing the pipeline would refuse later. No torch, no transformers here.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from ideogram4 import spec
from ideogram4.errors import ArgumentError, NoGpu
from ideogram4.safetensors_header import lora_file_problem
from ideogram4.sources import parse_source

from ..run.paths import original_cwd
from .schema import LoraConf, ModelConf, OutputConf, PromptsConf, ResolutionConf, RunConf, SamplerConf, TrackerConf

TRACKERS = ("wandb", "none")

# The one table from the core's argument names (`ideogram4.checks`, the Python API) to config keys.
API_TO_CONFIG = {
    "height": "resolution.height",
    "width": "resolution.width",
    "num_inference_steps": "sampler.steps",
    "cfg_scale": "cfg",
    "guidance_schedule": "sampler.guidance_schedule",
    "mu": "sampler.mu",
    "std": "sampler.std",
    "final_step": "sampler.final_step",
    "rand_device": "sampler.rand_device",
    "seeds": "seed",
    "torch_dtype": "model.dtype",
    "fp8_mode": "model.fp8_mode",
    "compile_mode": "model.compile_mode",
    "device": "device",
}


class ConfigError(ValueError):
    """One or more problems in the run configuration, each naming the field, the value and the fix."""

    def __init__(self, problems: list[str], warnings: list[str] = ()):
        self.problems, self.warnings = list(problems), list(warnings)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        also = "".join(f"\n  warning: {w}" for w in self.warnings)
        super().__init__(f"{len(self.problems)} problem(s) in the run configuration:\n{lines}{also}")


def problem(field_name: str, value: Any, what: str, fix: str) -> str:
    return f"{field_name} = {_show(value)}: {what}. Fix: {fix}"


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def one_of(field_name: str, value: Any, allowed: tuple, what: str = "is not a known option") -> list[str]:
    return [] if value in allowed else [problem(field_name, value, what, f"use one of {', '.join(allowed)}")]


def finite(field_name: str, value: Any) -> list[str]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return []
    return [problem(field_name, value, "must be a finite number", f"give a number such as {field_name}=7")]


def core_problems(check, *args, **kwargs) -> list[str]:
    """Run one of the core's rules (`ideogram4.checks`); its ArgumentError as a problem in config keys."""
    try:
        check(*args, **kwargs)
    except ArgumentError as e:
        return [core_problem(e)]
    return []


def core_problem(e: ArgumentError, field_name: str | None = None) -> str:
    """The core's finding in this runner's words: its argument named by its config key."""
    key = field_name or API_TO_CONFIG.get(e.name, e.name)
    fix = e.fix.replace(f"{e.name}=", f"{key}=")
    if isinstance(e, NoGpu):
        fix = "run on a GPU machine, or try the runner on CPU with `model=tiny device=cpu`"
    return problem(key, e.value, e.what, fix)


# --- per section ------------------------------------------------------------------------------------


def check_model(m: ModelConf) -> list[str]:
    out = one_of("model.dtype", m.dtype, spec.DTYPES, "is not a supported dtype")
    out += one_of("model.fp8_mode", m.fp8_mode, spec.FP8_MODES, "is not an fp8 mode")
    out += one_of("model.offload", m.offload, spec.OFFLOAD_MODES, "is not an offload mode")
    out += one_of("model.layout", m.layout, spec.CHECKPOINT_LAYOUTS, "is not a checkpoint layout")
    if m.compile_mode is not None:
        out += one_of("model.compile_mode", m.compile_mode, spec.COMPILE_MODES, "is not a torch.compile mode")
    if not 16 <= m.min_side <= m.max_side:
        out.append(problem("model.min_side", m.min_side, f"must be in 16..model.max_side ({m.max_side})", "use 256"))
    return out


def check_resolution(r: ResolutionConf, m: ModelConf) -> list[str]:
    out = []
    for name, v in (("resolution.height", r.height), ("resolution.width", r.width)):
        if v % spec.TOKEN_PIXELS:
            lo = v // spec.TOKEN_PIXELS * spec.TOKEN_PIXELS
            hi = lo + spec.TOKEN_PIXELS
            what = "is not a multiple of 16 (one latent token = 16x16 pixels)"
            out.append(problem(name, v, what, f"use {lo if lo >= m.min_side else hi} or {hi}"))
        if not m.min_side <= v <= m.max_side:
            fix = f"pick a value in {m.min_side}..{m.max_side} (or a preset such as resolution=square_1024)"
            out.append(problem(name, v, f"is outside {m.min_side}..{m.max_side}", fix))
    if r.height > 0 and r.width > 0:
        aspect = max(r.height, r.width) / min(r.height, r.width)
        if aspect > spec.MAX_ASPECT + 1e-9:
            fix = "bring width/height within 6:1 (e.g. resolution=banner_6_1 is 2016x336)"
            out.append(
                problem("resolution", f"{r.width}x{r.height}", f"aspect ratio {aspect:.2f}:1 is beyond 6:1", fix)
            )
    return out


def check_sampler(s: SamplerConf, cfg: float) -> list[str]:
    out = finite("cfg", cfg) + finite("sampler.polish_cfg", s.polish_cfg)
    out += finite("sampler.mu", s.mu) + finite("sampler.std", s.std)
    if not 1 <= s.steps <= spec.MAX_STEPS:
        fix = "use e.g. sampler.steps=48 (or sampler=turbo_12)"
        out.append(problem("sampler.steps", s.steps, f"must be in 1..{spec.MAX_STEPS}", fix))
    if s.guidance_schedule is not None:
        if len(s.guidance_schedule) != s.steps:
            what = f"has {len(s.guidance_schedule)} entries but sampler.steps = {s.steps}"
            fix = (
                f"give exactly {s.steps} weights (one per step, first step first) or drop the list to use cfg/polish_*"
            )
            out.append(problem("sampler.guidance_schedule", s.guidance_schedule, what, fix))
        out += [p for i, w in enumerate(s.guidance_schedule) for p in finite(f"sampler.guidance_schedule[{i}]", w)]
    elif s.polish_steps < 0 or (s.steps >= 1 and s.polish_steps >= s.steps):
        fix = f"set sampler.polish_steps={min(max(s.steps - 1, 0), 1)} (or sampler=constant for no polish)"
        what = f"must be in 0..{max(s.steps - 1, 0)} for sampler.steps = {s.steps}"
        out.append(problem("sampler.polish_steps", s.polish_steps, what, fix))
    out += one_of("sampler.final_step", s.final_step, spec.FINAL_STEPS)
    out += one_of("sampler.solver", s.solver, spec.SOLVERS)
    out += one_of("sampler.rand_device", s.rand_device, spec.RAND_DEVICES, "is not a noise device")
    if math.isfinite(s.std) and s.std <= 0:
        out.append(problem("sampler.std", s.std, "must be positive", "use e.g. 1.5 (quality_48) or 1.75"))
    return out


def check_image_input(conf: RunConf, edit: bool = False) -> list[str]:
    """input_image + denoising_strength; with a masked edit (`edit`) strength 1.0 is allowed (the rest is kept)."""
    strength = conf.denoising_strength
    out = finite("denoising_strength", strength)
    if out:
        return out
    if not 0.0 < strength <= 1.0:
        out.append(problem("denoising_strength", strength, "must be in (0, 1]", "use e.g. 0.6 with input_image"))
    if conf.input_image is None and strength != 1.0:
        fix = "set input_image=path/to.png or denoising_strength=1.0"
        out.append(problem("denoising_strength", strength, "only applies with an input image", fix))
    if conf.input_image is not None and strength == 1.0 and not edit:
        what = "at 1.0 the input image is replaced by noise (it would be ignored)"
        fix = "lower denoising_strength (e.g. 0.6: keep 40% of the input) or drop input_image"
        out.append(problem("denoising_strength", strength, what, fix))
    return out


def check_counts(conf: RunConf) -> list[str]:
    out = []
    if conf.images_per_prompt < 1:
        fix = "use images_per_prompt=1 or more"
        out.append(problem("images_per_prompt", conf.images_per_prompt, "must be at least 1", fix))
    if conf.batch_size < 1:
        out.append(problem("batch_size", conf.batch_size, "must be at least 1", "use batch_size=1"))
    return out


def check_prompts(p: PromptsConf) -> list[str]:
    out = []
    if not 1 <= p.max_tokens <= spec.MAX_TEXT_TOKENS:
        what = f"must be in 1..{spec.MAX_TEXT_TOKENS} (the model reads at most {spec.MAX_TEXT_TOKENS} tokens)"
        out.append(problem("prompts.max_tokens", p.max_tokens, what, f"use prompts.max_tokens={spec.MAX_TEXT_TOKENS}"))
    if p.upsample:
        from ideogram4.captions.upsample import UpsampleError, check_upsample_available

        try:
            check_upsample_available(p.upsample_head)
        except UpsampleError as e:
            fix = "download the head (see the message), set prompts.upsample_head=/path, or prompts.upsample=false"
            out.append(problem("prompts.upsample_head", p.upsample_head, str(e).rstrip("."), fix))
    return out


def check_tracker(t: TrackerConf) -> list[str]:
    out = one_of("tracker.name", t.name, TRACKERS, "is not a tracker")
    out += one_of("tracker.mode", t.mode, spec.TRACKER_MODES, "is not a W&B mode")
    if not (math.isfinite(t.init_timeout) and t.init_timeout > 0):
        out.append(problem("tracker.init_timeout", t.init_timeout, "must be a positive number of seconds", "use 60"))
    return out


def check_output(o: OutputConf) -> list[str]:
    out = finite("output.uniform_std_threshold", o.uniform_std_threshold)
    if o.grid_cell_size < 16:
        out.append(
            problem("output.grid_cell_size", o.grid_cell_size, "is too small to see", f"use {spec.GRID_CELL_SIZE}")
        )
    return out


def check_metrics(conf: RunConf) -> list[str]:
    """Unknown metric or option, missing package, CLIP weights missing: one problem, before any image."""
    from ideogram4.metrics import MetricError, check_metrics

    try:
        check_metrics(conf.metrics, conf.metric_options)
    except MetricError as e:
        fix = "fix the name/option, install the package, or drop the metric from metrics=[...]"
        return [problem("metrics", conf.metrics, str(e).rstrip("."), fix)]
    return []


def check_grid_scores(conf: RunConf) -> list[str]:
    """grid.scores names metric values the sweep's metrics produce (the axes are checked against the swept
    keys when the grid is drawn: a job does not know what its sweep sweeps)."""
    from ideogram4.metrics import get_metric, metric_names

    produced = [k for name in conf.metrics if name in metric_names() for k in get_metric(name).keys]
    unknown = [s for s in conf.grid.scores if s not in produced]
    if not unknown:
        return []
    fix = f"use values of metrics={list(conf.metrics)}: {', '.join(produced) or 'none'}, or add the metric"
    return [problem("grid.scores", unknown[0], "is not a value the chosen metrics produce", fix)]


def check_loras(conf: RunConf) -> list[str]:
    out = []
    names = [lora_name(lora) for lora in conf.lora]
    for i, (name, lora) in enumerate(zip(names, conf.lora)):
        where = f"lora.{i}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            out.append(
                problem(f"{where}.name", name, "is not a usable LoRA name", "use letters, digits, '_', '-' or '.'")
            )
        if names.count(name) > 1:
            out.append(problem(f"{where}.name", name, "names two LoRAs", f"give one its own name: {where}.name=other"))
        out += finite(f"{where}.scale", lora.scale)
        out += one_of(f"{where}.target", lora.target, spec.LORA_TARGETS, "is not a LoRA target")
        path = lora.path
        source = parse_source(path, base=original_cwd())
        if source.is_local and not source.path.is_file():
            fix = "give an existing .safetensors file (relative to where you ran) or owner/repo/file.safetensors"
            out.append(problem(f"{where}.path", path, "no such file", fix))
        elif source.is_local and (what := lora_file_problem(source.path)):
            out.append(problem(f"{where}.path", path, what, "give a LoRA .safetensors file"))
    return out


def lora_name(lora: LoraConf) -> str:
    """What records call a LoRA: its `name`, else the file's stem."""
    return lora.name or os.path.basename(lora.path.rstrip("/")).removesuffix(".safetensors")


def check_sections(conf: RunConf) -> list[str]:
    """Every section check that needs nothing but the typed config."""
    from .edit_plan import edit_kind  # imports this module

    return (
        check_model(conf.model)
        + check_resolution(conf.resolution, conf.model)
        + check_sampler(conf.sampler, conf.cfg)
        + check_image_input(conf, edit_kind(conf) is not None)
        + check_counts(conf)
        + check_prompts(conf.prompts)
        + check_tracker(conf.tracker)
        + check_output(conf.output)
        + check_metrics(conf)
        + check_grid_scores(conf)
        + check_loras(conf)
    )
