"""A process-wide pipeline cache: multirun jobs in one process load the weights once.

One pipeline is held at a time (a fp8-vs-bf16 sweep could not hold both on one GPU); a job with a
different model config drops the previous pipeline before loading its own.
"""

from __future__ import annotations

import gc
import logging
import os
import time
import uuid
from dataclasses import dataclass

from ideogram4 import spec
from ideogram4.checks import ArgumentError, check_device
from ideogram4.errors import CheckpointError

from ..config.plan import ModelPlan
from ..config.problems import ConfigError, core_problem, problem

log = logging.getLogger("ideogram4.experiment")


@dataclass
class LoadedPipeline:
    pipe: object
    key: str
    load_id: str
    load_s: float
    source_path: str  # what from_pretrained got (tiny: the built folder)
    describe: dict
    uses: int = 0


_CURRENT: LoadedPipeline | None = None
LOADS_IN_PROCESS = 0


# The core names memory options in Python-API terms (ideogram4.errors.MemoryTip.option); the runner
# speaks config keys. This table is the one place that translates.
CONFIG_KEY_FOR_OPTION = {
    "offload_text_encoder": "model.offload=text_encoder",
    "offload_transformers": "model.offload=transformers (or all)",
    "vae_tiling": "model.vae_tiling=true",
    "load_unconditional": "model.load_unconditional=false",
    "fp8_mode": "model.fp8_mode=dequantize_per_call",
    "batch": "batch_size=1",
    "resolution": "a smaller resolution (e.g. resolution=square_1024)",
    "source": "model=nf4",
}
# without the core's tips (an OOM from elsewhere): every option, cheapest in speed first
FALLBACK_TIPS = ("model=nf4 (fits 24 GB)", *(v for k, v in CONFIG_KEY_FOR_OPTION.items() if k != "source"))


def is_oom(e: BaseException) -> bool:
    from ideogram4.errors import is_out_of_memory

    return is_out_of_memory(e)


def memory_advice(e: BaseException) -> str:
    """The core's memory tips (if it gave any) as runner overrides."""
    tips = getattr(e, "tips", None)
    if tips:
        keys = [CONFIG_KEY_FOR_OPTION.get(t.option, f"{t.option}={t.value}") + f" ({t.why})" for t in tips]
    else:
        keys = list(FALLBACK_TIPS)
    return "the GPU ran out of memory. Settings that need less: " + "; ".join(keys)


def get_pipeline(model: ModelPlan) -> tuple[LoadedPipeline, bool]:
    """The pipeline for `model`, loading it unless the cached one has the same config.

    Returns (loaded, reused)."""
    global _CURRENT, LOADS_IN_PROCESS
    key = model.cache_key()
    if _CURRENT is not None and _CURRENT.key == key:
        _CURRENT.uses += 1
        reuse = (model.name, _CURRENT.load_id, _CURRENT.load_s, _CURRENT.uses)
        log.info("Reusing the loaded pipeline (%s, load %s, loaded %.1f s, job %d in this process)", *reuse)
        return _CURRENT, True
    if _CURRENT is not None:
        log.info("Model config changed: releasing the previous pipeline (load %s)", _CURRENT.load_id)
        release()
    pipe, source, dt = _load(model)
    LOADS_IN_PROCESS += 1
    # The loaded stack is ~500k long-lived objects: a full GC pass over them costs ~0.3 s and hits a
    # sweep job every few jobs. Freeze them out of the collector's view until the pipeline is released.
    gc.freeze()
    try:
        describe = dict(pipe.describe())
    except Exception as e:  # pragma: no cover - defensive
        describe = {"error": f"describe() failed: {e}"}
    _CURRENT = LoadedPipeline(
        pipe=pipe,
        key=key,
        load_id=f"{os.getpid()}-{uuid.uuid4().hex[:8]}",
        load_s=dt,
        source_path=str(source),
        describe=describe,
        uses=1,
    )
    log.info("Loaded pipeline %s in %.1f s (load %s)", model.name, dt, _CURRENT.load_id)
    return _CURRENT, False


def _load(model: ModelPlan):
    """(pipeline, the folder it was read from, seconds from_pretrained took), with one-line errors."""
    import torch

    try:  # validation saw the driver; torch may still see no GPU (a CPU build, a broken driver)
        check_device("device", model.device)
    except ArgumentError as e:
        raise ConfigError([core_problem(e)]) from None

    from ideogram4 import Ideogram4Pipeline, ModelConfig

    source, configs = model.source, model.model_configs()
    if model.kind == "tiny":
        from ideogram4.tiny import ensure_tiny_checkpoint

        source = ensure_tiny_checkpoint(model.tiny_cache_dir(), layout=model.conf.layout)
    elif model.conf.tiny_variants:
        source, configs = tiny_variant_sources(model, configs)
    kwargs = dict(model.pipeline_options(), torch_dtype=getattr(torch, model.dtype))
    if configs:
        kwargs["model_configs"] = [ModelConfig(**c) for c in configs]
    if model.conf.tiny_variants:
        kwargs["tokenizer_source"] = None
    log.info("Loading pipeline %s from %s (%s on %s)", model.name, source, model.dtype, model.device)
    t0 = time.perf_counter()
    try:
        pipe = Ideogram4Pipeline.from_pretrained(source, **kwargs)
    except CheckpointError as e:
        if model.kind != "tiny":
            raise
        first = str(e).split(" (")[0].split(". ")[0]  # what is wrong, without the hub's re-download advice
        raise CheckpointError(
            f"the tiny model cache is damaged ({first}). Fix: delete {source}; it is rebuilt on the next run"
        ) from e
    except Exception as e:
        if is_oom(e):
            raise RuntimeError(f"Loading {model.name} failed: {memory_advice(e)}") from e
        raise
    return pipe, source, time.perf_counter() - t0


def tiny_stand_in(field_name: str, source: str, cache_dir: str | None) -> str:
    """The local tiny build for a hub source under model.tiny_variants=true (a local path stays)."""
    from ideogram4.tiny import TINY_BASE_LAYOUTS
    from ideogram4.tiny import tiny_stand_in as build

    if os.path.exists(source):
        return source
    local = build(source, cache_dir)
    if local is None:
        known = [*TINY_BASE_LAYOUTS, *(v.repo for v in spec.VARIANTS.values())]
        what = "has no tiny stand-in (model.tiny_variants=true replaces hub sources by tiny builds)"
        raise ConfigError([problem(field_name, source, what, f"use one of {', '.join(known)}, or a local folder")])
    return local


def tiny_variant_sources(model: ModelPlan, configs: list[dict]) -> tuple[str, list[dict]]:
    """(base source, component configs) with every hub source replaced by its tiny stand-in."""
    cache = model.tiny_cache_dir()
    base = tiny_stand_in("model.source", model.source, cache)
    swapped = []
    for c in configs:
        where = c.get("path") or c["model_id"]
        swapped.append(
            {"path": tiny_stand_in(f"model.{c['component']}.source", where, cache), "component": c["component"]}
        )
    return base, swapped


def lora_specs_to_load(plan) -> dict[str, dict]:
    """The job's LoRA specs for Ideogram4Pipeline.sync_loras; with model.tiny_variants=true, hub files
    are replaced by their tiny stand-ins."""
    specs = plan.gen.lora_specs()
    if not plan.model.conf.tiny_variants:
        return specs
    cache_dir = plan.model.tiny_cache_dir()
    return {
        name: dict(s, source=tiny_stand_in(f"lora.{i}.path", s["source"], cache_dir), revision=None, weight_name=None)
        for i, (name, s) in enumerate(specs.items())
    }


def release() -> None:
    global _CURRENT
    _CURRENT = None
    gc.unfreeze()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass
