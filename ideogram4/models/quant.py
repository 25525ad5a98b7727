"""fp8 weight-only Linear for the `ideogram-ai/ideogram-4-fp8` release.

Checkpoint format: `weight` float8_e4m3fn [out, in] and `weight_scale` float32 [out] (one scale per
output row, absmax/448). The reference dequantises in the activation dtype on every call.

Compute modes (`fp8_mode`):
- "dequantize_per_call": the reference behaviour, lowest memory (weights stay 1 byte/param).
- "dequantize_once": replace the module by a plain Linear at load (fastest when memory allows).
- "fp8_matmul": `torch._scaled_mm` with per-token activation scales on GPUs with fp8 tensor cores
  (Ada / Hopper; it also runs on the CPU in torch >= 2.13, which is how CI checks it). The layers the
  reference notes as fragile under activation quantisation (`FP8_MATMUL_PROTECTED`: the FFN
  down-projections w2, the text projection, every adaLN / t-embedding Linear, input_proj and the
  final layer) stay on the weight-only path, computing in the activation dtype (bf16).

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
# mode: activation quantisation hurts the FFN down-projections most (performance.md, technique 4),
# and the per-sample / boundary layers are cheap and precision-sensitive.
FP8_MATMUL_PROTECTED = ("feed_forward.w2", "llm_cond_proj", "adaln", "t_embedding", "input_proj", "final_layer")


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
    def __init__(self, in_features: int, out_features: int, bias: bool, mode: str = "dequantize_per_call"):
        super().__init__()
        if mode not in FP8_MODES:
            raise ValueError(f"fp8_mode={mode!r} is not one of {FP8_MODES}")
        self.in_features, self.out_features, self.mode = in_features, out_features, mode
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=FP8_DTYPE), requires_grad=False)
        self.weight_scale = nn.Parameter(torch.empty(out_features, dtype=torch.float32), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        # In the activation dtype, as the reference does: the product is rounded to that dtype.
        return self.weight.to(dtype) * self.weight_scale.to(dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.mode == "fp8_matmul" and scaled_mm_shapes_ok(x, self.weight):
            return fp8_scaled_linear(x, self.weight, self.weight_scale, bias)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def to_linear(self, dtype: torch.dtype) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight = nn.Parameter(self.dequantized_weight(dtype), requires_grad=False)
        if self.bias is not None:
            linear.bias = nn.Parameter(self.bias.detach().to(dtype), requires_grad=False)
        return linear

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}"


def scaled_mm_shapes_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """cuBLAS fp8 GEMMs need K and N divisible by 16 (the CPU kernel has no such limit)."""
    if x.device.type == "cpu":
        return True
    out_features, in_features = weight.shape
    return in_features % 16 == 0 and out_features % 16 == 0


def quantize_per_token(x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) activations -> e4m3 values and one fp32 scale per row (absmax / 448), shape (M, 1)."""
    scale = (x2.abs().amax(dim=-1, keepdim=True).float() / FP8_MAX).clamp(min=1e-12)
    return (x2.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale


def fp8_scaled_linear(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """y = (x_fp8 * s_x) @ (w_fp8 * s_w).T with one activation scale per token (row).

    `weight` is the checkpoint's [out, in] row-major e4m3 tensor, so `weight.t()` is the column-major
    operand cuBLAS wants, without a copy. cuBLAS row-wise scaling only writes bf16, so on CUDA the
    product is made in bf16 (and cast to x.dtype if that differs); the CPU kernel writes x.dtype.
    """
    shape = x.shape
    x_fp8, x_scale = quantize_per_token(x.reshape(-1, shape[-1]))
    out_dtype = x.dtype if x.device.type == "cpu" else torch.bfloat16
    fuse_bias = bias is not None and bias.dtype == out_dtype
    y = torch._scaled_mm(
        x_fp8,
        weight.t(),
        scale_a=x_scale,
        scale_b=weight_scale.float().reshape(1, -1).contiguous(),
        bias=bias if fuse_bias else None,
        out_dtype=out_dtype,
    )
    y = y.to(x.dtype)
    if bias is not None and not fuse_bias:
        y = y + bias
    return y.reshape(*shape[:-1], weight.shape[0])


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


def swap_linears_for_fp8(
    module: nn.Module, quantized_names: set[str], mode: str, protected: tuple[str, ...] = FP8_MATMUL_PROTECTED
) -> None:
    """Replace each nn.Linear whose `<name>.weight_scale` exists in the checkpoint (meta device).

    In "fp8_matmul" mode the `protected` layers keep the weight-only path (see `layer_mode`).
    """
    if mode not in FP8_MODES:
        raise ValueError(f"fp8_mode={mode!r} is not one of {FP8_MODES}")
    for name, child in list(module.named_modules()):
        if isinstance(child, nn.Linear) and name in quantized_names:
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            with torch.device("meta"):
                fp8 = Fp8Linear(
                    child.in_features, child.out_features, child.bias is not None, layer_mode(name, mode, protected)
                )
            setattr(parent, attr, fp8)


def materialize_fp8(module: nn.Module, dtype: torch.dtype) -> None:
    """For fp8_mode="dequantize_once": turn every loaded Fp8Linear into a plain Linear."""
    for name, child in list(module.named_modules()):
        if isinstance(child, Fp8Linear):
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, child.to_linear(dtype))


def quantize_linears(
    module: nn.Module,
    mode: str,
    protected: tuple[str, ...] = FP8_MATMUL_PROTECTED,
    dtype: torch.dtype | None = None,
    skip: tuple[str, ...] = (),
) -> nn.Module:
    """Quantise a float model's Linears in place, as the fp8 release is (per-row absmax/448), then
    set them up for `mode`. For benchmarks and tests that start from float weights (no files).

    Layers are converted one at a time, so the float weights are freed as the fp8 ones appear
    (peak = fp8 model + one float Linear). `dequantize_once` materialises float Linears again, in
    `dtype` (default: the module's parameter dtype), from the quantised values.
    """
    if mode not in FP8_MODES:
        raise ValueError(f"fp8_mode={mode!r} is not one of {FP8_MODES}")
    for name, child in list(module.named_modules()):
        if not isinstance(child, nn.Linear) or any(s in name for s in skip):
            continue
        q, scale = quantize_rowwise(child.weight.detach())
        with torch.device("meta"):
            fp8 = Fp8Linear(
                child.in_features,
                child.out_features,
                child.bias is not None,
                layer_mode(name, "dequantize_per_call" if mode == "dequantize_once" else mode, protected),
            )
        fp8.weight = nn.Parameter(q, requires_grad=False)
        fp8.weight_scale = nn.Parameter(scale, requires_grad=False)
        if child.bias is not None:
            fp8.bias = nn.Parameter(child.bias.detach(), requires_grad=False)
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, fp8)
        del child
    if mode == "dequantize_once":
        if dtype is None:
            dtype = next(
                (p.dtype for p in module.parameters() if p.dtype.is_floating_point and p.dtype.itemsize > 1),
                torch.bfloat16,
            )
        materialize_fp8(module, dtype)
    return module


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
