"""The low-rank path beside a Linear: y = base(x) + sum_i scale_i * B_i (A_i x).

A forward hook on the base module adds the path, so the base can be anything that maps x to y with
a weight of shape [out, in]: nn.Linear (bf16/fp32), `Fp8Linear` in each of its modes, bitsandbytes'
Linear4bit. The base module, its parameters and its state-dict keys stay exactly as they were; the
LoRA tensors live in a child module `lora` as non-persistent buffers (so `net.to(device)` moves them,
and `state_dict()` does not see them).

Each LoRA on a Linear is one `LowRank` (A [r, in], B [out, r], in the compute dtype: an fp8 base keeps
its LoRA in bf16/fp32). Its scale is a plain float, changeable at any time. A merged LoRA is folded
into a float weight instead (no per-call cost); the weight as it was before the first merge is kept
on the CPU, so unmerging restores it bit for bit and a scale change recomputes from it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MERGEABLE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class LowRank(nn.Module):
    """One LoRA on one Linear. `B` already carries the file's alpha/rank factor."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor, scale: float, merged: bool = False):
        super().__init__()
        self.register_buffer("A", A, persistent=False)  # (r, in)
        self.register_buffer("B", B, persistent=False)  # (out, r)
        self.scale = float(scale)
        self.merged = merged

    def delta_weight(self) -> torch.Tensor:
        """scale * B @ A in fp32, shape (out, in): what a merge adds to the weight."""
        return self.scale * (self.B.float() @ self.A.float())

    def extra_repr(self) -> str:
        return f"rank={self.A.shape[0]}, scale={self.scale}, merged={self.merged}"


class LoraPath(nn.Module):
    """All LoRAs on one base Linear, by name, in load order."""

    def __init__(self):
        super().__init__()
        self.adapters = nn.ModuleDict()  # slot -> LowRank (LoRA names may hold dots: slots do not)
        self.slots: dict[str, str] = {}  # LoRA name -> slot
        self.original: torch.Tensor | None = None  # the base weight before the first merge, on the CPU
        self._next_slot = 0
        self._hook = None

    def get(self, name: str) -> LowRank:
        return self.adapters[self.slots[name]]

    def active(self) -> list[LowRank]:
        return [a for a in self.adapters.values() if not a.merged and a.scale != 0.0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for a in self.active():
            h = F.linear(x, a.A.to(x.dtype)) * a.scale  # (..., r): scaling the narrow side is cheapest
            d = F.linear(h, a.B.to(x.dtype))
            out = d if out is None else out + d
        return out


def _add_low_rank(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    path: LoraPath = module.lora
    if not path.active():
        return None  # nothing to add: the base output, untouched (scale 0 is exactly the base)
    return output + path(args[0]).to(output.dtype)


def lora_path(base: nn.Module) -> LoraPath | None:
    path = getattr(base, "lora", None)
    return path if isinstance(path, LoraPath) else None


def weight_shape(base: nn.Module) -> tuple[int, int]:
    """(out, in) of a Linear-like module (nn.Linear, Fp8Linear, bnb Linear4bit: packed weights, so ask
    the module's own in/out_features)."""
    return int(base.out_features), int(base.in_features)


def merge_refusal(base: nn.Module) -> str | None:
    """Why `base` cannot take a merged LoRA, or None if it can (plain Linear with a float weight)."""
    if type(base) is not nn.Linear:
        return f"its base is {type(base).__name__} (quantised weights)"
    if base.weight.dtype not in MERGEABLE_DTYPES:
        return f"its weight is {base.weight.dtype}"
    return None


def attach(base: nn.Module, name: str, A: torch.Tensor, B: torch.Tensor, scale: float, merge: bool = False) -> None:
    """Add LoRA `name` to `base` (A, B already in the dtype and on the device they will be used in)."""
    path = lora_path(base)
    if path is None:
        path = LoraPath().to(A.device)
        base.add_module("lora", path)
        path._hook = base.register_forward_hook(_add_low_rank)
    if name in path.slots:
        raise ValueError(f"a LoRA named {name!r} is already attached here")
    slot = f"lora{path._next_slot}"
    path._next_slot += 1
    path.adapters[slot] = LowRank(A, B, scale, merged=merge)
    path.slots[name] = slot
    if merge:
        rebuild_weight(base)


def set_scale(base: nn.Module, name: str, scale: float) -> None:
    adapter = lora_path(base).get(name)
    adapter.scale = float(scale)
    if adapter.merged:
        rebuild_weight(base)


def detach(base: nn.Module, name: str) -> None:
    """Remove LoRA `name`; the last one removes the hook and the child module too."""
    path = lora_path(base)
    merged = path.get(name).merged
    del path.adapters[path.slots.pop(name)]
    if merged:
        rebuild_weight(base)
    if not path.slots:
        path._hook.remove()
        del base.lora


@torch.no_grad()
def rebuild_weight(base: nn.Module) -> None:
    """weight = original + sum of the merged LoRAs' deltas (fp32 sum, one rounding to the weight dtype);
    with no merged LoRA left, the original itself, bit for bit."""
    path = lora_path(base)
    merged = [a for a in path.adapters.values() if a.merged]
    if not merged:
        if path.original is not None:
            base.weight.copy_(path.original)
            path.original = None
        return
    if path.original is None:
        path.original = base.weight.detach().to("cpu", copy=True)
    w = path.original.to(device=base.weight.device, dtype=torch.float32, copy=True)  # never += into the kept copy
    for a in merged:
        w += a.delta_weight().to(w.device)
    base.weight.copy_(w.to(base.weight.dtype))
