"""fp8 weight-only Linear for the `ideogram-ai/ideogram-4-fp8` release.

Checkpoint format: `weight` float8_e4m3fn [out, in] and `weight_scale` float32 [out] (one scale per
output row, absmax/448). The reference dequantises in the activation dtype on every call.

Compute modes (`fp8_mode`):
- "dequantize_per_call": the reference behaviour, lowest memory (weights stay 1 byte/param).
- "dequantize_once": replace the module by a plain Linear at load (fastest when memory allows).
- "fp8_matmul": `torch._scaled_mm` with per-token activation scales on GPUs with fp8 tensor cores
  (Ada / Hopper; it also runs on the CPU in torch >= 2.13, which is how CI checks it). The per-sample
  and boundary layers (`FP8_MATMUL_PROTECTED`: the text projection, every adaLN / t-embedding Linear,
  input_proj and the final layer) stay on the weight-only path, computing in the activation dtype.
  Every block Linear (qkv, o, w1, w3 and w2) multiplies in fp8; w1 and w3 read one quantisation of
  their shared input, and after `fuse_linear_pair` one GEMM computes both. On CUDA the activation
  quantiser runs as one compiled kernel (`fused_quantize_per_token`); inside a compiled block inductor
  fuses it with the surrounding work. `fast_accum` selects cuBLAS's fast fp8 accumulation (off by
  default: it accumulates in lower precision; gpu_check measures both).

`fp8_paths(module)` says which path each Linear actually takes; record it with every image.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..spec import FP8_MODES

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
# Substrings of module names kept out of fp8 matmuls (weight-only fp8, bf16 compute) in "fp8_matmul"
# mode: the per-sample / boundary layers are cheap and precision-sensitive.
FP8_MATMUL_PROTECTED = ("llm_cond_proj", "adaln", "t_embedding", "input_proj", "final_layer")
# Activation quantisation hurts the FFN down-projections most (performance.md, technique 4): pass this
# as `protected` to keep w2 weight-only too, should real weights show it (random weights do not).
FP8_MATMUL_PROTECTED_WITH_W2 = (*FP8_MATMUL_PROTECTED, "feed_forward.w2")


def is_protected(name: str, protected: tuple[str, ...] = FP8_MATMUL_PROTECTED) -> bool:
    return any(p in name for p in protected)


def fp8_matmul_supported(device: torch.device | str) -> bool:
    """fp8 tensor cores: CUDA compute capability >= 8.9 (Ada, Hopper, Blackwell). The CPU has a
    reference `_scaled_mm` (numerically right, not fast)."""
    device = torch.device(device)
    if device.type == "cpu":
        return True
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_capability(device) >= (8, 9)
    return False


class Fp8Linear(nn.Module):
    def __init__(
        self, in_features: int, out_features: int, bias: bool, mode: str = "dequantize_per_call", fast_accum=False
    ):
        super().__init__()
        if mode not in FP8_MODES:
            raise ValueError(f"fp8_mode={mode!r} is not one of {FP8_MODES}")
        self.in_features, self.out_features, self.mode, self.fast_accum = in_features, out_features, mode, fast_accum
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=FP8_DTYPE), requires_grad=False)
        self.weight_scale = nn.Parameter(torch.empty(out_features, dtype=torch.float32), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        # In the activation dtype, as the reference does: the product is rounded to that dtype.
        return self.weight.to(dtype) * self.weight_scale.to(dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = _bias(self, x)
        if self.fp8_matmul_ok(x):
            return fp8_scaled_linear(x, self.weight, self.weight_scale, bias, self.fast_accum)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def fp8_matmul_ok(self, x: torch.Tensor) -> bool:
        return self.mode == "fp8_matmul" and scaled_mm_shapes_ok(x, self.weight)

    def to_linear(self, dtype: torch.dtype) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight = nn.Parameter(self.dequantized_weight(dtype), requires_grad=False)
        if self.bias is not None:
            linear.bias = nn.Parameter(self.bias.detach().to(dtype), requires_grad=False)
        return linear

    def extra_repr(self) -> str:
        fast = ", fast_accum=True" if self.fast_accum else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}{fast}"


def scaled_mm_shapes_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """cuBLAS fp8 GEMMs need K and N divisible by 16 (the CPU kernel has no such limit)."""
    if x.device.type == "cpu":
        return True
    out_features, in_features = weight.shape
    return in_features % 16 == 0 and out_features % 16 == 0


def quantize_per_token(x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) activations -> e4m3 values and one fp32 scale per row (absmax / 448), shape (M, 1).

    The eager reference: about seven kernels. `fused_quantize_per_token` is the same arithmetic as one.
    """
    scale = (x2.abs().amax(dim=-1, keepdim=True).float() / FP8_MAX).clamp(min=1e-12)
    return (x2.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale


_FUSED_QUANTIZER = None


def fused_quantize_per_token(x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`quantize_per_token` compiled by inductor (one row-reduction kernel; the token count is dynamic)."""
    global _FUSED_QUANTIZER
    if _FUSED_QUANTIZER is None:
        _FUSED_QUANTIZER = torch.compile(quantize_per_token, fullgraph=True, dynamic=True)
    return _FUSED_QUANTIZER(x2)


def quantize_activations(x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused kernel on CUDA in eager code; inside a compiled region (or on the CPU) the reference,
    which the surrounding compile fuses anyway."""
    if x2.is_cuda and not torch.compiler.is_compiling():
        return fused_quantize_per_token(x2)
    return quantize_per_token(x2)


def scaled_mm(
    x_fp8: torch.Tensor,
    x_scale: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    x_dtype: torch.dtype,
    fast_accum: bool = False,
) -> torch.Tensor:
    """(M, K) e4m3 activations x the (N, K) e4m3 weight -> (M, N) in `x_dtype`, row-wise scales.

    cuBLAS row-wise scaling only writes bf16, so on CUDA the product is made in bf16 (then cast); the
    CPU kernel writes x_dtype. The bias is fused when its dtype is the product's, else added after.
    """
    out_dtype = x_dtype if x_fp8.device.type == "cpu" else torch.bfloat16
    fuse_bias = bias is not None and bias.dtype == out_dtype
    y = torch._scaled_mm(
        x_fp8,
        weight.t(),
        scale_a=x_scale,
        scale_b=weight_scale.float().reshape(1, -1),
        bias=bias if fuse_bias else None,
        out_dtype=out_dtype,
        use_fast_accum=fast_accum,
    ).to(x_dtype)
    return y if bias is None or fuse_bias else y + bias


def fp8_scaled_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    fast_accum: bool = False,
) -> torch.Tensor:
    """y = (x_fp8 * s_x) @ (w_fp8 * s_w).T with one activation scale per token (row).

    `weight` is the checkpoint's [out, in] row-major e4m3 tensor, so `weight.t()` is the column-major
    operand cuBLAS wants, without a copy.
    """
    shape = x.shape
    x_fp8, x_scale = quantize_activations(x.reshape(-1, shape[-1]))
    y = scaled_mm(x_fp8, x_scale, weight, weight_scale, bias, x.dtype, fast_accum)
    return y.reshape(*shape[:-1], weight.shape[0])


def fuse_linear_pair(a: Fp8Linear, b: Fp8Linear) -> None:
    """Store a's and b's weights (and scales) as the two halves of one tensor each, so one GEMM
    computes both (`linear_pair_weights`). Values, names and shapes stay as they were; `Module.to`
    separates the halves again (a FeedForward re-fuses in its `_apply`)."""
    for attr in ("weight", "weight_scale"):
        joined = torch.cat([getattr(a, attr).detach(), getattr(b, attr).detach()])
        n = getattr(a, attr).shape[0]
        setattr(a, attr, nn.Parameter(joined[:n], requires_grad=False))
        setattr(b, attr, nn.Parameter(joined[n:], requires_grad=False))


def linear_pair_weights(a: Fp8Linear, b: Fp8Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """The (Na + Nb, K) weight and (Na + Nb,) scale that `fuse_linear_pair` laid out (views, no copy)."""
    rows, k = a.out_features + b.out_features, a.in_features
    weight = a.weight.as_strided((rows, k), (k, 1))
    scale = a.weight_scale.as_strided((rows,), (1,))
    return weight, scale


def _bias(m: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    return None if m.bias is None else m.bias.to(x.dtype)


def run_forward_hooks(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """What `module(x)` does after forward (LoRA paths are forward hooks), for outputs computed outside it."""
    for hook in module._forward_hooks.values():
        out = hook(module, (x,), y)
        y = y if out is None else out
    return y


def fp8_shared_input(
    a: nn.Module, b: nn.Module, x: torch.Tensor, fused: bool
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """a(x), b(x) from one quantisation of x (and one GEMM when `fused`), when both are fp8-matmul
    Fp8Linears; None otherwise (the caller runs them one by one)."""
    if not (isinstance(a, Fp8Linear) and isinstance(b, Fp8Linear) and a.fp8_matmul_ok(x) and b.fp8_matmul_ok(x)):
        return None
    x_fp8, x_scale = quantize_activations(x.reshape(-1, x.shape[-1]))
    if fused and a.bias is None and b.bias is None and a.fast_accum == b.fast_accum:
        weight, scale = linear_pair_weights(a, b)
        y = scaled_mm(x_fp8, x_scale, weight, scale, None, x.dtype, a.fast_accum)
        ya, yb = y.split([a.out_features, b.out_features], dim=-1)
    else:
        ya, yb = (
            scaled_mm(x_fp8, x_scale, m.weight, m.weight_scale, _bias(m, x), x.dtype, m.fast_accum) for m in (a, b)
        )
    lead = x.shape[:-1]
    ya, yb = ya.reshape(*lead, a.out_features), yb.reshape(*lead, b.out_features)
    return run_forward_hooks(a, x, ya), run_forward_hooks(b, x, yb)


def quantize_rowwise(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's quantiser: per-output-row absmax / 448 (used to build test checkpoints)."""
    scale = (weight.float().abs().amax(dim=1) / FP8_MAX).clamp(min=1e-12)
    q = (weight.float() / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale


def layer_mode(name: str, mode: str, protected: tuple[str, ...] = FP8_MATMUL_PROTECTED) -> str:
    """The mode one Linear gets: protected layers fall back from fp8 matmuls to weight-only fp8."""
    if mode == "fp8_matmul" and is_protected(name, protected):
        return "dequantize_per_call"
    return mode


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, attr, new)


def names_of(root: nn.Module, kind: type) -> list[str]:
    """Names only: a list of (name, module) pairs would keep every replaced module alive until the
    loop ends (the old weights and the new ones at once: the load peak this avoids)."""
    return [name for name, m in root.named_modules() if isinstance(m, kind)]


def swap_linears_for_fp8(
    module: nn.Module,
    quantized_names: set[str],
    mode: str,
    protected: tuple[str, ...] = FP8_MATMUL_PROTECTED,
    fast_accum: bool = False,
) -> None:
    """Replace each nn.Linear whose `<name>.weight_scale` exists in the checkpoint (meta device).

    In "fp8_matmul" mode the `protected` layers keep the weight-only path (see `layer_mode`).
    """
    if mode not in FP8_MODES:
        raise ValueError(f"fp8_mode={mode!r} is not one of {FP8_MODES}")
    for name in names_of(module, nn.Linear):
        if name in quantized_names:
            child = module.get_submodule(name)
            with torch.device("meta"):
                fp8 = Fp8Linear(
                    child.in_features,
                    child.out_features,
                    child.bias is not None,
                    layer_mode(name, mode, protected),
                    fast_accum,
                )
            replace_module(module, name, fp8)


def materialize_fp8(module: nn.Module, dtype: torch.dtype) -> None:
    """For fp8_mode="dequantize_once": turn every loaded Fp8Linear into a plain Linear, one at a time,
    each fp8 Linear freed as its float twin appears (peak: the model plus one float Linear)."""
    for name in names_of(module, Fp8Linear):
        replace_module(module, name, module.get_submodule(name).to_linear(dtype))


def fuse_shared_inputs(module: nn.Module) -> int:
    """Give every submodule with a `fuse_gate_up` method (the DiT's FeedForward) one GEMM for its two
    fp8-matmul Linears that read the same input. Returns how many were fused."""
    return sum(bool(m.fuse_gate_up()) for m in list(module.modules()) if hasattr(m, "fuse_gate_up"))


def quantize_linears(
    module: nn.Module,
    mode: str,
    protected: tuple[str, ...] = FP8_MATMUL_PROTECTED,
    dtype: torch.dtype | None = None,
    skip: tuple[str, ...] = (),
    fast_accum: bool = False,
) -> nn.Module:
    """Quantise a float model's Linears in place, as the fp8 release is (per-row absmax/448), then
    set them up for `mode`. For benchmarks and tests that start from float weights (no files).

    Layers are converted one at a time, so the float weights are freed as the fp8 ones appear
    (peak = fp8 model + one float Linear). `dequantize_once` materialises float Linears again, in
    `dtype` (default: the module's parameter dtype), from the quantised values.
    """
    if mode not in FP8_MODES:
        raise ValueError(f"fp8_mode={mode!r} is not one of {FP8_MODES}")
    if dtype is None:
        dtype = next(
            (p.dtype for p in module.parameters() if p.dtype.is_floating_point and p.dtype.itemsize > 1),
            torch.bfloat16,
        )
    load_mode = "dequantize_per_call" if mode == "dequantize_once" else mode
    for name in names_of(module, nn.Linear):
        if any(s in name for s in skip):
            continue
        replace_module(module, name, _quantized(module.get_submodule(name), layer_mode(name, load_mode, protected)))
    if mode == "dequantize_once":
        materialize_fp8(module, dtype)
    elif mode == "fp8_matmul":
        for m in module.modules():
            if isinstance(m, Fp8Linear):
                m.fast_accum = fast_accum
        fuse_shared_inputs(module)
    return module


def _quantized(linear: nn.Linear, mode: str) -> Fp8Linear:
    q, scale = quantize_rowwise(linear.weight.detach())
    with torch.device("meta"):
        fp8 = Fp8Linear(linear.in_features, linear.out_features, linear.bias is not None, mode)
    fp8.weight = nn.Parameter(q, requires_grad=False)
    fp8.weight_scale = nn.Parameter(scale, requires_grad=False)
    if linear.bias is not None:
        fp8.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
    return fp8


def fp8_paths(module: nn.Module) -> dict[str, int]:
    """How many Linears take each path: {"fp8_matmul": n, "dequantize_per_call": n, "float": n}.

    A module loaded with fp8_mode="dequantize_once" shows only "float" Linears; an fp8_matmul Linear
    whose shapes cuBLAS refuses (not multiples of 16) falls back to dequantize at call time, which
    this static count does not see (the DiT's shapes are all multiples of 16).
    """
    counts: dict[str, int] = {}
    for child in module.modules():
        if isinstance(child, Fp8Linear):
            key = child.mode
        elif isinstance(child, nn.Linear):
            key = "float"
        else:
            continue
        counts[key] = counts.get(key, 0) + 1
    return counts
