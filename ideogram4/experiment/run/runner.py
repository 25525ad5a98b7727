"""The job loop: checked plan -> (cached) pipeline -> images, manifest, W&B.

``run(cfg)`` is what ``run.py`` calls for each Hydra job (one call per job in a multirun). The flow
reads top to bottom: plan, decide what is already done, load (or reuse) the pipeline, generate in
batches, write each image with its manifest line, log.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ..config.plan import RunPlan, build_plan
from ..config.prompt_plan import PromptPlan
from . import outputs as out_mod
from .exits import raise_if_interrupted
from .job_facts import job_facts, make_record
from .jobs import JobContext, job_context
from .lock import folder_lock
from .records import ImageRecord

log = logging.getLogger("ideogram4.experiment")


@dataclass
class Item:
    """One image to make (or found made): prompt x seed, its resume key and file name."""

    prompt: PromptPlan
    seed: int
    key: str
    image_rel: str
    record: dict | None = None  # the manifest record once made (or found)


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
    ctx = job_context(out_dir)
    out_mod.check_writable(ctx.out_dir / out_mod.IMAGES)
    with folder_lock(ctx.out_dir):
        return _run_job(plan, ctx, t_start)


def _run_job(plan: RunPlan, ctx: JobContext, t_start: float) -> JobResult:
    images_dir = ctx.out_dir / out_mod.IMAGES
    if stale := out_mod.clean_temp_files(images_dir):
        log.info("Removed %d partial image file(s) left by an interrupted run", stale)
    g = plan.gen
    log.info(
        "Config valid (%.2f s): %d prompt(s) x %d seed(s), %dx%d, %d steps, model %s",
        time.perf_counter() - t_start,
        len(plan.prompts),
        len(plan.seeds),
        g.width,
        g.height,
        g.steps,
        plan.model.name,
    )
    items = plan_items(plan)
    pending = resume(items, ctx.out_dir, plan.conf.output.overwrite)
    result = JobResult(out_dir=ctx.out_dir, skipped=[it.record for it in items if it not in pending])
    if not pending:
        log.info("Nothing to do: all %d image(s) of this job exist in %s", len(items), ctx.out_dir)
        return result
    _generate_with_tracker(plan, ctx, items, pending, result)
    flagged = sum(1 for r in result.made if r["flags"]["near_uniform"])
    log.info(
        "Done: %d image(s) made, %d skipped, %d flagged near-uniform; outputs in %s",
        len(result.made),
        len(result.skipped),
        flagged,
        ctx.out_dir,
    )
    return result


def plan_items(plan: RunPlan) -> list[Item]:
    ident = plan.model.identity()
    items = []
    for p, seed in plan.items():
        settings = dict(plan.gen.settings(), prompt_id=p.id, caption=p.caption, seed=seed)
        if plan.conf.prompts.upsample:  # the caption is written after loading: key on what determines it
            p_ = plan.conf.prompts
            settings["upsample"] = {
                "head": p_.upsample_head,
                "seed": p_.upsample_seed,
                "max": p_.upsample_max_new_tokens,
            }
        key = out_mod.settings_hash(settings, ident)
        items.append(Item(prompt=p, seed=seed, key=key, image_rel=f"{out_mod.IMAGES}/{out_mod.image_name(p.id, seed)}"))
    return items


def resume(items: list[Item], out_dir: Path, overwrite: bool) -> list[Item]:
    """Items still to make. Found ones get their record; a name held by other settings is never reused."""
    existing = out_mod.latest_records(out_mod.read_manifest(out_dir))
    done = {r.get("settings_hash"): r for r in existing.values() if out_mod.is_valid_png(out_dir / r["image"])}
    pending = []
    for it in items:
        rec = done.get(it.key)
        if rec is not None:
            it.image_rel = rec["image"]  # overwrite=true regenerates into the same file
            if not overwrite:
                it.record = rec
                continue
        held = existing.get(it.image_rel)
        if rec is None and (out_dir / it.image_rel).exists() and (held is None or held.get("settings_hash") != it.key):
            # The name is taken by an image made with other settings (e.g. another cfg): keep it.
            kept, it.image_rel = it.image_rel, it.image_rel[: -len(".png")] + f"__{it.key[:8]}.png"
            log.warning("%s holds an image made with other settings; keeping it and writing %s", kept, it.image_rel)
        pending.append(it)
    if skipped := len(items) - len(pending):
        hint = " (output.overwrite=true regenerates)" if not overwrite else ""
        log.info(
            "Resume: %d of %d image(s) already made with identical settings; skipping them%s", skipped, len(items), hint
        )
    return pending


def _generate_with_tracker(
    plan: RunPlan, ctx: JobContext, items: list[Item], pending: list[Item], result: JobResult
) -> None:
    from .tracker import make_tracker

    config = dict(plan.config, job=ctx.to_dict())
    tracker = make_tracker(
        plan.conf.tracker, name=ctx.name, group=ctx.group, config=config, out_dir=ctx.out_dir, in_sweep=ctx.multirun
    )
    exit_code = 1
    try:
        with determinism_for(plan):
            generate(plan, ctx, pending, tracker, result)
        exit_code = 0
    finally:
        try:
            _log_job_table(tracker, items, ctx.out_dir)
        finally:
            tracker.finish(exit_code=exit_code)


# --- generation ------------------------------------------------------------------------------------


def generate(plan: RunPlan, ctx: JobContext, pending: list[Item], tracker, result: JobResult, copies: int = 1) -> None:
    """Make and write `pending`, `plan.conf.batch_size` images per pipeline call. `copies` > 1 (reproduce
    only): each call runs that many copies of its one item and writes the first, so the kernels see the
    batch shape the image was first made in (CPU GEMMs round differently with the batch dimension)."""
    from tqdm.auto import tqdm

    from .cache import get_pipeline
    from .scored_writer import ScoredWriter

    loaded, reused = get_pipeline(plan.model)
    if loaded.describe.get("unconditional") == "conditional fallback" and set(plan.gen.guidance_schedule) != {1.0}:
        log.warning("Unconditional transformer: conditional fallback (model.load_unconditional=false)")
    sync_loras(loaded.pipe, plan)
    facts = job_facts(plan, loaded, reused)
    input_image = _open_input_image(plan.gen.input_image)
    if plan.conf.prompts.upsample:
        upsample_prompts(loaded.pipe, plan, pending)
    items = {it.image_rel: it for it in pending}

    def write(record: ImageRecord, image) -> None:
        out_mod.write_image(ctx.out_dir, record, image, record.png_text(plan.model.name, facts.config_json))
        if plan.conf.output.layout_overlay:
            _save_layout_overlay(ctx.out_dir / record.image, image, record.caption)
        items[record.image].record = line = record.to_dict()
        result.made.append(line)
        tracker.log_image("images", image, caption=_image_caption(record), boxes=_wandb_boxes(record.caption, image))

    writer = ScoredWriter(plan.conf.metrics, plan.conf.metric_options, write)
    bs = max(1, plan.conf.batch_size)
    bar = tqdm(total=len(pending) * plan.gen.steps, unit="step", disable=not plan.conf.progress, dynamic_ncols=True)
    try:
        for start in range(0, len(pending), bs):
            raise_if_interrupted()
            batch = pending[start : start + bs]
            bar.set_description(f"{ctx.position} | {_batch_label(batch, start, len(pending))}")
            shaped = batch * copies
            output, wall = _generate_batch(loaded.pipe, plan, shaped, input_image, bar)
            for j, it in enumerate(batch):
                if plan.conf.output.save_latents:
                    _save_latents(output.latents[j], ctx.out_dir / it.image_rel)
                record = make_record(plan, ctx, facts, it, output, j, wall, len(shaped), loaded.pipe)
                writer.add(record, output.images[j], output.edits[j] if output.edits else None)
    finally:
        bar.close()
        writer.close()


def sync_loras(pipe, plan: RunPlan) -> None:
    """Make the pipeline's LoRAs this job's (a scale change is applied in place: no reload of anything)."""
    from .cache import lora_specs_to_load

    actions = pipe.lora_manager.sync(lora_specs_to_load(plan))
    for name, action in actions.items():
        scale = next((d["scale"] for d in plan.gen.loras if d["name"] == name), None)
        what = {"kept": "already loaded", "rescaled": "scale changed in place", "unloaded": "removed"}.get(
            action, action
        )
        log.info("LoRA %s: %s%s (base weights reused)", name, what, f", scale {scale}" if scale is not None else "")


def upsample_prompts(pipe, plan: RunPlan, pending: list[Item]) -> None:
    """Plain prompts -> structured captions (once per prompt; the pipeline caches across jobs)."""
    p = plan.conf.prompts
    if pipe.caption_writer is None or pipe.caption_writer.head is None:
        pipe.load_prompt_enhancer_head(p.upsample_head)
    for prompt in {id(it.prompt): it.prompt for it in pending}.values():
        if isinstance(prompt.prompt, str) and prompt.upsampled_from is None:
            caption = pipe.upsample_prompt(
                prompt.caption,
                plan.gen.height,
                plan.gen.width,
                seed=p.upsample_seed,
                max_new_tokens=p.upsample_max_new_tokens,
            )
            prompt.upsampled_from, prompt.caption = prompt.caption, caption
            log.info(
                "Upsampled %s: %d characters of prose -> a %d-character caption",
                prompt.id,
                len(prompt.upsampled_from),
                len(caption),
            )


def _save_layout_overlay(png: Path, image, caption: str) -> None:
    from ideogram4.captions.draw import draw_layout

    out_mod.save_png_atomic(draw_layout(image, caption), png.with_name(png.stem + "__layout.png"), {})


def _wandb_boxes(caption: str, image) -> dict | None:
    from ideogram4.captions.draw import wandb_boxes

    return wandb_boxes(caption, image.width, image.height) or None


def _batch_label(batch: list[Item], start: int, total: int) -> str:
    first, idx = batch[0], start + 1
    span = f"img {idx}/{total}" if len(batch) == 1 else f"img {idx}-{idx + len(batch) - 1}/{total}"
    return f"{span} | {first.prompt.id} seed {first.seed}"


def _open_input_image(path: str | None):
    if path is None:
        return None
    from ideogram4.image_files import read_image

    return read_image(path)


def _generate_batch(pipe, plan: RunPlan, batch: list[Item], input_image, bar) -> tuple[Any, float]:
    """One pipeline call for the batch; (GenerationOutput, wall seconds). OOM -> the runner's advice."""
    from .cache import is_oom, memory_advice

    g = plan.gen

    def on_step(i: int, n: int) -> None:
        bar.update(len(batch))
        bar.set_postfix_str(f"step {i + 1}/{n}", refresh=False)

    t0 = time.perf_counter()
    try:
        output = pipe.generate(
            [it.prompt.caption for it in batch],
            [it.seed for it in batch],
            height=g.height,
            width=g.width,
            num_inference_steps=g.steps,
            guidance_schedule=list(g.guidance_schedule),
            cfg_scale=g.cfg,
            mu=g.mu,
            std=g.std,
            final_step=g.final_step,
            negative_prompt=g.negative_prompt,
            input_image=input_image,
            denoising_strength=g.denoising_strength,
            rand_device=g.rand_device,
            output_type="pil",
            progress=False,
            step_callback=on_step,
            **g.edit_arguments(),
        )
    except Exception as e:
        if is_oom(e):
            first = batch[0]
            where = f"Generating {first.prompt.id} (seed {first.seed}) at {g.width}x{g.height}"
            raise RuntimeError(f"{where} failed: {memory_advice(e)}") from e
        raise
    return output, time.perf_counter() - t0


def determinism_for(plan: RunPlan):
    """Deterministic kernels for this job when `deterministic=true` (else the process's settings stay)."""
    from ideogram4.determinism import deterministic

    return deterministic(plan.conf.deterministic)


def _image_caption(record: ImageRecord) -> str:
    s = record.settings
    text = f"{record.prompt_id} | seed {record.seed} | cfg {s['cfg']} | {s['steps']} steps"
    return text + (" | FLAGGED near-uniform" if record.flags["near_uniform"] else "")


def _save_latents(latent, png_path: Path) -> None:
    import torch

    path = png_path.with_suffix(".latents.pt")
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(latent.detach().cpu(), tmp)
    os.replace(tmp, path)


def _log_job_table(tracker, items: list[Item], out_dir: Path) -> None:
    if not tracker.enabled:
        return
    from ideogram4.image_files import ImageFileError, read_image

    rows = []
    metric_keys = sorted({k for it in items if it.record for k in it.record.get("metrics") or {}})
    for it in items:
        if it.record is None:
            continue
        path = out_dir / it.image_rel
        image = None
        if path.exists():
            try:  # a file put in the folder (resume) is checked as any image from elsewhere
                image = read_image(path)
            except ImageFileError as e:
                log.warning("W&B table: row without its image: %s", e)
        rows.append(ImageRecord.from_dict(it.record).table_row(image, metric_keys))
    if rows:
        from .records import TABLE_COLUMNS
        from .scored_writer import score_summary

        tracker.log_table("images_table", TABLE_COLUMNS + metric_keys, rows, image_column="image")
        tracker.summary(score_summary([it.record for it in items if it.record]))
