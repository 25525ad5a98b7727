"""GPU benchmark (performance.md section 4): ours (bf16, fp8) vs diffusers' Ideogram4Pipeline, one process.

    python bench/bench_gpu.py                                   # full protocol matrix (long: ~1 h on H100)
    python bench/bench_gpu.py --resolutions 1024 --cfg on --repeats 5 --out bench/out/gpu_1024.json
    python bench/bench_gpu.py --small                           # CPU, tiny model, seconds (CI runs this)

Protocol:
- Weights: full-size random DiTs (cond + uncond, 9.279 B each; N(0, 0.02), norms 1 + N(0, 0.1)),
  built directly on the device. diffusers' Ideogram4Transformer2DModel x2 hold the SAME tensors
  (to_q/to_k/to_v are row views of the fused qkv: no copy). fp8: every Linear quantised as the
  release is (e4m3 + per-row absmax/448 scale), non-Linear tensors shared.
- Text encoder bypassed: both pipelines get the same random T x 53248 features (ours through its
  prompt cache hook, diffusers through `encode_prompt`, which still pads to 2048 and builds its mask).
- Same scheduler settings (mu 0, std 1.5, last step to t = 1 as diffusers does) and the same noise.
- Per configuration: --warmup calls of every variant (the first is reported as cold start), then the
  correctness gate on the warm-up latents (bf16: cosine >= 0.999 vs diffusers; fp8: cosine vs our
  bf16 reported, gated at >= --fp8-cos), then --repeats calls alternating the variants (A B C A B C).
- Timing: CUDA events around every transformer pass (forward hooks) and at every step end; the
  whole call by wall clock after synchronize. Peak memory per variant (reset before each call).
- MFU = exact-length matmul FLOPs (ideogram4.flops) / (denoising GPU time x peak); for diffusers
  also HFU with its padded FLOPs. fp8 runs are reported against both the bf16 and the fp8 peak.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402

from ideogram4 import flops  # noqa: E402
from ideogram4.models.quant import fp8_matmul_supported, fp8_paths  # noqa: E402
from ideogram4.models.transformer import Ideogram4Config  # noqa: E402

DIFFUSERS_PAD = flops.DIFFUSERS_MAX_SEQUENCE_LENGTH


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--small",
        action="store_true",
        help="tiny model on the CPU in fp32 at 64x64, 3 steps: exercises every code path in seconds",
    )
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, choices=["bf16", "fp32"])
    ap.add_argument("--resolutions", default=None, help="comma list of square sides (default 1024,2048)")
    ap.add_argument("--text-tokens", default=None, help="comma list of T (default 300)")
    ap.add_argument("--cfg", default="on,off", help="on: guidance every step (48+48 passes); off: weight 1.0 (48)")
    ap.add_argument("--variants", default="ours-bf16,ours-fp8,diffusers-bf16")
    ap.add_argument("--fp8-mode", default="fp8_matmul", choices=["fp8_matmul", "dequantize_per_call"])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--fp8-cos", type=float, default=0.99, help="gate for fp8 vs our bf16 (cosine of final latents)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON results")
    args = ap.parse_args(argv)
    small = args.small
    args.device = args.device or ("cpu" if small or not torch.cuda.is_available() else "cuda")
    args.dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("fp32" if small else "bf16")]
    args.resolutions = [int(r) for r in (args.resolutions or ("64" if small else "1024,2048")).split(",")]
    args.text_tokens = [int(t) for t in (args.text_tokens or ("12" if small else "300")).split(",")]
    args.cfg = [c.strip() for c in args.cfg.split(",")]
    args.variants = [v.strip() for v in args.variants.split(",")]
    args.steps = args.steps or (3 if small else 48)
    args.repeats = args.repeats or (2 if small else 5)
    args.config = C.tiny.TINY_DIT if small else Ideogram4Config()
    if args.steps < 2:
        ap.error("--steps must be >= 2")
    return args


# --- building ---------------------------------------------------------------------------------------


class FeaturePatch:
    """Same random text features for both pipelines, set per configuration (T changes)."""

    def __init__(self):
        self.features = None  # (1, T, F) in the compute dtype

    def ours(self, caption):
        return self.features, True

    def diffusers(self, prompt, grid_h, grid_w, max_sequence_length, device):
        from diffusers import Ideogram4Pipeline as DiffusersPipeline

        f = self.features.float()
        T, F = f.shape[1], f.shape[2]
        embeds = torch.zeros(1, max_sequence_length + grid_h * grid_w, F, device=device)
        embeds[:, max_sequence_length - T : max_sequence_length] = f.to(device)
        ids = DiffusersPipeline._prepare_ids([T], grid_h, grid_w, max_sequence_length, device)
        return (embeds, *ids)


def build_variants(args, patch: FeaturePatch) -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers import Ideogram4Pipeline as DiffusersPipeline

    from ideogram4 import Ideogram4Pipeline

    dev, dt, cfg = args.device, args.dtype, args.config
    t0 = time.perf_counter()
    cond = C.random_dit(cfg, dev, dt, args.seed)
    uncond = C.random_dit(cfg, dev, dt, args.seed + 1)
    variants = {}
    if "ours-bf16" in args.variants:
        p = Ideogram4Pipeline(cond, None, None, None, uncond, device=dev, dtype=dt)
        p.encode_prompt = patch.ours
        variants["ours-bf16"] = p
    if "ours-fp8" in args.variants:
        if not fp8_matmul_supported(dev) and args.fp8_mode == "fp8_matmul":
            print(f"warning: {dev} has no fp8 tensor cores; fp8_matmul may fail or be slow")
        p = Ideogram4Pipeline(
            C.fp8_twin(cond, args.fp8_mode), None, None, None, C.fp8_twin(uncond, args.fp8_mode), device=dev, dtype=dt
        )
        p.encode_prompt = patch.ours
        variants["ours-fp8"] = p
    if "diffusers-bf16" in args.variants:
        p = DiffusersPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(),
            vae=None,
            text_encoder=None,
            tokenizer=None,
            transformer=C.diffusers_twin(cond),
            unconditional_transformer=C.diffusers_twin(uncond),
        )
        p.set_progress_bar_config(disable=True)
        p.encode_prompt = patch.diffusers
        variants["diffusers-bf16"] = p
    unknown = set(args.variants) - set(variants)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}: use ours-bf16, ours-fp8, diffusers-bf16")
    build_s = time.perf_counter() - t0
    return variants, build_s


# --- running ----------------------------------------------------------------------------------------


def call(name, pipe, res, schedule, noise, clock, step_marks):
    if name.startswith("ours"):
        out = pipe.generate(
            ["bench"],
            [0],
            height=res,
            width=res,
            num_inference_steps=len(schedule),
            guidance_schedule=schedule,
            mu=0.0,
            std=1.5,
            final_step="clean",
            latents=noise.clone(),
            output_type="latent",
            progress=False,
            step_callback=lambda i, n: step_marks.append(clock.mark()),
        )
        return out.latents

    def on_step(_pipe, i, t, kwargs):
        step_marks.append(clock.mark())
        return {}

    return (
        pipe(
            "bench",
            height=res,
            width=res,
            num_inference_steps=len(schedule),
            guidance_schedule=schedule,
            mu=0.0,
            std=1.5,
            latents=noise.clone(),
            output_type="latent",
            max_sequence_length=DIFFUSERS_PAD,
            callback_on_step_end=on_step,
        )
        .images.float()
        .cpu()
    )


def sdpa_ops(name, pipe, res, noise, clock) -> list[str]:
    """The SDPA kernels one step actually dispatches (profiler op names)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if clock.cuda else [])
    with profile(activities=acts) as prof:
        call(name, pipe, res, [7.0, 7.0], noise, clock, [])
        clock.sync()
    names = {e.key for e in prof.key_averages()}
    ops = {n for n in names if n.startswith("aten::") and ("scaled_dot_product" in n or "attention" in n)}
    kernels = {
        n
        for n in names
        if not n.startswith("aten::") and any(s in n.lower() for s in ("flash", "fmha", "cudnn", "attention", "attn"))
    }
    return sorted(ops) + sorted(kernels)[:8]


def timed_call(name, pipe, res, schedule, noise, clock, timers, device):
    for t in timers:
        t.reset()
    marks: list = []
    resident = None
    if clock.cuda:
        clock.sync()
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
    clock.sync()
    start = clock.mark()
    t0 = time.perf_counter()
    latents = call(name, pipe, res, schedule, noise, clock, marks)
    clock.sync()
    wall = time.perf_counter() - t0
    gpu = clock.seconds(start, marks[-1]) if marks else wall
    # (peak, peak above what was resident before the call: the weights of every variant live in this process)
    peak = (
        (torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_allocated(device) - resident)
        if clock.cuda
        else None
    )
    return latents, wall, gpu, marks, peak


def run_config(args, variants, patch, res, T, cfg_on, clock, env) -> dict:
    cfg = args.config
    n_image = (res // 16) ** 2
    g = torch.Generator().manual_seed(args.seed + T)
    patch.features = torch.randn(1, T, cfg.llm_features_dim, generator=g).to(args.device, args.dtype)
    noise = torch.randn((1, n_image, cfg.in_channels), generator=torch.Generator().manual_seed(args.seed))
    if not cfg_on:
        schedule = [1.0] * args.steps
    elif args.steps > 3:  # the official shape: guidance 7, then 3 "polish" steps at 3
        schedule = [7.0] * (args.steps - 3) + [3.0] * 3
    else:
        schedule = [7.0] * args.steps
    tag = f"{res}^2 T={T} cfg={'on' if cfg_on else 'off'}"
    print(f"\n== {tag}: {n_image} image tokens, {args.steps} steps")

    timers = {
        k: (C.PassTimer(p.transformer, clock), C.PassTimer(p.unconditional_transformer, clock))
        for k, p in variants.items()
    }
    records = {k: C.Record(k) for k in variants}
    warm_latents, cold = {}, {}
    for k, p in variants.items():
        for w in range(args.warmup):
            lat, wall, *_ = timed_call(k, p, res, schedule, noise, clock, timers[k], args.device)
            if w == 0:
                cold[k] = wall
        warm_latents[k] = lat

    # correctness gate before any timing counts
    gate = {"pass": True}
    if "ours-bf16" in warm_latents and "diffusers-bf16" in warm_latents:
        a, b = warm_latents["ours-bf16"], warm_latents["diffusers-bf16"]
        gate["ours_vs_diffusers_cos"] = C.cosine(a - noise, b - noise)
        gate["ours_vs_diffusers_max_abs"] = (a - b).abs().max().item()
        if args.dtype == torch.float32:
            gate["pass"] &= gate["ours_vs_diffusers_max_abs"] < 1e-4
        else:
            gate["pass"] &= gate["ours_vs_diffusers_cos"] >= 0.999
    if "ours-fp8" in warm_latents and "ours-bf16" in warm_latents:
        gate["fp8_vs_bf16_cos"] = C.cosine(warm_latents["ours-fp8"] - noise, warm_latents["ours-bf16"] - noise)
        gate["fp8_pass"] = gate["fp8_vs_bf16_cos"] >= args.fp8_cos
        gate["pass"] &= gate["fp8_pass"]
    print("gate:", {k: (round(v, 6) if isinstance(v, float) else v) for k, v in gate.items()})
    if not gate["pass"]:
        print("GATE FAILED: timings not reported for this configuration")
        for pair in timers.values():
            for t in pair:
                t.remove()
        return {"resolution": res, "text_tokens": T, "cfg": cfg_on, "gate": gate}

    gpu_loop = {k: [] for k in variants}
    for _r in range(args.repeats):
        for k, p in variants.items():
            _, wall, gpu, marks, peak = timed_call(k, p, res, schedule, noise, clock, timers[k], args.device)
            rec = records[k]
            rec.call_s.append(wall)
            gpu_loop[k].append(gpu)
            rec.per_step_s += C.step_intervals(marks, clock)
            rec.cond_pass_s += timers[k][0].seconds()
            rec.uncond_pass_s += timers[k][1].seconds()
            if peak:
                rec.peak_bytes = max(rec.peak_bytes or 0, peak[0])
                rec.extra["peak_above_resident_bytes"] = max(rec.extra.get("peak_above_resident_bytes", 0), peak[1])
    for pair in timers.values():
        for t in pair:
            t.remove()

    useful = flops.image_flops(cfg, T, res, res, schedule, exact=True).total
    padded = flops.image_flops(cfg, T, res, res, schedule, exact=False).total
    peak_bf16 = flops.peak_flops(env.get("gpu", "")) if clock.cuda else None
    peak_fp8 = flops.peak_flops(env.get("gpu", ""), "fp8") if clock.cuda else None
    out = {
        "resolution": res,
        "text_tokens": T,
        "cfg": cfg_on,
        "steps": args.steps,
        "gate": gate,
        "useful_flops": useful,
        "diffusers_flops": padded,
        "variants": {},
    }
    for k, rec in records.items():
        s = rec.summary()
        s["cold_start_s"] = cold[k]
        s["loop_s"] = C.asdict(C.Stats.of(gpu_loop[k]))
        t_loop = s["loop_s"]["median"]
        s["achieved_tflops"] = useful / t_loop / 1e12
        if peak_bf16:
            s["mfu_bf16_peak"] = flops.mfu(useful, t_loop, peak_bf16)
            if k == "ours-fp8":
                s["mfu_fp8_peak"] = flops.mfu(useful, t_loop, peak_fp8)
            if k.startswith("diffusers"):
                s["hfu_bf16_peak"] = flops.mfu(padded, t_loop, peak_bf16)
        s["cv_flag"] = s["call"]["cv"] > 0.03
        s["fp8_paths"] = fp8_paths(variants[k].transformer) if k.startswith("ours") else None
        out["variants"][k] = s
    v = out["variants"]
    if "diffusers-bf16" in v:
        for k in v:
            v[k]["speedup_vs_diffusers"] = v["diffusers-bf16"]["call"]["median"] / v[k]["call"]["median"]
    if "ours-bf16" in v and "ours-fp8" in v:
        v["ours-fp8"]["speedup_vs_ours_bf16"] = v["ours-bf16"]["call"]["median"] / v["ours-fp8"]["call"]["median"]
    print_table(out)
    return out


def print_table(out: dict) -> None:
    print(
        f"{'variant':15s} {'s/image med':>11s} {'min':>8s} {'p90':>8s} {'CV':>6s} {'step ms':>8s} {'cond ms':>8s} "
        f"{'uncond ms':>9s} {'peak GiB':>8s} {'MFU':>6s} {'vs diff':>7s}"
    )
    for k, s in out["variants"].items():
        mfu = s.get("mfu_bf16_peak")
        peak = s["peak_bytes"] / 2**30 if s["peak_bytes"] else float("nan")
        print(
            f"{k:15s} {s['call']['median']:11.3f} {s['call']['min']:8.3f} {s['call']['p90']:8.3f} "
            f"{s['call']['cv'] * 100:5.1f}% {s['per_step']['median'] * 1e3:8.1f} {s['cond_pass']['median'] * 1e3:8.1f} "
            f"{s['uncond_pass']['median'] * 1e3:9.1f} {peak:8.2f} "
            f"{(f'{mfu * 100:5.1f}%' if mfu else '   n/a'):>6s} {s.get('speedup_vs_diffusers', float('nan')):7.2f}"
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    clock = C.Clock(args.device)
    env = C.environment(args.device)
    if clock.cuda:
        try:
            import subprocess

            env["nvidia_smi_clock_power"] = subprocess.run(
                ["nvidia-smi", "-q", "-d", "CLOCK,POWER"], capture_output=True, text=True, timeout=20
            ).stdout
        except Exception:  # noqa: BLE001
            pass
    print(
        f"device: {env.get('gpu', env['cpu'])} ({args.device}), dtype {args.dtype}, torch {env['torch']}, "
        f"diffusers {env['diffusers']}; DiT {args.config.emb_dim} x {args.config.num_layers} layers "
        f"({flops.param_count(args.config) / 1e9:.3f} B params)"
    )
    patch = FeaturePatch()
    variants, build_s = build_variants(args, patch)
    loaded = torch.cuda.memory_allocated(args.device) if clock.cuda else None
    print(f"built {list(variants)} in {build_s:.1f} s" + (f"; {loaded / 2**30:.1f} GiB resident" if loaded else ""))
    results = {
        "environment": env,
        "args": {k: str(v) for k, v in vars(args).items()},
        "build_s": build_s,
        "memory_after_load_bytes": loaded,
        "configs": [],
        "sdpa_ops": {},
    }

    # the SDPA kernels each pipeline actually uses (one 2-step call at the first resolution)
    res0 = args.resolutions[0]
    patch.features = torch.randn(1, args.text_tokens[0], args.config.llm_features_dim).to(args.device, args.dtype)
    noise0 = torch.randn(1, (res0 // 16) ** 2, args.config.in_channels)
    for k, p in variants.items():
        results["sdpa_ops"][k] = sdpa_ops(k, p, res0, noise0, clock)
    print("SDPA ops:", results["sdpa_ops"])

    ok = True
    for res in args.resolutions:
        for T in args.text_tokens:
            for cfg in args.cfg:
                r = run_config(args, variants, patch, res, T, cfg == "on", clock, env)
                ok &= r["gate"]["pass"]
                results["configs"].append(r)
                C.write_json(args.out, results)  # after every configuration: a long run keeps what it measured
    C.write_json(args.out, results)
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
