"""CPU benchmark: what a runtime LoRA costs per denoising step (issue 10), on the medium model.

    python bench/bench_lora.py                                   # medium, rank 32, 512^2, 1 thread
    python bench/bench_lora.py --rank 64 --repeats 3 --out bench/out/lora_r64.json

One pipeline (fp32, our original-layout checkpoint with the medium DiT of `_common.MEDIUM_DIT`), one
rank-`--rank` LoRA on every trained target of every layer (attention qkv/o, feed_forward w1/w2/w3,
adaln_modulation), written as an ai-toolkit file and loaded with `load_lora`. Variants, timed
alternately (A B C D A B C D ...), same noise and prompt:
- base: no LoRA;
- runtime: the LoRA as a low-rank path on the conditional transformer (the default target);
- runtime both: the same on both transformers;
- merged: the LoRA folded into the conditional transformer's weights (`merge=True`).
Correctness gate first: runtime and merged final latents agree within 1e-4 of their scale, and the LoRA
moves them. Per-step time = median of the step-to-step intervals (first step of each call left out),
as in bench_cpu.py. Also reported: the analytic FLOP overhead of the low-rank path (per token:
2 r (in + out) beside 2 in out), for this model and for the full-size one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402

from ideogram4.models.transformer import Ideogram4Config  # noqa: E402

TARGETS = ("attention.qkv", "attention.o", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3", "adaln_modulation")


def lora_shapes(config: Ideogram4Config) -> dict[str, tuple[int, int]]:
    """(out, in) of each LoRA-targeted Linear of one block."""
    d, f = config.emb_dim, config.intermediate_size
    return {
        "attention.qkv": (3 * d, d),
        "attention.o": (d, d),
        "feed_forward.w1": (f, d),
        "feed_forward.w2": (d, f),
        "feed_forward.w3": (f, d),
        "adaln_modulation": (4 * d, config.adaln_dim),
    }


def flop_overhead(config: Ideogram4Config, rank: int) -> float:
    """Low-rank FLOPs / base FLOPs of the targeted token-wise Linears (adaLN runs once per sample, not
    per token, so it is left out of both sides: it is noise at any sequence length)."""
    shapes = {k: v for k, v in lora_shapes(config).items() if k != "adaln_modulation"}
    base = sum(o * i for o, i in shapes.values())
    low_rank = sum(rank * (o + i) for o, i in shapes.values())
    return low_rank / base


def write_lora(path: Path, config: Ideogram4Config, rank: int, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config.num_layers):
        for target, (out_f, in_f) in lora_shapes(config).items():
            key = f"diffusion_model.layers.{layer}.{target}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, in_f, generator=g) / in_f**0.5
            tensors[f"{key}.lora_B.weight"] = torch.randn(out_f, rank, generator=g) * 0.02
    save_file(tensors, str(path))
    return path


class CpuClock:
    """CPU time of this thread: with one torch thread all the work runs here, and time spent
    descheduled (other jobs on a shared machine) does not count. Same interface as `_common.Clock`."""

    def mark(self) -> float:
        return time.thread_time()

    def seconds(self, a: float, b: float) -> float:
        return b - a


def run(pipe, prompt, res, schedule, noise, clocks, marks):
    """One call; at the end of each step, every clock in `clocks` marks into its list in `marks`."""
    t0 = time.perf_counter()
    out = pipe.generate(
        [prompt],
        None,
        height=res,
        width=res,
        num_inference_steps=len(schedule),
        guidance_schedule=schedule,
        final_step="clean",
        latents=noise.clone(),
        output_type="latent",
        progress=False,
        step_callback=lambda i, n: [m.append(c.mark()) for c, m in zip(clocks, marks)],
    )
    return out.latents, time.perf_counter() - t0


VARIANTS = {  # name -> load_lora kwargs (None: no LoRA)
    "base": None,
    "runtime": dict(target="transformer"),
    "runtime both": dict(target="both"),
    "merged": dict(target="transformer", merge=True),
}


def gate(pipe, lora, prompt, res, schedule, noise, clock, tol) -> dict:
    latents = {}
    for variant, kw in VARIANTS.items():
        if kw is not None:
            pipe.load_lora(lora, scale=1.0, name="bench", **kw)
        latents[variant] = run(pipe, prompt, res, schedule, noise, [clock], [[]])[0]
        pipe.unload_lora()
    diff = (latents["runtime"] - latents["merged"]).abs().max().item()
    effect = (latents["runtime"] - latents["base"]).abs().max().item()
    bound = tol * max(1.0, latents["merged"].abs().max().item())
    ok = diff < bound and effect > 100 * bound
    print(
        f"gate: runtime vs merged {diff:.2e} (tol {bound:.2e}), LoRA effect {effect:.2e} -> {'PASS' if ok else 'FAIL'}"
    )
    return {"gate_pass": ok, "runtime_vs_merged": diff, "lora_effect": effect}


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def low_rank_timers(pipe, clock) -> list:
    """A pass timer on every low-rank path (each is called once per pass of its Linear)."""
    from ideogram4.models.lora import lora_path

    nets = [n for n in (pipe.transformer, pipe.unconditional_transformer) if n is not None]
    paths = [p for net in nets for m in net.modules() if (p := lora_path(m)) is not None]
    return [C.PassTimer(p, clock) for p in paths]


def time_variants(pipe, lora, prompt, res, schedule, noise, clock, repeats) -> dict[str, C.Record]:
    """Rounds of all variants, in a rotated order each round (no variant always runs first). Per call:
    the median step interval and the median conditional-transformer pass (forward hooks), in wall time
    and in this thread's CPU time, kept per round so each variant is compared with the base call of
    its own round (paired). Also times load_lora (the file is in the read cache by then) and
    set_lora_scale (a merged LoRA is re-merged from the kept weights)."""
    cpu = CpuClock()
    records = {v: C.Record(v) for v in VARIANTS}
    timers = {"wall": C.PassTimer(pipe.transformer, clock), "cpu": C.PassTimer(pipe.transformer, cpu)}
    names = list(VARIANTS)
    for r in range(repeats):
        for variant in names[r % len(names) :] + names[: r % len(names)]:
            kw, rec = VARIANTS[variant], records[variant]
            if kw is not None:
                load_s = timed(lambda kw=kw: pipe.load_lora(lora, scale=1.0, name="bench", **kw))
                rec.extra.setdefault("load_lora_s", []).append(load_s)
            marks = {"wall": [], "cpu": []}
            for t in timers.values():
                t.reset()
            path_timers = low_rank_timers(pipe, cpu)
            _, call_s = run(pipe, prompt, res, schedule, noise, [clock, cpu], [marks["wall"], marks["cpu"]])
            if path_timers:  # CPU seconds inside the low-rank paths, per step
                rec.extra.setdefault("low_rank_cpu_s", []).append(
                    sum(sum(t.seconds()) for t in path_timers) / len(schedule)
                )
                for t in path_timers:
                    t.remove()
            rec.extra.setdefault("step_cpu_s", []).extend(C.step_intervals(marks["cpu"], cpu))
            rec.per_step_s += C.step_intervals(marks["wall"], clock)
            rec.cond_pass_s += timers["wall"].seconds()
            rec.call_s.append(call_s)
            for kind, c in (("wall", clock), ("cpu", cpu)):
                rec.extra.setdefault(f"round_step_{kind}_s", []).append(
                    statistics.median(C.step_intervals(marks[kind], c))
                )
                rec.extra.setdefault(f"round_cond_{kind}_s", []).append(statistics.median(timers[kind].seconds()))
            if kw is not None:
                rec.extra.setdefault("set_lora_scale_s", []).append(timed(lambda: pipe.set_lora_scale("bench", 0.5)))
                pipe.unload_lora()
    for t in timers.values():
        t.remove()
    return records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="medium", choices=list(C.SIZES))
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--prompt-tokens", type=int, default=300)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.steps < 2:
        ap.error("--steps must be >= 2 (per-step time is measured between steps)")
    return C.run_with_threads(args.threads, bench, args)


def bench(args) -> int:
    from ideogram4 import Ideogram4Pipeline

    config = C.SIZES[args.size]
    env = C.environment("cpu")
    env["load_average_start"] = C.load_average()
    with tempfile.TemporaryDirectory(prefix="ideogram4-bench-lora-") as tmp:
        folder = C.build_checkpoint(Path(tmp) / "original", "original", config)
        pipe = Ideogram4Pipeline.from_pretrained(str(folder), torch_dtype=torch.float32, device="cpu")
        lora = write_lora(Path(tmp) / "lora.safetensors", config, args.rank)
        prompt, n_tokens = C.prompt_of_tokens(pipe.tokenizer, args.prompt_tokens)
        res, schedule = args.resolution, [7.0] * (args.steps - 1) + [3.0]
        noise = torch.randn((1, (res // 16) ** 2, 128), generator=torch.Generator().manual_seed(0))
        clock = C.Clock("cpu")
        print(
            f"== {args.size}: DiT {config.emb_dim}x{config.num_layers} layers, {res}^2, prompt {n_tokens} tokens, "
            f"LoRA rank {args.rank} on {len(TARGETS)} targets x {config.num_layers} layers, {args.steps} steps, "
            f"{args.repeats} repeats, {torch.get_num_threads()} threads"
        )
        result = gate(pipe, lora, prompt, res, schedule, noise, clock, args.tol)
        if result["gate_pass"]:
            records = time_variants(pipe, lora, prompt, res, schedule, noise, clock, args.repeats)
            result["results"] = summarise(records)
    result.update(
        size=args.size,
        rank=args.rank,
        resolution=res,
        prompt_tokens=n_tokens,
        steps=args.steps,
        repeats=args.repeats,
        threads=torch.get_num_threads(),
        flop_overhead_this_model=flop_overhead(config, args.rank),
        flop_overhead_full_model=flop_overhead(Ideogram4Config(), args.rank),
    )
    print(
        f"analytic low-rank FLOP overhead of the targeted Linears at rank {args.rank}: "
        f"{result['flop_overhead_this_model']:.2%} here, {result['flop_overhead_full_model']:.2%} on the full model"
    )
    env["load_average_end"] = C.load_average()
    print(f"load average (1/5/15 min) start {env['load_average_start']}, end {env['load_average_end']}")
    C.write_json(args.out, {"environment": env, "results": [result]})
    return 0 if result["gate_pass"] else 2


def paired(records: dict[str, C.Record], variant: str, key: str) -> dict:
    """Per-round ratio variant / base of the round medians `key`: median and range over the rounds."""
    ratios = sorted(a / b for a, b in zip(records[variant].extra[key], records["base"].extra[key]))
    return {"median": statistics.median(ratios), "min": ratios[0], "max": ratios[-1], "n": len(ratios)}


def summarise(records: dict[str, C.Record]) -> dict:
    summary = {}
    for variant, rec in records.items():
        s = rec.summary()
        for k in ("load_lora_s", "set_lora_scale_s"):
            if k in s:
                s[k] = C.asdict(C.Stats.of(s[k]))
        s["paired_vs_base"] = {
            f"{what}_{kind}": paired(records, variant, f"round_{what}_{kind}_s")
            for what in ("step", "cond")
            for kind in ("wall", "cpu")
        }
        s["step_cpu"] = C.asdict(C.Stats.of(rec.extra["step_cpu_s"]))
        if "low_rank_cpu_s" in rec.extra:
            s["low_rank_cpu_per_step"] = C.asdict(C.Stats.of(rec.extra["low_rank_cpu_s"]))
        summary[variant] = s
    base_cpu = summary["base"]["step_cpu"]["median"]
    print(
        f"{'':13s} {'wall/step':>10s} {'CPU/step med (min)':>19s} {'low-rank CPU/step':>18s}   paired vs base: wall | CPU"
    )
    for variant, s in summary.items():
        p, c = s["paired_vs_base"], s["step_cpu"]
        low = s.get("low_rank_cpu_per_step", {}).get("median")
        low_cell = f"{low * 1e3:.1f} ms ({low / base_cpu:.1%})" if low is not None else ""
        cells = " | ".join(
            f"{p[k]['median']:.3f} ({p[k]['min']:.2f}-{p[k]['max']:.2f})" for k in ("step_wall", "step_cpu")
        )
        print(
            f"{variant:13s} {s['per_step']['median'] * 1e3:7.1f} ms {c['median'] * 1e3:8.1f} ({c['min'] * 1e3:.0f}) ms "
            f"{low_cell:>18s}   {cells}"
        )
    return summary


if __name__ == "__main__":
    sys.exit(main())
