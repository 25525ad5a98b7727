"""Shared pieces of the benchmarks: random models, the diffusers twin, timers, statistics, prompts.

Everything here builds on `ideogram4` (tiny.py's checkpoint writer, the loader, the pipeline) and on
diffusers 0.42.1; nothing is copied from elsewhere.
"""

from __future__ import annotations

import inspect
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ideogram4 import tiny  # noqa: E402
from ideogram4.models.transformer import Ideogram4Config, Ideogram4Transformer  # noqa: E402

# A "medium" random DiT for CPU timing: the real head size (256) and block structure, 1/9 of the
# width, 4 of 34 layers (15.7 M parameters). The text width must match tiny.py's text encoder.
MEDIUM_DIT = Ideogram4Config(
    emb_dim=512,
    num_layers=4,
    num_heads=2,
    intermediate_size=1536,
    adaln_dim=128,
    in_channels=128,
    llm_features_dim=tiny.TINY_DIT.llm_features_dim,
    mrope_section=(24, 20, 20),
)
SIZES = {"tiny": tiny.TINY_DIT, "medium": MEDIUM_DIT}


# --- random weights --------------------------------------------------------------------------------


def build_checkpoint(folder: str | Path, layout: str, dit_config: Ideogram4Config, seed: int = 0) -> Path:
    """A checkpoint folder like `tiny.build_tiny_checkpoint`, with a DiT of `dit_config`."""
    return tiny.build_tiny_checkpoint(folder, layout=layout, seed=seed, dit_config=dit_config)


def init_random_(model: torch.nn.Module, seed: int, std: float = 0.02) -> torch.nn.Module:
    """In-place random init of a model whose storage already lives on its device (no CPU copy):
    2-D weights N(0, std), biases N(0, std), norm weights 1 + N(0, 0.1), indicator rows N(0, 0.5)."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("embed_image_indicator"):
                p.normal_(0, 0.5, generator=g)
            elif p.ndim == 1 and "norm" in name:
                p.normal_(1.0, 0.1, generator=g)
            else:
                p.normal_(0, std, generator=g)
    return model


def random_dit(config: Ideogram4Config, device: str, dtype: torch.dtype, seed: int) -> Ideogram4Transformer:
    """Our DiT with random weights, allocated directly on `device` in `dtype` (meta -> empty -> init)."""
    with torch.device("meta"):
        model = Ideogram4Transformer(config)
    model = model.to(dtype).to_empty(device=device)
    return init_random_(model, seed).eval().requires_grad_(False)


def diffusers_twin(model: Ideogram4Transformer):
    """diffusers' Ideogram4Transformer2DModel holding the SAME tensors as `model` (no copy: to_q/to_k/to_v
    are row views of our fused qkv), so both pipelines run identical weights in one process."""
    from diffusers import Ideogram4Transformer2DModel
    from diffusers.models.transformers.transformer_ideogram4 import Ideogram4MRoPE

    cfg = model.config
    # what diffusers' constructor takes: its config.json also carries keys from_pretrained ignores (the side range)
    takes = inspect.signature(Ideogram4Transformer2DModel.__init__).parameters
    kwargs = {k: v for k, v in tiny.diffusers_dit_config(cfg).items() if k in takes}
    with torch.device("meta"):
        twin = Ideogram4Transformer2DModel(**kwargs)
    twin.load_state_dict(tiny.dit_to_diffusers_keys(model.state_dict()), strict=True, assign=True)
    device = next(model.parameters()).device
    for _name, module in twin.named_modules():  # non-persistent buffers are not in any state dict
        if isinstance(module, Ideogram4MRoPE):
            fresh = Ideogram4MRoPE(module.head_dim, int(cfg.rope_theta), module.mrope_section)
            module.inv_freq = fresh.inv_freq.to(device)
    leftover = [n for n, b in list(twin.named_parameters()) + list(twin.named_buffers()) if b.is_meta]
    if leftover:
        raise RuntimeError(f"diffusers twin has unset tensors: {leftover[:4]}")
    return twin.eval().requires_grad_(False)


def fp8_twin(model: Ideogram4Transformer, mode: str = "fp8_matmul", fast_accum: bool = False) -> Ideogram4Transformer:
    """Our DiT in the fp8 release format (every Linear e4m3 + per-row scale, absmax/448), sharing the
    non-Linear tensors with `model`, set up as the loader does (fp8_matmul: w1|w3 as one weight).
    Extra memory: one byte per Linear parameter."""
    from ideogram4.models.quant import fuse_shared_inputs, quantize_rowwise, swap_linears_for_fp8

    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    sd = {}
    for key, value in model.state_dict().items():
        owner = key.rsplit(".", 1)[0]
        if owner in linears and key.endswith(".weight"):
            sd[key], sd[owner + ".weight_scale"] = quantize_rowwise(value)
        else:
            sd[key] = value
    with torch.device("meta"):
        twin = Ideogram4Transformer(model.config)
    swap_linears_for_fp8(twin, linears, mode, fast_accum=fast_accum)
    twin.load_state_dict(sd, strict=True, assign=True)
    if mode == "fp8_matmul":
        fuse_shared_inputs(twin)
    return twin.eval().requires_grad_(False)


# --- prompts ---------------------------------------------------------------------------------------

WORDS = (
    "a quiet harbour town at dawn with fishing boats painted red and blue, gulls circling over the "
    "market, warm light on wet cobblestones, a bakery sign in gold letters, "
).split()


def prompt_of_tokens(tokenizer, target: int) -> tuple[str, int]:
    """A plain-text prompt whose chat-templated token count is close to (at most) `target`."""
    from ideogram4.prompts import count_tokens

    words: list[str] = []
    i = 0
    while True:
        candidate = words + [WORDS[i % len(WORDS)]]
        if count_tokens(tokenizer, " ".join(candidate)) > target:
            break
        words = candidate
        i += 1
    text = " ".join(words)
    return text, count_tokens(tokenizer, text)


# --- timing ----------------------------------------------------------------------------------------


class Clock:
    """Timestamps that work on CPU (perf_counter) and CUDA (events, read after one synchronize)."""

    def __init__(self, device: torch.device | str):
        self.cuda = torch.device(device).type == "cuda"

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def seconds(self, a, b) -> float:
        if self.cuda:
            return a.elapsed_time(b) / 1e3
        return b - a

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()


class PassTimer:
    """Forward hooks on a module: start/end marks of every pass (both pipelines call their
    transformers through `__call__`, so the same hooks time ours and diffusers')."""

    def __init__(self, module: torch.nn.Module, clock: Clock):
        self.clock = clock
        self.marks: list[tuple] = []
        self._start = None
        self._handles = [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def _pre(self, *_):
        self._start = self.clock.mark()

    def _post(self, *_):
        self.marks.append((self._start, self.clock.mark()))

    def reset(self):
        self.marks = []

    def seconds(self) -> list[float]:
        return [self.clock.seconds(a, b) for a, b in self.marks]

    def remove(self):
        for h in self._handles:
            h.remove()


@dataclass
class Stats:
    n: int
    median: float
    min: float
    p90: float
    cv: float  # coefficient of variation (stdev / mean)

    @classmethod
    def of(cls, xs: list[float]) -> Stats:
        xs = sorted(xs)
        if not xs:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        p90 = xs[min(len(xs) - 1, math.ceil(0.9 * len(xs)) - 1)]
        mean = statistics.fmean(xs)
        cv = statistics.stdev(xs) / mean if len(xs) > 1 and mean > 0 else 0.0
        return cls(len(xs), statistics.median(xs), xs[0], p90, cv)


@dataclass
class Record:
    """One variant's timings at one configuration."""

    variant: str
    per_step_s: list[float] = field(default_factory=list)  # every step interval, pooled over repeats
    call_s: list[float] = field(default_factory=list)  # whole call per repeat
    cond_pass_s: list[float] = field(default_factory=list)
    uncond_pass_s: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "variant": self.variant,
            "per_step": asdict(Stats.of(self.per_step_s)),
            "call": asdict(Stats.of(self.call_s)),
            "cond_pass": asdict(Stats.of(self.cond_pass_s)),
            "uncond_pass": asdict(Stats.of(self.uncond_pass_s)),
            "peak_bytes": self.peak_bytes,
            **self.extra,
        }


def step_intervals(marks: list, clock: Clock) -> list[float]:
    """Intervals between consecutive end-of-step marks (the first step, which pays one-off work, is
    left out: n steps give n - 1 intervals, each exactly one step's work)."""
    return [clock.seconds(a, b) for a, b in zip(marks, marks[1:])]


def environment(device: str) -> dict:
    import diffusers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_cores": __import__("os").cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                env["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            capability=".".join(map(str, torch.cuda.get_device_capability(device))),
        )
        try:
            import subprocess

            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        except Exception:  # noqa: BLE001 - best effort
            pass
        try:
            import flash_attn  # noqa: F401

            env["flash_attn"] = flash_attn.__version__
        except ImportError:
            env["flash_attn"] = None
    return env


def load_average() -> tuple[float, float, float] | None:
    """Other work on the machine at the time of a CPU measurement (1, 5, 15 min)."""
    try:
        import os

        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return None


def write_json(path: str | Path | None, obj: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float((a @ b) / (a.norm() * b.norm()))


# --- memory and kernels (gpu_check) ---------------------------------------------------------------


def tensor_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers of `modules`, each storage counted once (twins that share
    tensors, like `diffusers_twin`, add nothing)."""
    seen, total = set(), 0
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            key = (t.device, t.untyped_storage().data_ptr())
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
    return total


def free_memory() -> None:
    """Drop unreachable tensors now and hand cached CUDA blocks back (between variants of one process)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def attention_kernels(fn, cuda: bool) -> list[str]:
    """The attention ops and kernels `fn()` dispatches (profiler names): which SDPA backend really ran."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    names = {e.key for e in prof.key_averages()}
    ops = {n for n in names if n.startswith("aten::") and ("scaled_dot_product" in n or "attention" in n)}
    words = ("flash", "fmha", "cudnn", "attention", "attn")
    kernels = {n for n in names if not n.startswith("aten::") and any(w in n.lower() for w in words)}
    return sorted(ops) + sorted(kernels)[:8]


def run_with_threads(threads: int, fn, *args):
    """fn(*args) with `threads` torch CPU threads (0: leave torch's default), restored afterwards
    (the benchmarks' main() also runs inside pytest)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(before)
