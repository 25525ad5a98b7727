"""What a job's image records share and hold: the per-job facts (model, weights, versions, config)
computed once, and one record per image built from them and the generation output."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

from . import outputs as out_mod
from .cost import cost_record
from .jobs import worker_identity
from .records import ImageRecord

log = logging.getLogger("ideogram4.experiment")


@dataclass
class JobFacts:
    """What every record of this job shares (computed once per job)."""

    loras: list[dict]
    model: dict
    weights: dict
    pipeline: dict
    versions: dict
    git: dict
    gpu: str
    config_json: str
    manifest_config: dict
    determinism: dict = field(default_factory=dict)


def job_facts(plan, loaded, reused: bool) -> JobFacts:
    from ideogram4.determinism import determinism_state

    model = {k: v for k, v in plan.config["model"].items() if k != "cache_dir"}
    m = plan.model
    model.update(
        kind=m.kind, source=m.source, device=m.device, resolved_source=loaded.source_path, components=m.components
    )
    pipeline = {"load_id": loaded.load_id, "reused": reused, "load_s": round(loaded.load_s, 3), "pid": os.getpid()}
    pipeline["worker"] = worker_identity()  # host, GPUs, and the pool launcher's actor or array task
    return JobFacts(
        loras=loaded.pipe.list_loras(),
        model=model,
        weights=loaded.describe,
        pipeline=pipeline,
        versions=out_mod.package_versions(),
        git=out_mod.git_revision(),
        gpu=out_mod.device_name(plan.model.device),
        config_json=json.dumps(plan.config, ensure_ascii=False, allow_nan=False, default=str),
        manifest_config=_config_without_prompt_bodies(plan.config),
        determinism=determinism_state(),
    )


def _config_without_prompt_bodies(config: dict) -> dict:
    cfg = json.loads(json.dumps(config, default=str))
    prompts = cfg.get("prompts")
    if isinstance(prompts, dict) and prompts.get("items"):
        prompts["items"] = [{"id": e.get("id")} for e in prompts["items"]]
    return cfg


def make_record(plan, ctx, facts: JobFacts, it, output, j: int, wall: float, batch_size: int, pipe) -> ImageRecord:
    hits = output.text_cache_hits
    settings = plan.gen.recorded_settings()
    return ImageRecord(
        image=it.image_rel,
        prompt_id=it.prompt.id,
        caption=it.prompt.caption,
        seed=it.seed,
        rng_device=plan.gen.rand_device,
        settings=settings,
        settings_hash=it.key,
        sampler=plan.gen.sampler,
        caption_issues=it.prompt.issues,
        upsampled_from=it.prompt.upsampled_from,
        loras=facts.loras,
        model=facts.model,
        weights=facts.weights,
        timings=dict(output.timings, wall_s=round(wall, 4)),
        batch_size=batch_size,
        cost=cost_record(output, j, batch_size),
        peak_memory_bytes=output.peak_memory_bytes,
        text_cache_hit=bool(hits[j]) if hits else None,
        text_encoder_calls=getattr(pipe, "text_encoder_calls", None),
        pipeline=facts.pipeline,
        flags=image_flags(output.images[j], plan.conf.output.uniform_std_threshold, it.image_rel),
        job=ctx.to_dict(),
        versions=facts.versions,
        git=facts.git,
        gpu=facts.gpu,
        config=facts.manifest_config,
        determinism=facts.determinism,
    )


def image_flags(image, threshold: float, name: str) -> dict:
    from ideogram4.metrics.image_stats import pixel_std

    std = pixel_std(image)
    if std < threshold:
        log.warning(
            "FLAGGED %s: near-uniform image (pixel std %.2f < %.2f): likely a broken build/weights "
            "('blocked' artefact), not a result",
            name,
            std,
            threshold,
        )
    return {"near_uniform": std < threshold, "pixel_std": round(std, 3)}
