"""The job loop: validated plan -> (cached) pipeline -> images, manifest, W&B.

``run(cfg)`` is what ``run.py`` calls for each Hydra job (one call per job in a multirun).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from . import outputs as out_mod
from .validate import PromptPlan, RunPlan, build_plan

log = logging.getLogger("ideogram4.experiment")

SWEEP_JOBS_ENV = "IDEOGRAM4_SWEEP_JOBS"


@dataclass
class JobContext:
    out_dir: Path
    multirun: bool
    num: int
    total: int | None
    override_dirname: str
    overrides: list[str]
    sweep_dir: str | None
    group: str | None
    name: str

    @property
    def position(self) -> str:
        if not self.multirun:
            return "run"
        return f"job {self.num + 1}/{self.total}" if self.total else f"job {self.num + 1}"


def sweep_group(sweep_dir: str) -> str:
    """A W&B group name shared by all jobs of one sweep, whatever process they run in."""
    parts = [p for p in Path(sweep_dir).parts if p not in ("/", ".")]
    return "sweep-" + "-".join(parts[-2:]) if parts else "sweep"


def job_context() -> JobContext:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            multirun = hc.mode == RunMode.MULTIRUN
            out_dir = Path(hc.runtime.output_dir)
            overrides = list(hc.overrides.task)
            num = int(hc.job.num) if multirun else 0
            total = (
                int(os.environ[SWEEP_JOBS_ENV]) if multirun and os.environ.get(SWEEP_JOBS_ENV, "").isdigit() else None
            )
            sweep_dir = str(Path(hc.runtime.cwd) / hc.sweep.dir) if multirun else None
            odn = hc.job.override_dirname or ""
            name = f"{Path(hc.sweep.dir).name}/{num}:{odn}" if multirun else out_dir.name
            return JobContext(
                out_dir,
                multirun,
                num,
                total,
                odn,
                overrides,
                sweep_dir,
                sweep_group(hc.sweep.dir) if multirun else None,
                name[:120],
            )
    except Exception as e:  # pragma: no cover - outside a Hydra app
        log.debug("no Hydra context: %s", e)
    out = Path(os.getcwd())
    return JobContext(out, False, 0, None, "", [], None, None, out.name)


@dataclass
class Item:
    prompt: PromptPlan
    seed: int
    settings: dict
    key: str
    image_rel: str
    record: dict | None = None  # the manifest record once made (or found)
    skipped: bool = False


@dataclass
class JobResult:
    out_dir: Path
    made: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def run(cfg: DictConfig, out_dir: str | Path | None = None) -> JobResult:
    """Run one Hydra job. Raises ConfigError (before any heavy import) for a bad config.

    `out_dir` defaults to the Hydra job's output folder (the current directory outside Hydra)."""
    t_start = time.perf_counter()
    plan = build_plan(cfg)
    for w in plan.warnings:
        log.warning(w)
    ctx = job_context()
    if out_dir is not None:
        ctx.out_dir = Path(out_dir)
    out_dir = ctx.out_dir
    images_dir = out_dir / out_mod.IMAGES
    images_dir.mkdir(parents=True, exist_ok=True)
    stale = out_mod.clean_temp_files(images_dir)
    if stale:
        log.info("Removed %d partial image file(s) left by an interrupted run", stale)
    log.info(
        "Config valid (%.2f s): %d prompt(s) x %d seed(s), %dx%d, %d steps, model %s",
        time.perf_counter() - t_start,
        len(plan.prompts),
        len(plan.seeds),
        plan.gen.width,
        plan.gen.height,
        plan.gen.steps,
        plan.model.name,
    )

    items = _plan_items(plan)
    overwrite = bool(plan.output.get("overwrite", False))
    existing = out_mod.latest_records(out_mod.read_manifest(out_dir))
    done = {r.get("settings_hash"): r for r in existing.values() if out_mod.is_valid_png(out_dir / r["image"])}
    pending: list[Item] = []
    for it in items:
        rec = done.get(it.key)
        if not overwrite and rec is not None:
            it.image_rel, it.record, it.skipped = rec["image"], rec, True
            continue
        held = existing.get(it.image_rel)
        if (out_dir / it.image_rel).exists() and (held is None or held.get("settings_hash") != it.key):
            # The name is taken by an image made with other settings (e.g. the same run folder with
            # another cfg): never replace it silently.
            if overwrite:
                log.warning("output.overwrite=true: replacing %s, which was made with other settings", it.image_rel)
            else:
                kept, it.image_rel = it.image_rel, it.image_rel[: -len(".png")] + f"__{it.key[:8]}.png"
                log.warning("%s holds an image made with other settings; keeping it and writing %s", kept, it.image_rel)
        pending.append(it)
    result = JobResult(out_dir=out_dir)
    result.skipped = [it.record for it in items if it.skipped]
    if result.skipped:
        log.info(
            "Resume: %d of %d image(s) already made with identical settings; skipping them%s",
            len(result.skipped),
            len(items),
            " (output.overwrite=true regenerates)" if not overwrite else "",
        )
    if not pending:
        log.info("Nothing to do: all %d image(s) of this job exist in %s", len(items), out_dir)
        return result

    from .tracker import make_tracker

    tracker = make_tracker(
        plan.tracker, name=ctx.name, group=ctx.group, config=_tracker_config(plan, ctx), out_dir=out_dir
    )
    exit_code = 1
    try:
        _generate(plan, ctx, pending, out_dir, tracker, result)
        exit_code = 0
    finally:
        try:
            _log_job_table(tracker, items, out_dir)
        finally:
            tracker.finish(exit_code=exit_code)
    flagged = [r for r in result.made if r["flags"]["near_uniform"]]
    log.info(
        "Done: %d image(s) made, %d skipped, %d flagged near-uniform; outputs in %s",
        len(result.made),
        len(result.skipped),
        len(flagged),
        out_dir,
    )
    return result


def _plan_items(plan: RunPlan) -> list[Item]:
    ident = plan.model.identity()
    items = []
    for p, seed in plan.items():
        settings = dict(plan.gen.settings(), caption=p.caption, seed=seed)
        key = out_mod.settings_hash(settings, ident)
        items.append(
            Item(
                prompt=p,
                seed=seed,
                settings=settings,
                key=key,
                image_rel=f"{out_mod.IMAGES}/{out_mod.image_name(p.id, seed)}",
            )
        )
    return items


def _tracker_config(plan: RunPlan, ctx: JobContext) -> dict:
    cfg = dict(plan.config)
    cfg["job"] = {"overrides": ctx.overrides, "num": ctx.num, "output_dir": str(ctx.out_dir)}
    return cfg


def _config_without_prompt_bodies(config: dict) -> dict:
    cfg = json.loads(json.dumps(config, default=str))
    prompts = cfg.get("prompts")
    if isinstance(prompts, dict) and prompts.get("items"):
        prompts["items"] = [{"id": e.get("id")} for e in prompts["items"]]
    return cfg


def _generate(plan: RunPlan, ctx: JobContext, pending: list[Item], out_dir: Path, tracker, result: JobResult) -> None:
    from tqdm.auto import tqdm

    from .cache import OOM_HINT, get_pipeline, is_oom

    loaded, reused = get_pipeline(plan.model)
    pipe = loaded.pipe
    describe = loaded.describe
    if describe.get("unconditional") == "conditional fallback":
        log.warning("Unconditional transformer: %s", describe.get("unconditional"))
    model_rec = {k: v for k, v in plan.model.__dict__.items() if k != "cache_dir"}
    model_rec["resolved_source"] = loaded.source_path
    gpu = out_mod.device_name(plan.model.device)
    versions = out_mod.package_versions()
    git = out_mod.git_revision()
    config_json = json.dumps(plan.config, ensure_ascii=False, default=str)
    manifest_config = _config_without_prompt_bodies(plan.config)
    threshold = float(plan.output.get("uniform_std_threshold", 2.0))
    gen = plan.gen
    input_image = None
    if gen.input_image:
        from PIL import Image

        input_image = Image.open(gen.input_image).convert("RGB")

    bs = max(1, plan.batch_size)
    total_steps = len(pending) * gen.steps
    bar = tqdm(total=total_steps, unit="step", disable=not plan.progress, dynamic_ncols=True, smoothing=0.1)
    try:
        for start in range(0, len(pending), bs):
            batch = pending[start : start + bs]
            first = batch[0]
            idx = start + 1
            label = (
                f"{ctx.position} | img {idx}/{len(pending)}"
                if len(batch) == 1
                else f"{ctx.position} | img {idx}-{idx + len(batch) - 1}/{len(pending)}"
            )
            bar.set_description(f"{label} | {first.prompt.id} seed {first.seed}")

            def on_step(i: int, n: int) -> None:
                bar.update(len(batch))
                bar.set_postfix_str(f"step {i + 1}/{n}", refresh=False)

            t0 = time.perf_counter()
            try:
                output = pipe.generate(
                    [it.prompt.prompt for it in batch],
                    [it.seed for it in batch],
                    height=gen.height,
                    width=gen.width,
                    num_inference_steps=gen.steps,
                    guidance_schedule=list(gen.guidance_schedule),
                    cfg_scale=gen.cfg,
                    mu=gen.mu,
                    std=gen.std,
                    final_step=gen.final_step,
                    negative_prompt=gen.negative_prompt,
                    input_image=input_image,
                    denoising_strength=gen.denoising_strength,
                    rand_device=gen.rand_device,
                    output_type="pil",
                    progress=False,
                    step_callback=on_step,
                )
            except Exception as e:
                if is_oom(e):
                    raise RuntimeError(
                        f"Generating {first.prompt.id} (seed {first.seed}) at {gen.width}x{gen.height} failed: {OOM_HINT}\n{e}"
                    ) from e
                raise
            wall = time.perf_counter() - t0
            te_calls = getattr(pipe, "text_encoder_calls", None)
            for j, it in enumerate(batch):
                image = output.images[j]
                caption_used = output.captions[j] if getattr(output, "captions", None) else it.prompt.caption
                if caption_used != it.prompt.caption:
                    log.warning(
                        "%s: the pipeline fed a different caption string than planned; recording the pipeline's",
                        it.prompt.id,
                    )
                std = out_mod.uniformity(image)
                near_uniform = std < threshold
                if near_uniform:
                    log.warning(
                        "FLAGGED %s: near-uniform image (pixel std %.2f < %.2f): likely a broken build/weights ('blocked' artefact), not a result",
                        it.image_rel,
                        std,
                        threshold,
                    )
                hits = getattr(output, "text_cache_hits", None)
                record = {
                    "schema": out_mod.SCHEMA_VERSION,
                    "image": it.image_rel,
                    "prompt_id": it.prompt.id,
                    "caption": caption_used,
                    "caption_issues": it.prompt.issues,
                    "seed": it.seed,
                    "rng_device": gen.rand_device,
                    "settings": it.settings,
                    "settings_hash": it.key,
                    "model": model_rec,
                    "weights": describe,
                    "timings": dict(getattr(output, "timings", {}) or {}, wall_s=round(wall, 4)),
                    "batch_size": len(batch),
                    "peak_memory_bytes": getattr(output, "peak_memory_bytes", None),
                    "text_cache_hit": bool(hits[j]) if hits is not None else None,
                    "text_encoder_calls": te_calls,
                    "pipeline": {
                        "load_id": loaded.load_id,
                        "reused": reused,
                        "load_s": round(loaded.load_s, 3),
                        "pid": os.getpid(),
                    },
                    "flags": {"near_uniform": near_uniform, "pixel_std": round(std, 3)},
                    "job": {
                        "num": ctx.num,
                        "multirun": ctx.multirun,
                        "override_dirname": ctx.override_dirname,
                        "overrides": ctx.overrides,
                        "sweep_dir": ctx.sweep_dir,
                        "output_dir": str(out_dir),
                    },
                    "versions": versions,
                    "git": git,
                    "gpu": gpu,
                    "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "config": manifest_config,
                }
                settings_blob = {
                    k: record[k]
                    for k in ("prompt_id", "seed", "rng_device", "settings", "settings_hash", "model", "flags")
                }
                text = {
                    "parameters": out_mod.a1111_parameters(caption_used, it.settings, it.seed, plan.model.name, it.key),
                    out_mod.PNG_CAPTION_KEY: caption_used,
                    out_mod.PNG_SETTINGS_KEY: json.dumps(settings_blob, ensure_ascii=False, default=str),
                    out_mod.PNG_CONFIG_KEY: config_json,
                }
                out_mod.save_png_atomic(image, out_dir / it.image_rel, text)
                if plan.output.get("save_latents") and getattr(output, "latents", None) is not None:
                    _save_latents(output.latents[j], out_dir / it.image_rel)
                out_mod.append_manifest(out_dir, record)
                it.record = record
                result.made.append(record)
                tracker.log_image(
                    "images",
                    image,
                    caption=f"{it.prompt.id} | seed {it.seed} | cfg {gen.cfg} | {gen.steps} steps"
                    + (" | FLAGGED near-uniform" if near_uniform else ""),
                )
    finally:
        bar.close()


def _save_latents(latent, png_path: Path) -> None:
    import torch

    path = png_path.with_suffix(".latents.pt")
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(latent.detach().cpu(), tmp)
    os.replace(tmp, path)


TABLE_COLUMNS = [
    "image",
    "prompt_id",
    "seed",
    "cfg",
    "steps",
    "sampler",
    "width",
    "height",
    "guidance_schedule",
    "mu",
    "std",
    "final_step",
    "near_uniform",
    "settings_hash",
    "caption",
]


def table_row(record: dict, image: Any) -> list[Any]:
    s = record.get("settings", {})
    return [
        image,
        record.get("prompt_id"),
        record.get("seed"),
        s.get("cfg"),
        s.get("steps"),
        s.get("sampler"),
        s.get("width"),
        s.get("height"),
        out_mod.schedule_text(s.get("guidance_schedule") or []),
        s.get("mu"),
        s.get("std"),
        s.get("final_step"),
        (record.get("flags") or {}).get("near_uniform"),
        record.get("settings_hash"),
        record.get("caption"),
    ]


def _log_job_table(tracker, items: list[Item], out_dir: Path) -> None:
    if not tracker.enabled:
        return
    from PIL import Image

    rows = []
    for it in items:
        if it.record is None:
            continue
        path = out_dir / it.image_rel
        image = None
        if path.exists():
            with Image.open(path) as im:
                image = im.convert("RGB")
        rows.append(table_row(it.record, image))
    if rows:
        tracker.log_table("images_table", TABLE_COLUMNS, rows, image_column="image")
