"""gpu_check sections that time the denoising loop: ours bf16, diffusers bf16, ours fp8 matmul, ours compiled.

Every variant runs `warmup + timed` steps of the same loop from the same noise with the same random text
features: per step one conditional pass (T text + N image tokens) and one unconditional pass (N image
tokens), guidance weight on every step, Euler update. Ours is timed at the transformer level (the loop
below is the pipeline's sampling loop without text encoding and decoding); diffusers runs through its
own `Ideogram4Pipeline.__call__` with `encode_prompt` replaced by the same features, as shipped
otherwise (text padded to 2048 tokens, masked attention). Per-step times are the intervals between
end-of-step marks after the warm-up steps (CUDA events on the GPU, perf_counter on the CPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import _common as C
import torch

from ideogram4 import flops, loading, sampling
from ideogram4.checks import check_load_options
from ideogram4.models.quant import fp8_matmul_supported, fp8_paths
from ideogram4.models.transformer import Ideogram4Config, build_layout

IMAGE_STEPS = 48  # the official step count: s/image is the median step time x 48
DIFFUSERS_PAD = flops.DIFFUSERS_MAX_SEQUENCE_LENGTH
# Agreement gates on the final latents (cosine of latents - noise; max abs difference in fp32).
TOLERANCE = {
    "same_maths_fp32_max_abs": 1e-4,  # ours vs diffusers, compiled vs eager, in fp32 (--small)
    "same_maths_bf16_cos": 0.999,  # the same in bf16 (different kernels round differently)
    "fp8_cos": 0.99,  # fp8 weights and activations vs our bf16 (quantisation error on random weights)
}


@dataclass
class DitBench:
    """One configuration, shared by every variant; keeps the bf16 DiTs while later sections need them."""

    device: str
    dtype: torch.dtype
    config: Ideogram4Config
    resolution: int
    text_tokens: int
    warmup: int
    timed: int
    guidance: float
    seed: int = 0
    latents: dict = field(default_factory=dict)  # variant -> final latents (CPU, fp32)
    cond: torch.nn.Module | None = None
    uncond: torch.nn.Module | None = None
    fp8: tuple | None = None  # the fp8 twins, kept from ours_fp8_matmul for its fast-accumulation rerun

    def __post_init__(self):
        self.clock = C.Clock(self.device)
        self.steps = self.warmup + self.timed
        self.weights = [self.guidance] * self.steps
        res = self.resolution
        self.times = sampling.timesteps(self.steps, res, res, mu=0.0, std=1.5, final_step="clean")
        self.grid = res // 16
        g = torch.Generator().manual_seed(self.seed)
        self.noise = torch.randn((1, self.grid**2, self.config.in_channels), generator=g)
        # Random text features of the text encoder's width (13 tapped layers x hidden size).
        features = torch.randn((1, self.text_tokens, self.config.llm_features_dim), generator=g)
        self.text = features.to(self.device, self.dtype)

    @property
    def cuda(self) -> bool:
        return self.clock.cuda

    def setup(self) -> dict:
        return {
            "resolution": self.resolution,
            "image_tokens": self.grid**2,
            "text_tokens": self.text_tokens,
            "guidance": f"on: weight {self.guidance} every step (cond + uncond pass per step)",
            "steps": {"warmup": self.warmup, "timed": self.timed},
            "dtype": str(self.dtype).replace("torch.", ""),
            "dit": {**vars(self.config), "params": flops.param_count(self.config)},
            "text_features": f"random N(0, 1), shape (1, {self.text_tokens}, {self.config.llm_features_dim})",
            "schedule": "sampling.timesteps(mu=0, std=1.5, final_step='clean'): the one diffusers uses",
            "tolerance": TOLERANCE,
        }


# --- the loops -------------------------------------------------------------------------------------


def ours_loop(bench: DitBench, cond, uncond, marks: list, text_len=None, step_begin=None) -> torch.Tensor:
    """The pipeline's loop at the transformer level. `text_len`: text rows padded to this (CUDA-graph
    buckets, left padding masked out); `step_begin`: run first in every step (CUDA graphs' step mark)."""
    dev, dt, n = bench.device, bench.dtype, bench.grid
    cfg = bench.config
    cond_layout = build_layout(cfg, [bench.text_tokens], n, n, 1, dev, dt, text_len)
    uncond_layout = build_layout(cfg, None, n, n, 1, dev, dt)
    text = bench.text
    if text_len is not None and text_len > bench.text_tokens:
        text = torch.nn.functional.pad(text, (0, 0, text_len - bench.text_tokens, 0))  # left padding
    for net, layout, features in ((cond, cond_layout, text), (uncond, uncond_layout, None)):
        if getattr(net, "dynamic_sequence", False):
            layout.mark_dynamic(*([features] if features is not None else []))
    times = bench.times.to(dev)  # once: a per-step host-to-device copy would sync the stream
    z = bench.noise.to(dev, torch.float32)
    for i, w in enumerate(bench.weights):
        if step_begin is not None:
            step_begin()
        t = times[i].expand(1)
        v = cond(z, t, cond_layout, text)
        if w != 1.0:
            v = sampling.guide(v, uncond(z, t, uncond_layout, None), w)
        z = sampling.euler_step(z, v, times[i], times[i + 1])
        marks.append(bench.clock.mark())
    return z


def measure(bench: DitBench, name: str, run, nets: list) -> dict:
    """Run `run(marks)` once with pass timers on `nets`; the summary a variant reports."""
    clock, cuda = bench.clock, bench.cuda
    timers = [C.PassTimer(net, clock) for net in nets]
    resident = None
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
    marks: list = []
    compile0 = loading.COMPILE_CLOCK.seconds()
    start, t0 = clock.mark(), time.perf_counter()
    try:
        latents = run(marks)
        clock.sync()
    finally:
        for t in timers:
            t.remove()
    wall = time.perf_counter() - t0
    compile_s = loading.COMPILE_CLOCK.seconds() - compile0
    if len(marks) != bench.steps:
        raise RuntimeError(f"{name}: {len(marks)} step marks for {bench.steps} steps")
    w = bench.warmup
    per_step = C.step_intervals(marks[w - 1 :], clock)
    cond_s, uncond_s = (timer.seconds()[w:] for timer in timers)
    bench.latents[name] = latents.float().cpu()
    stats = C.asdict(C.Stats.of(per_step))
    stats["max"] = max(per_step)
    peak = torch.cuda.max_memory_allocated() if cuda else None
    weights = C.tensor_bytes(*nets)
    return {
        "status": "done",
        "dtype": str(bench.dtype).replace("torch.", ""),
        "per_step_s": stats,
        "s_per_image_48": stats["median"] * IMAGE_STEPS,
        "cond_pass_s_median": C.Stats.of(cond_s).median,
        "uncond_pass_s_median": C.Stats.of(uncond_s).median,
        "first_step_s": clock.seconds(start, marks[0]),  # warm-up: cuBLAS/autotune/compile
        "compile_s": compile_s,  # torch.compile's work (and CUDA-graph recording) inside the warm-up
        "call_wall_s": wall,
        "weights_bytes": weights,
        "peak_memory_bytes": peak,  # the process: other variants' weights stay resident meanwhile
        "peak_above_resident_bytes": peak - resident if cuda else None,
        "peak_alone_estimate_bytes": weights + peak - resident if cuda else None,  # this variant's weights only
        "peak_memory_reason": None if cuda else "CUDA only (the CPU has no allocator peak counter)",
    }


def one_cond_pass(bench: DitBench, net):
    n = bench.grid
    layout = build_layout(net.config, [bench.text_tokens], n, n, 1, bench.device, bench.dtype)
    z, t = bench.noise.to(bench.device), bench.times[:1].to(bench.device)
    return lambda: net(z, t, layout, bench.text)


# --- variants ----------------------------------------------------------------------------------------


def ours_bf16(bench: DitBench) -> dict:
    t0 = time.perf_counter()
    bench.cond = C.random_dit(bench.config, bench.device, bench.dtype, bench.seed)
    bench.uncond = C.random_dit(bench.config, bench.device, bench.dtype, bench.seed + 1)
    bench.clock.sync()
    build_s = time.perf_counter() - t0
    cond, uncond = bench.cond, bench.uncond
    out = measure(bench, "ours_bf16", lambda marks: ours_loop(bench, cond, uncond, marks), [cond, uncond])
    out["build_s"] = build_s
    out["attention_kernels"] = C.attention_kernels(one_cond_pass(bench, cond), bench.cuda)
    return out


def diffusers_bf16(bench: DitBench) -> dict:
    from bench_gpu import FeaturePatch
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers import Ideogram4Pipeline as DiffusersPipeline

    patch = FeaturePatch()
    patch.features = bench.text
    pipe = DiffusersPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=None,
        text_encoder=None,
        tokenizer=None,
        transformer=C.diffusers_twin(bench.cond),
        unconditional_transformer=C.diffusers_twin(bench.uncond),
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.encode_prompt = patch.diffusers

    def run(marks, steps=bench.steps):
        def on_step(_pipe, i, t, kwargs):
            marks.append(bench.clock.mark())
            return {}

        return pipe(
            "gpu_check",
            height=bench.resolution,
            width=bench.resolution,
            num_inference_steps=steps,
            guidance_schedule=bench.weights[:steps],
            mu=0.0,
            std=1.5,
            latents=bench.noise.clone(),
            output_type="latent",
            max_sequence_length=DIFFUSERS_PAD,
            callback_on_step_end=on_step,
        ).images

    # The pipeline and its padded buffers go when this returns (gpu_check frees memory after each section).
    out = measure(bench, "diffusers_bf16", run, [pipe.transformer, pipe.unconditional_transformer])
    out["attention_kernels"] = C.attention_kernels(lambda: run([], steps=1), bench.cuda)
    out["weights_shared_with_ours"] = True
    return out


def ours_fp8_matmul(bench: DitBench) -> dict:
    if not fp8_matmul_supported(bench.device):
        return {"status": "skipped", "reason": "fp8 tensor cores need CUDA compute capability >= 8.9"}
    # +1 byte per Linear parameter while the twins live (kept for ours_fp8_matmul_fast_accum).
    cond, uncond = C.fp8_twin(bench.cond, "fp8_matmul"), C.fp8_twin(bench.uncond, "fp8_matmul")
    bench.fp8 = (cond, uncond)
    out = measure(bench, "ours_fp8_matmul", lambda marks: ours_loop(bench, cond, uncond, marks), [cond, uncond])
    out["fp8_paths"] = fp8_paths(cond)
    out["fast_accum"] = False
    out["weights_bytes_note"] = "fp8 Linears; norms, embeddings and biases shared with ours_bf16"
    return out


def compile_options(bench: DitBench, backend: str, mode: str | None):
    """The loader's options for this compile (the pipeline's `loading.compile_nets` does the work)."""
    flags = dict(load_unconditional=True, offload_text_encoder=False, offload_transformers=False, vae_tiling=False)
    return check_load_options(bench.dtype, bench.device, "dequantize_per_call", backend, mode, **flags)


def uncompile(*nets) -> None:
    """Back to eager, in place (later sections time or reuse the same DiTs)."""
    for net in nets:
        net._compiled_call_impl = None
        net.dynamic_sequence = False
        for block in net.layers:
            block._compiled_call_impl = None


def ours_compiled(bench: DitBench, backend: str, mode: str | None) -> dict:
    """What from_pretrained(compile_blocks=...) does without CUDA graphs: each block compiled, one graph
    shared by all 68 blocks, dynamic in the sequence length only (cond T + N and uncond N share it)."""
    cond, uncond = bench.cond, bench.uncond
    scope = loading.compile_nets([cond, uncond], compile_options(bench, backend, mode))
    try:
        out = measure(bench, "ours_compiled", lambda marks: ours_loop(bench, cond, uncond, marks), [cond, uncond])
    finally:
        uncompile(cond, uncond)
    out["compile"] = {"backend": backend, "mode": mode, "scope": scope, "dynamic": "sequence length"}
    out["first_step_note"] = "first_step_s includes compile_s (the block graph, compiled once for both lengths)"
    return out


# --- agreement, ratios, MFU --------------------------------------------------------------------------


def agreement(bench: DitBench, a: str, b: str, fp8: bool = False) -> dict:
    """A check entry: do the final latents of variants `a` and `b` agree within the stated tolerance?"""
    if a not in bench.latents or b not in bench.latents:
        missing = [v for v in (a, b) if v not in bench.latents]
        return {"ok": None, "value": None, "reason": f"no latents from {missing}"}
    x, y = bench.latents[a], bench.latents[b]
    cos = C.cosine(x - bench.noise, y - bench.noise)
    max_abs = (x - y).abs().max().item()
    finite = bool(torch.isfinite(x).all() and torch.isfinite(y).all())
    if fp8:
        tol, ok = f"cosine >= {TOLERANCE['fp8_cos']}", cos >= TOLERANCE["fp8_cos"]
    elif bench.dtype == torch.float32:
        tol, ok = f"max abs <= {TOLERANCE['same_maths_fp32_max_abs']}", max_abs <= TOLERANCE["same_maths_fp32_max_abs"]
    else:
        tol, ok = f"cosine >= {TOLERANCE['same_maths_bf16_cos']}", cos >= TOLERANCE["same_maths_bf16_cos"]
    return {
        "ok": bool(ok and finite),
        "value": {"cosine": cos, "max_abs": max_abs, "finite": finite},
        "tolerance": tol,
        "detail": f"final latents after {bench.steps} steps, {a} vs {b} (cosine of latents - noise)",
        "reason": None,
    }


def _median(variants: dict, name: str) -> float | None:
    v = variants.get(name) or {}
    return (v.get("per_step_s") or {}).get("median") if v.get("status") == "done" else None


def ratios(variants: dict, on_gpu: bool) -> dict:
    """Speed-ups from the per-step medians (> 1: the first named is faster), with the issue's goals."""
    out = {}
    for key, fast, slow, goal in (
        ("ours_vs_diffusers", "ours_bf16", "diffusers_bf16", 1.5),
        ("fp8_vs_bf16", "ours_fp8_matmul", "ours_bf16", 1.4),
        ("fp8_fast_accum_vs_bf16", "ours_fp8_matmul_fast_accum", "ours_bf16", 1.4),
        ("compiled_vs_eager", "ours_compiled", "ours_bf16", None),
        ("reduce_overhead_vs_eager", "ours_reduce_overhead", "ours_bf16", None),
        ("offload_streamed_vs_resident", "ours_offload_streamed", "ours_bf16", None),  # < 1: the cost
    ):
        a, b = _median(variants, fast), _median(variants, slow)
        entry = {"value": b / a if a and b else None, "definition": f"{slow} / {fast} per-step median", "goal": goal}
        if entry["value"] is None:
            entry["reason"] = f"needs both {fast} and {slow} measured"
        entry["meets_goal"] = (entry["value"] >= goal) if (goal and on_gpu and entry["value"]) else None
        if goal and not on_gpu:
            entry["goal_note"] = "goals are for the full-size model on an H100; this run is not"
        out[key] = entry
    return out


def mfu(bench: DitBench, variants: dict, device_name: str | None) -> dict:
    """Model FLOPs utilisation per variant: exact-length FLOPs per step (flops.py) / (median step x peak)."""
    cfg, res, T = bench.config, bench.resolution, bench.text_tokens
    useful = flops.image_flops(cfg, T, res, res, [bench.guidance]).total
    padded = flops.image_flops(cfg, T, res, res, [bench.guidance], exact=False).total
    peak = flops.peak_flops(device_name or "") if bench.cuda else None
    peak_fp8 = flops.peak_flops(device_name or "", "fp8") if bench.cuda else None
    out = {
        "useful_flops_per_step": useful,
        "diffusers_flops_per_step": padded,
        "peak_flops_bf16_dense": peak,
        "peak_source": f"ideogram4.flops.peak_flops({device_name!r}, 'bf16'): dense, no sparsity" if peak else None,
        "goal": 0.6,
        "per_variant": {},
    }
    if peak is None:
        out["reason"] = "CPU run: no dense bf16 peak" if not bench.cuda else f"no peak known for {device_name!r}"
    for name in variants:
        t = _median(variants, name)
        if t is None:
            continue
        entry = {"achieved_tflops": useful / t / 1e12, "mfu": flops.mfu(useful, t, peak) if peak else None}
        if name == "diffusers_bf16" and peak:
            entry["hfu_padded_flops"] = flops.mfu(padded, t, peak)
        if name.startswith("ours_fp8_matmul") and peak_fp8:
            entry["mfu_vs_fp8_peak"] = flops.mfu(useful, t, peak_fp8)
        out["per_variant"][name] = entry
    return out
