"""Config checks: one small function per config section, each returning a list of problems.

A problem reads ``field = value: what is wrong. Fix: what to do`` and all of them are collected into
one :class:`ConfigError`, so a researcher learns about every mistake at once, in seconds, before any
weights load. The value rules are the core's (``ideogram4.rules``, the functions the pipeline raises
from, limits from ``ideogram4.spec``): each finding names an API argument, turned into its config key
by the one table ``API_TO_CONFIG``, so validation accepts nothing the pipeline would refuse later.
No torch, no transformers here.
"""

from __future__ import annotations

import os

from ideogram4 import rules, spec
from ideogram4.safetensors_header import lora_file_problem
from ideogram4.sources import parse_source

from ..run.paths import original_cwd
from .components import model_side_range
from .edit_plan import edit_kind
from .problems import core_problem, core_problems, finite, one_of, problem
from .schema import LoraConf, ModelConf, OutputConf, PromptsConf, ResolutionConf, RunConf, SamplerConf, TrackerConf

TRACKERS = ("wandb", "none")


# --- per section ------------------------------------------------------------------------------------


def check_model(m: ModelConf, device: str | None = None) -> list[str]:
    found = rules.dtype_problems("torch_dtype", m.dtype)
    found += rules.choice_problems("fp8_mode", m.fp8_mode, spec.FP8_MODE_OPTIONS, "is not an fp8 mode")
    found += rules.choice_problems("model.offload", m.offload, spec.OFFLOAD_MODES, "is not an offload mode")
    found += rules.choice_problems("model.layout", m.layout, spec.CHECKPOINT_LAYOUTS, "is not a checkpoint layout")
    streamed = m.offload in ("transformers", "all")
    on = None if device in (None, "auto") else device  # "auto" resolves at load time
    found += rules.compile_problems(m.compile_blocks, m.compile_mode, on, offload_transformers=streamed)
    return core_problems(found)


def check_resolution(r: ResolutionConf, m: ModelConf) -> list[str]:
    """The core's resolution rule with the model's own side range (what its pipeline will apply)."""
    return core_problems(rules.resolution_problems(r.height, r.width, *model_side_range(m)))


def check_sampler(s: SamplerConf, cfg: float) -> list[str]:
    found = rules.schedule_problems(s.steps, s.guidance_schedule, cfg)
    found += rules.number_problems("sampler.polish_cfg", s.polish_cfg, 3.0)
    found += rules.number_problems("mu", s.mu, 0.0) + rules.number_problems("std", s.std, 1.5, positive=True)
    found += rules.choice_problems("final_step", s.final_step, spec.FINAL_STEPS)
    found += rules.choice_problems("sampler.solver", s.solver, spec.SOLVERS)
    found += rules.choice_problems("rand_device", s.rand_device, spec.RAND_DEVICES, "is not a noise device")
    if s.guidance_schedule is None:  # a full schedule replaces the official one and its polish steps
        found += rules.polish_problems(s.polish_steps, s.steps)
    return core_problems(found)


def check_image_input(conf: RunConf, edit: bool = False) -> list[str]:
    """input_image + denoising_strength; with a masked edit (`edit`) strength 1.0 is allowed (the rest is kept)."""
    return core_problems(rules.strength_problems(conf.denoising_strength, conf.input_image is not None, edit))


def check_counts(conf: RunConf) -> list[str]:
    found = rules.int_problems("images_per_prompt", conf.images_per_prompt, 1, None, 1)
    return core_problems(found + rules.int_problems("batch_size", conf.batch_size, 1, None, 1))


def check_prompts(p: PromptsConf) -> list[str]:
    out = core_problems(rules.token_limit_problems("prompts.max_tokens", p.max_tokens))
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
    return out + core_problems(rules.number_problems("tracker.init_timeout", t.init_timeout, 60, positive=True))


def check_output(o: OutputConf) -> list[str]:
    found = rules.number_problems("output.uniform_std_threshold", o.uniform_std_threshold, spec.UNIFORM_STD_THRESHOLD)
    found += rules.int_problems("output.grid_cell_size", o.grid_cell_size, spec.TOKEN_PIXELS, None, spec.GRID_CELL_SIZE)
    return core_problems(found)


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
        out += [core_problem(e, f"{where}.name") for e in rules.lora_name_problems("name", name)]
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
    return (
        check_model(conf.model, conf.device or conf.model.device)
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
