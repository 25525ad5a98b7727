"""fp8 weight-only Linear for the `ideogram-ai/ideogram-4-fp8` release.

Checkpoint format: `weight` float8_e4m3fn [out, in] and `weight_scale` float32 [out] (one scale per
output row, absmax/448). The reference dequantises in the activation dtype on every call.

Compute modes (`fp8_mode`):
- "dequantize_per_call": the reference behaviour, lowest memory (weights stay 1 byte/param).
- "dequantize_once": replace the module by a plain Linear at load (fastest when memory allows).
- "fp8_matmul": `torch._scaled_mm` with per-token activation scales on GPUs with fp8 tensor cores.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
FP8_MODES = ("dequantize_per_call", "dequantize_once", "fp8_matmul")


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
        if self.mode == "fp8_matmul":
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


def fp8_scaled_linear(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """y = (x_fp8 * s_x) @ (w_fp8 * s_w).T with one activation scale per token (row)."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    x_scale = (x2.abs().amax(dim=-1, keepdim=True).float() / FP8_MAX).clamp(min=1e-12)
    x_fp8 = (x2.float() / x_scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    y = torch._scaled_mm(
        x_fp8,
        weight.t(),
        scale_a=x_scale,
        scale_b=weight_scale.float()[None, :],
        bias=bias,
        out_dtype=x.dtype,
    )
    return y.reshape(*shape[:-1], weight.shape[0])


def quantize_rowwise(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's quantiser: per-output-row absmax / 448 (used to build test checkpoints)."""
    scale = (weight.float().abs().amax(dim=1) / FP8_MAX).clamp(min=1e-12)
    q = (weight.float() / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale


def swap_linears_for_fp8(module: nn.Module, quantized_names: set[str], mode: str) -> None:
    """Replace each nn.Linear whose `<name>.weight_scale` exists in the checkpoint (meta device)."""
    for name, child in list(module.named_modules()):
        if isinstance(child, nn.Linear) and name in quantized_names:
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            with torch.device("meta"):
                setattr(parent, attr, Fp8Linear(child.in_features, child.out_features, child.bias is not None, mode))


def materialize_fp8(module: nn.Module, dtype: torch.dtype) -> None:
    """For fp8_mode="dequantize_once": turn every loaded Fp8Linear into a plain Linear."""
    for name, child in list(module.named_modules()):
        if isinstance(child, Fp8Linear):
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, child.to_linear(dtype))
