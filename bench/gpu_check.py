"""One-call GPU check: full-size random DiTs built on the GPU, timed against diffusers, fp8 (with and
without fast accumulation), compiled, streamed offload and the CUDA-graph mode, then the CUDA-only
behaviours (noise, peak memory, offload, no host sync in the loop, nf4, VAE tiling, regional compile).

    python bench/gpu_check.py                          # one H100/H200, <= 8 min from a cold start
    python bench/gpu_check.py --small --out /tmp/gc    # the same sections on the CPU, tiny sizes (CI)

Writes DIR/gpu_check.json and DIR/gpu_check.md (default DIR: bench/out/gpu_check) after every section,
so a run cut short still leaves its numbers; the most important numbers come first (ours bf16,
diffusers bf16 and their ratio, fp8 matmul, compiled, offload streamed, reduce-overhead, then the
checks). The full-size DiTs are dropped after nf4, before the VAE checks. Sections that would not fit
in --budget-s are skipped with reason "time budget". A previous gpu_check.json in DIR is kept, renamed
with its time stamp. Exit status: 0 when every section ran and no check failed, 2 otherwise.

No download: the DiTs (9.279 B parameters each) are built on the meta device and materialised on the
GPU with N(0, 0.02) weights (norm weights 1 + N(0, 0.1)), so activations stay finite; diffusers'
transformer holds the same tensors; the fp8 twin is quantised from them. The text encoder is not
needed for DiT timing: the passes read random features of its width (13 x 4096) for 300 tokens.
"""

from __future__ import annotations

import os
import time

T_START = time.perf_counter()
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # before CUDA starts
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing to download; the GPU host has no registry access

import argparse  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import gpu_check_dit as dit  # noqa: E402
import gpu_check_fast as fast  # noqa: E402
import gpu_check_pipeline as pl  # noqa: E402
import gpu_check_report as report  # noqa: E402
import torch  # noqa: E402

from ideogram4.models.transformer import Ideogram4Config  # noqa: E402

CHECKS = (
    "ours_vs_diffusers",
    "fp8_matmul_vs_bf16",
    "fp8_fast_accum_vs_bf16",
    "compiled_vs_eager",
    "offload_streamed_vs_resident",
    "reduce_overhead_vs_eager",
    "rand_device_cuda",
    "manifest_peak_memory_gpu_name",
    "offload_text_encoder",
    "offload_transformers_one_step",
    "no_host_sync_in_loop",
    "nf4_one_step",
    "vae_tiling_2048",
    "pipeline_compile_blocks",
)
# check -> (variant, the variant it is held against, fp8 tolerance?)
AGREEMENT = {
    "ours_vs_diffusers": ("diffusers_bf16", "ours_bf16", False),
    "fp8_matmul_vs_bf16": ("ours_fp8_matmul", "ours_bf16", True),
    "fp8_fast_accum_vs_bf16": ("ours_fp8_matmul_fast_accum", "ours_bf16", True),
    "compiled_vs_eager": ("ours_compiled", "ours_bf16", False),
    "offload_streamed_vs_resident": ("ours_offload_streamed", "ours_bf16", False),
    "reduce_overhead_vs_eager": ("ours_reduce_overhead", "ours_bf16", False),
}
VARIANT_KEYS = ("status", "per_step_s", "s_per_image_48", "peak_memory_bytes")
# Seconds a section needs (full size on an H100; --small on 2 CPU cores): skipped when they would not fit.
ESTIMATE_S = {
    "ours_bf16": (45, 3),
    "diffusers_bf16": (45, 3),
    "ours_fp8_matmul": (60, 3),
    "ours_fp8_matmul_fast_accum": (15, 2),
    "ours_compiled": (120, 8),
    "ours_offload_streamed": (60, 3),
    "ours_reduce_overhead": (200, 8),
    "tiny_pipeline": (20, 12),
    "rand_device_cuda": (5, 2),
    "manifest_peak_memory_gpu_name": (5, 1),
    "offload_text_encoder": (10, 4),
    "offload_transformers_one_step": (15, 4),
    "no_host_sync_in_loop": (10, 4),
    "nf4_one_step": (60, 1),
    "vae_tiling_2048": (30, 3),
    "pipeline_compile_blocks": (90, 6),
}
SECTIONS = tuple(ESTIMATE_S)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="CPU, tiny model, fp32, 128^2: every section in ~1 min")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "gpu_check"), help="folder")
    ap.add_argument("--budget-s", type=float, default=480.0, help="skip sections that would end after this")
    ap.add_argument("--resolution", type=int, default=None, help="square side (default 1024; --small 128)")
    ap.add_argument("--text-tokens", type=int, default=None, help="T (default 300; --small 24)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; --small 1)")
    ap.add_argument("--timed-steps", type=int, default=None, help="timed steps (default 10; --small 3)")
    ap.add_argument("--guidance", type=float, default=7.0)
    ap.add_argument("--compile-backend", default=None, help="default inductor; --small aot_eager (no C++ build)")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    ap.add_argument("--skip", default="", help=f"comma list of sections to leave out: {', '.join(SECTIONS)}")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    small = args.small
    args.device = "cpu" if small else "cuda"
    if not small and not torch.cuda.is_available():
        ap.error("no CUDA GPU on this machine: run with --small for the CPU smoke run of every section")
    args.dtype = torch.float32 if small else torch.bfloat16
    args.config = C.tiny.TINY_DIT if small else Ideogram4Config()
    args.resolution = args.resolution or (128 if small else 1024)
    args.text_tokens = args.text_tokens or (24 if small else 300)
    args.warmup = args.warmup if args.warmup is not None else (1 if small else 2)
    args.timed_steps = args.timed_steps if args.timed_steps is not None else (3 if small else 10)
    args.compile_backend = args.compile_backend or ("aot_eager" if small else "inductor")
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.resolution % 16 or args.resolution < 16:
        ap.error(f"--resolution {args.resolution} is not a positive multiple of 16 (one token is 16x16 pixels)")
    if args.warmup < 1 or args.timed_steps < 2:
        ap.error(f"--warmup {args.warmup} / --timed-steps {args.timed_steps}: need >= 1 warm-up and >= 2 timed steps")
    if args.budget_s <= 0:
        ap.error(f"--budget-s {args.budget_s}: must be > 0")
    if args.skip - set(SECTIONS):
        ap.error(f"--skip {sorted(args.skip - set(SECTIONS))}: unknown; sections are {', '.join(SECTIONS)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def device_info(device: str) -> dict:
    env = C.environment(device)
    cuda = device.startswith("cuda")
    try:
        cudnn = torch.backends.cudnn.version()
    except Exception:  # noqa: BLE001 - CPU builds
        cudnn = None
    info = {
        "type": "cuda" if cuda else "cpu",
        "name": env.get("gpu") or env["cpu"],
        "capability": env.get("capability"),
        "memory_bytes": torch.cuda.get_device_properties(device).total_memory if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "diffusers": env["diffusers"],
        "driver": env.get("driver"),
        "flash_attn": env.get("flash_attn"),
        "python": env["python"],
        "cpu": env["cpu"],
        "cpu_threads": env["cpu_threads"],
    }
    if not cuda:
        info["reason"] = "CPU run (--small): capability, GPU memory and driver are CUDA facts"
    return info


def keep_previous(path: Path) -> Path | None:
    """An earlier result is renamed with its time stamp, never overwritten."""
    if not path.exists():
        return None
    stamp = datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
    kept = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
    path.rename(kept)
    return kept


class Run:
    """The result document, its sections and the time budget."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.bench: dit.DitBench | None = None
        self.tiny: pl.TinyPipelines | None = None
        self.result = {
            "command": "python bench/gpu_check.py " + " ".join(args.argv),
            "small": args.small,
            "budget_s": args.budget_s,
            "started_at": datetime.now().isoformat(timespec="seconds"),
            "elapsed_s": 0.0,
            "finished": False,
            "setup": {},
            "device": {},
            "variants": {name: {"status": "pending", "reason": "not reached"} for name in report.VARIANTS},
            "ratios": dit.ratios({}, not args.small),
            "mfu": {},
            "checks": {name: {"ok": None, "value": None, "reason": "not reached"} for name in CHECKS},
            "sections": [],
            "notes": [
                "Per-step times are from full-size random weights; s_per_image_48 = median step x 48 (text "
                "encoding and VAE decoding excluded).",
                "Pipeline-level checks (rand_device_cuda, manifest_peak_memory_gpu_name, offload_*, "
                "pipeline_compile_blocks) run a tiny random pipeline on the device, not the full-size one.",
            ],
        }
        for kind in ("json", "md"):
            kept = keep_previous(self.out / f"gpu_check.{kind}")
            if kept:
                print(f"kept the previous result as {kept}")

    def elapsed(self) -> float:
        return time.perf_counter() - T_START

    def write(self) -> None:
        r = self.result
        r["elapsed_s"] = round(self.elapsed(), 1)
        for v in r["variants"].values():
            for key in VARIANT_KEYS:
                v.setdefault(key, None)
        if self.bench is not None:
            name = r["device"].get("name") if r["device"].get("type") == "cuda" else None
            r["ratios"] = dit.ratios(r["variants"], not self.args.small)
            r["mfu"] = dit.mfu(self.bench, r["variants"], name)
        C.write_json(self.out / "gpu_check.json", r)
        (self.out / "gpu_check.md").write_text(report.render(r))

    def section(self, name: str, fn, needs: str | None = None) -> None:
        """Run fn() unless skipped; record how it went; write the partial result."""
        est = ESTIMATE_S[name][1 if self.args.small else 0]
        reason = None
        if name in self.args.skip:
            reason = "--skip"
        elif self.elapsed() + est > self.args.budget_s:
            reason = f"time budget ({self.elapsed():.0f} s used, needs ~{est} s of {self.args.budget_s:g})"
        elif needs:
            reason = needs
        entry = {"name": name, "status": "skipped", "reason": reason, "seconds": 0.0}
        t0, cpu0 = time.perf_counter(), time.process_time()
        if reason is None:
            try:
                fn()
                entry.update(status="done", reason=None)
            except Exception as e:  # noqa: BLE001 - a failed section must not lose the others
                entry.update(status="failed", reason=f"{type(e).__name__}: {e}"[:2000])
                entry["traceback"] = traceback.format_exc()[-4000:]
                self.mark_failed(name, entry["reason"])
            C.free_memory()  # what the section built and dropped (a pipeline, fp8 twins) leaves the GPU
        else:
            self.mark_skipped(name, reason)
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        entry["cpu_seconds"] = round(time.process_time() - cpu0, 2)  # wall >> cpu: the machine was busy
        self.result["sections"].append(entry)
        print(
            f"[{self.elapsed():6.1f} s] {name}: {entry['status']}"
            + (f" ({entry['reason']})" if entry["reason"] else "")
        )
        self.write()

    def mark_skipped(self, name: str, reason: str) -> None:
        if name in self.result["variants"]:
            self.result["variants"][name].update(status="skipped", reason=reason)
        elif name in self.result["checks"]:
            self.result["checks"][name].update(ok=None, reason=reason)

    def mark_failed(self, name: str, reason: str) -> None:
        if name in self.result["variants"]:
            self.result["variants"][name] = {"status": "failed", "reason": reason}
        elif name in self.result["checks"]:
            self.result["checks"][name] = {"ok": False, "value": None, "reason": f"error: {reason}"}


def run_variants(run: Run) -> None:
    a, r = run.args, run.result
    variants, checks = r["variants"], r["checks"]
    sections = {
        "ours_bf16": lambda: dit.ours_bf16(run.bench),
        "diffusers_bf16": lambda: dit.diffusers_bf16(run.bench),
        "ours_fp8_matmul": lambda: dit.ours_fp8_matmul(run.bench),
        "ours_fp8_matmul_fast_accum": lambda: fast.ours_fp8_matmul_fast_accum(run.bench),
        "ours_compiled": lambda: dit.ours_compiled(run.bench, a.compile_backend, a.compile_mode),
        "ours_offload_streamed": lambda: fast.ours_offload_streamed(run.bench),
        "ours_reduce_overhead": lambda: fast.ours_reduce_overhead(run.bench, a.compile_backend, reduce_mode(a)),
    }
    for name, fn in sections.items():

        def go(name=name, fn=fn):
            variants[name] = fn()
            for check, (variant, other, fp8) in AGREEMENT.items():
                if variant == name:
                    checks[check] = dit.agreement(run.bench, variant, other, fp8=fp8)

        no_dit = None if name == "ours_bf16" or run.bench.cond is not None else "needs the bf16 DiTs (ours_bf16)"
        run.section(name, go, no_dit)
    run.bench.fp8 = None
    for name, (variant, other, _) in AGREEMENT.items():
        if checks[name].get("reason") == "not reached":  # the variant was skipped or failed
            checks[name]["reason"] = f"needs {variant} and {other}: {variants[variant].get('reason')}"


def reduce_mode(args) -> str | None:
    """The CUDA-graph mode on a GPU; --small's backend takes no inductor mode (and a CPU has no graphs)."""
    return "reduce-overhead" if args.compile_backend == "inductor" and not args.small else None


def run_checks(run: Run) -> None:
    a, checks = run.args, run.result["checks"]

    def tiny():
        run.tiny = pl.TinyPipelines(a.device)

    def check(name, fn):
        def go():
            checks[name] = fn()

        run.section(name, go, None if run.tiny is not None or not name_needs_tiny(name) else "tiny pipeline missing")

    def name_needs_tiny(name):
        return name not in ("vae_tiling_2048", "nf4_one_step")

    run.section("tiny_pipeline", tiny)
    check("rand_device_cuda", lambda: pl.rand_device_cuda(run.tiny))
    check("manifest_peak_memory_gpu_name", lambda: pl.manifest_peak_memory_gpu_name(run.tiny))
    check("offload_text_encoder", lambda: pl.offload_text_encoder(run.tiny))
    check("offload_transformers_one_step", lambda: pl.offload_transformers(run.tiny))
    check("no_host_sync_in_loop", lambda: pl.no_host_sync_in_loop(run.tiny))
    check("nf4_one_step", lambda: pl.nf4_one_step(run.bench, a.device))
    run.bench.cond = run.bench.uncond = None  # the full-size DiTs go before the VAE's 2048^2 decodes
    C.free_memory()
    check("vae_tiling_2048", lambda: pl.vae_tiling(a.device, a.dtype, a.small))
    check("pipeline_compile_blocks", lambda: pl.pipeline_compile_blocks(run.tiny, a.compile_backend, a.compile_mode))
    if run.tiny is not None:
        run.tiny.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    run = Run(args)
    run.result["device"] = device_info(args.device)
    run.bench = dit.DitBench(
        device=args.device,
        dtype=args.dtype,
        config=args.config,
        resolution=args.resolution,
        text_tokens=args.text_tokens,
        warmup=args.warmup,
        timed=args.timed_steps,
        guidance=args.guidance,
        seed=args.seed,
    )
    run.result["setup"] = run.bench.setup()
    print(f"gpu_check on {run.result['device']['name']} ({args.device}); writing {run.out}/gpu_check.json")
    run.write()
    run_variants(run)
    run_checks(run)
    run.result["finished"] = True
    run.write()
    print(report.render(run.result))
    failed = [s["name"] for s in run.result["sections"] if s["status"] != "done"]
    bad = [k for k, c in run.result["checks"].items() if c.get("ok") is False]
    if failed or bad:
        print(f"not done: {failed}; checks failed: {bad}")
    return 0 if not failed and not bad else 2


if __name__ == "__main__":
    sys.exit(main())
