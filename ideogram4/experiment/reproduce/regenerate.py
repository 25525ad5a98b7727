"""Regenerate an image from its PNG alone and say whether the pixels match, and if not, why.

    python -m ideogram4.experiment.reproduce IMAGE.png [--out DIR] [--strict] [overrides ...]
    python run.py +reproduce=IMAGE.png [reproduce_strict=true] [overrides ...]

The PNG's embedded config is rebuilt (see reproduce/config.py), the user's overrides go on top
(``device=cpu``, ``model.path=/elsewhere``, ``input_image=...``), and before anything is sampled
what the PNG recorded is compared with what will run now: settings, package versions, revision,
device, determinism, then (once loaded) the weight fingerprints. Each difference is one line;
``--strict`` stops at the first stage that has any. The regenerated image goes to the output folder
(``outputs/reproduce/<stem>/`` by default; with run.py, the Hydra job folder), never over the
original, with a difference image and ``reproduce.json`` when the pixels differ.

Exit codes: 0 identical pixels; 1 different pixels; 2 unusable PNG, config or input image;
3 weights; 4 output folder; 5 out of memory; 6 refused by --strict (nothing sampled); 130 Ctrl-C.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ideogram4 import spec

from ..config.plan import RunPlan, abspath, build_plan
from ..run import outputs as out_mod
from ..run.exits import EXIT_INTERRUPTED, classify
from ..run.lock import folder_lock
from ..run.manifest import OutputWriteError
from ..run.provenance import Comparison, compare_provenance, compare_settings, current_provenance, weights_provenance
from .config import (
    Embedded,
    ReproduceError,
    _mapping,
    check_input_files,
    override_values,
    read_embedded,
    reproduction_config,
)

log = logging.getLogger("ideogram4.experiment")

EXIT_IDENTICAL, EXIT_DIFFERENT, EXIT_BAD_INPUT, EXIT_REFUSED = 0, 1, 2, 6
REPORT = "reproduce.json"


@dataclass
class PixelDiff:
    identical: bool
    max_abs: int  # 0..255, over all channels
    mean_abs: float | None  # over all pixels and channels (None: the sizes differ)
    differing: int  # pixels with any channel different
    total: int
    size_then: tuple[int, int]  # (width, height)
    size_now: tuple[int, int]

    def summary(self) -> str:
        if self.size_then != self.size_now:
            (w0, h0), (w1, h1) = self.size_then, self.size_now
            return f"Different: the original is {w0}x{h0}, the regenerated image {w1}x{h1}"
        if self.identical:
            return f"Identical: all {self.total} pixels match the original, bit for bit"
        share = 100.0 * self.differing / self.total
        return (
            f"Different: max |difference| {self.max_abs} of 255, mean {self.mean_abs:.4f}; "
            f"{self.differing} of {self.total} pixels ({share:.2f}%) differ"
        )


@dataclass
class Outcome:
    code: int
    comparison: Comparison
    pixels: PixelDiff | None = None
    image: Path | None = None  # the regenerated PNG
    diff_image: Path | None = None


def compare_pixels(then, now) -> PixelDiff:
    """Two (H, W, 3) uint8 arrays."""
    import numpy as np

    size_then, size_now = (then.shape[1], then.shape[0]), (now.shape[1], now.shape[0])
    if then.shape != now.shape:
        return PixelDiff(
            False, 255, None, then.shape[0] * then.shape[1], then.shape[0] * then.shape[1], size_then, size_now
        )
    diff = np.abs(then.astype(np.int16) - now.astype(np.int16))
    differing = int(diff.any(axis=-1).sum())
    return PixelDiff(
        differing == 0,
        int(diff.max()),
        float(diff.mean()),
        differing,
        diff.shape[0] * diff.shape[1],
        size_then,
        size_now,
    )


def difference_image(then, now):
    """|then - now| per channel, stretched so the largest difference is white; (PIL image, gain)."""
    import numpy as np
    from PIL import Image

    diff = np.abs(then.astype(np.int16) - now.astype(np.int16))
    gain = 255.0 / max(int(diff.max()), 1)
    return Image.fromarray(np.clip(diff * gain, 0, 255).astype(np.uint8)), gain


# --- the flow --------------------------------------------------------------------------------------


def reproduce(
    image: str | Path,
    out_dir: str | Path | None = None,
    *,
    strict: bool = False,
    overrides: dict | None = None,
    echo: Callable[[str], None] = print,
) -> Outcome:
    """Regenerate `image` from its embedded settings into `out_dir` and compare (see the module doc)."""
    emb = read_embedded(os.path.normpath(abspath(str(image))))
    taken = reproduction_config(emb, overrides or {})
    check_input_files(emb, taken.config, abspath)
    plan = build_plan(taken.config)
    out = Path(os.path.normpath(abspath(str(out_dir or Path("outputs", "reproduce", emb.path.stem)))))
    target = out / out_mod.IMAGES / out_mod.image_name(plan.prompts[0].id, plan.seeds[0])
    if target.resolve() == emb.path.resolve():
        raise ReproduceError(f"--out {out} would overwrite the original image. Fix: choose another folder")
    out_mod.check_writable(out / out_mod.IMAGES)
    _check_no_other_original(out, target, emb)
    from ..run.runner import determinism_for

    echo(
        f"Reproducing {emb.path} ({plan.prompts[0].id}, seed {plan.seeds[0]}, {plan.gen.width}x{plan.gen.height}, "
        f"{plan.gen.steps} steps, model {plan.model.name} on {plan.model.device}) into {out}"
    )
    with folder_lock(out), determinism_for(plan):
        return _regenerate(emb, plan, out, target, strict, Comparison(taken.differences, taken.notes), echo)


def _original_sha256(emb: Embedded) -> str:
    from ..run.paths import file_sha256

    return file_sha256(str(emb.path))


def _check_no_other_original(out: Path, target: Path, emb: Embedded) -> None:
    """A reproduction replaces only its own earlier reproduction, never another image of the same name."""
    if not target.exists():
        return
    try:
        earlier = json.loads((out / REPORT).read_text()).get("original_sha256")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if earlier != _original_sha256(emb):
        raise OutputWriteError(
            f"{target} already exists and is not a reproduction of {emb.path}: nothing is replaced. "
            "Fix: pass another --out (or hydra.run.dir) for this image"
        )


def _regenerate(
    emb: Embedded, plan: RunPlan, out: Path, target: Path, strict: bool, before: Comparison, echo
) -> Outcome:
    from ideogram4.determinism import determinism_state

    from ..run.cache import get_pipeline

    before.extend(compare_settings(_recorded(emb), _planned(plan)))
    if plan.prompts[0].caption != emb.caption:
        before.differences.append("caption: the text encoder would read another string now")
    copies = _recorded_batch_size(emb)
    now = current_provenance(plan.model.device, determinism_state(), batch_size=copies)
    before.extend(compare_provenance(emb.provenance, now))
    if refused := _report("settings, software and device", before, strict, echo):
        return refused
    loaded, _ = get_pipeline(plan.model)
    found = Comparison().extend(before)
    if emb.provenance:
        after = compare_provenance(emb.provenance, {"weights": weights_provenance(loaded.describe)})
        if refused := _report("weights", after, strict, echo):
            return refused
        found.extend(after)
    _generate_one(plan, out, target, copies)
    return _compare_and_report(emb, target, out, found, echo)


def _recorded_batch_size(emb: Embedded) -> int:
    """How many images shared the image's pipeline call (1 when not recorded or not a small positive int:
    the PNG is data, and this number only sets how many copies of the one image are sampled at once)."""
    size = emb.provenance.get("batch_size") if isinstance(emb.provenance, dict) else None
    valid = isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= spec.MAX_REPRODUCE_COPIES
    return size if valid else 1


def _recorded(emb: Embedded) -> dict:
    model = {k: v for k, v in _mapping(emb, "model", emb.record.get("model") or {}).items() if k != "resolved_source"}
    return dict(emb.record, model=model, settings=_by_name(emb.settings))


def _by_name(settings: dict) -> dict:
    """settings with its LoRA list keyed by name, so each LoRA's file and scale are compared on their own."""
    loras = settings.get("loras")
    if not isinstance(loras, list):
        return settings
    return dict(settings, loras={str(lo.get("name")): lo for lo in loras if isinstance(lo, dict)})


def _planned(plan: RunPlan) -> dict:
    """The run about to happen, in the shape of the PNG's ideogram4:settings chunk."""
    model = {k: v for k, v in plan.config["model"].items() if k != "cache_dir"}
    model.update(kind=plan.model.kind, source=plan.model.source, device=plan.model.device)
    settings = _by_name(plan.gen.recorded_settings())
    return dict(
        settings=settings, model=model, sampler=plan.gen.sampler, seed=plan.seeds[0], rng_device=plan.gen.rand_device
    )


def _report(stage: str, found: Comparison, strict: bool, echo) -> Outcome | None:
    """Print what `found` holds; an Outcome when --strict refuses to go on."""
    n = len(found.differences)
    echo(f"Recorded vs now, {stage}: {n or 'no'} difference{'' if n == 1 else 's'}")
    for line in found.differences:
        echo(f"  differs: {line}")
    for line in found.notes:
        echo(f"  note: {line}")
    if strict and found.differences:
        echo(f"Refusing to sample (--strict): {n} difference{'' if n == 1 else 's'} in {stage}")
        return Outcome(EXIT_REFUSED, found)
    return None


def _generate_one(plan: RunPlan, out: Path, target: Path, copies: int) -> None:
    from ..run.jobs import job_context
    from ..run.runner import JobResult, generate, plan_items
    from ..run.tracker import NullTracker

    if target.exists():
        log.info("Replacing the earlier reproduction %s", target)
    item = plan_items(plan)[0]
    item.image_rel = str(target.relative_to(out))
    generate(plan, job_context(out), [item], NullTracker(), JobResult(out_dir=out), copies=copies)


def _compare_and_report(emb: Embedded, target: Path, out: Path, found: Comparison, echo) -> Outcome:
    import numpy as np
    from PIL import Image

    with Image.open(target) as im:
        now = np.asarray(im.convert("RGB"))
    pixels = compare_pixels(emb.pixels, now)
    outcome = Outcome(EXIT_IDENTICAL if pixels.identical else EXIT_DIFFERENT, found, pixels, target)
    echo(f"{pixels.summary()}. Regenerated image: {target}")
    if not pixels.identical and pixels.size_then == pixels.size_now:
        diff, gain = difference_image(emb.pixels, now)
        outcome.diff_image = out / f"{emb.path.stem}.diff.png"
        out_mod.save_png_atomic(diff, outcome.diff_image, {"Description": f"|original - regenerated| x {gain:.1f}"})
        echo(f"Difference image (|original - regenerated| x {gain:.1f}): {outcome.diff_image}")
        if not found.differences:
            echo(
                "Nothing recorded differs: the cause is outside what the PNG records (e.g. GPU kernels that "
                "vary run to run; deterministic=true makes them repeatable)"
            )
    _write_report(out, emb, outcome)
    return outcome


def _write_report(out: Path, emb: Embedded, outcome: Outcome) -> None:
    report = {
        "original": str(emb.path),
        "original_sha256": _original_sha256(emb),
        "regenerated": str(outcome.image),
        "identical": outcome.code == EXIT_IDENTICAL,
        "pixels": asdict(outcome.pixels) if outcome.pixels else None,
        "difference_image": str(outcome.diff_image) if outcome.diff_image else None,
        "differences": outcome.comparison.differences,
    }
    (out / REPORT).write_text(json.dumps(report, indent=2, default=str, allow_nan=False) + "\n")


# --- entry points ----------------------------------------------------------------------------------


def guarded(fn: Callable[[], Outcome]) -> int:
    """Run a reproduction; a user-fixable error is one line on stderr and its exit code."""
    try:
        return fn().code
    except KeyboardInterrupt:
        print("Interrupted: nothing of the original was touched.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ReproduceError as e:
        print(f"Reproduce: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:
        known = classify(e)
        if known is None:
            raise
        print(known[1], file=sys.stderr)
        return known[0]


def run_from_hydra(cfg) -> int:
    """``python run.py +reproduce=IMAGE.png [overrides]``: the task overrides apply on top of the PNG's config."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    overrides = (
        OmegaConf.to_container(HydraConfig.get().overrides, resolve=False)["task"] if HydraConfig.initialized() else []
    )
    out_dir = HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None
    return guarded(
        lambda: reproduce(
            cfg.reproduce, out_dir, strict=cfg.reproduce_strict, overrides=override_values(cfg, overrides)
        )
    )
