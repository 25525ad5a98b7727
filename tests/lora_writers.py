"""Tiny LoRA files in each published layout, from one LoRA described in our own names.

A `Lora` maps our Linear names (`layers.0.attention.qkv`, ...) to (A [r, in], B [out, r]) and means
delta W = (alpha / r) * B @ A when `alpha` is set (kohya), B @ A otherwise. Each writer spells that
same LoRA the way one trainer does, so every layout must produce the same images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
from safetensors.torch import save_file

TARGETS = ("attention.qkv", "attention.o", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3", "adaln_modulation")


@dataclass
class Lora:
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]
    alpha: float | None = None
    split_a: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)  # qkv name -> A_q, A_k, A_v

    @property
    def rank(self) -> int:
        return next(iter(self.layers.values()))[0].shape[0]


def random_lora(
    shapes: dict[str, tuple[int, int]],
    rank: int = 4,
    seed: int = 0,
    std: float = 0.3,
    alpha: float | None = None,
    split_qkv_a: bool = False,
) -> Lora:
    """A LoRA on every trained target of every layer, strong enough to change the image visibly.

    `split_qkv_a`: independent A for q, k and v (what a PEFT trainer on the diffusers model makes),
    instead of one A shared by the fused qkv.
    """
    g = torch.Generator().manual_seed(seed)
    layers, split_a = {}, {}
    for name, (out_f, in_f) in shapes.items():
        if not (name.startswith("layers.") and name.split(".", 2)[2] in TARGETS):
            continue
        A = torch.randn(rank, in_f, generator=g) * std / in_f**0.5
        B = torch.randn(out_f, rank, generator=g) * std
        layers[name] = (A, B)
        if split_qkv_a and name.endswith(".qkv"):
            split_a[name] = tuple(torch.randn(rank, in_f, generator=g) * std / in_f**0.5 for _ in range(3))
    return Lora(layers, alpha, split_a)


def reference_delta(lora: Lora, name: str) -> torch.Tensor:
    """delta W of one Linear as the LoRA means it (fp32)."""
    A, B = lora.layers[name]
    factor = lora.alpha / lora.rank if lora.alpha is not None else 1.0
    if name in lora.split_a:
        return factor * torch.cat([b @ a for a, b in zip(lora.split_a[name], B.chunk(3, dim=0))], dim=0)
    return factor * B @ A


def _pairs(lora: Lora, prefix: str, a: str, b: str, sep: str = ".") -> dict[str, torch.Tensor]:
    out = {}
    for name, (A, B) in lora.layers.items():
        key = prefix + name.replace(".", sep)
        out[f"{key}.{a}.weight"], out[f"{key}.{b}.weight"] = A.contiguous(), B.contiguous()
        if lora.alpha is not None:
            out[f"{key}.alpha"] = torch.tensor(float(lora.alpha))
    return out


def write(path, tensors: dict[str, torch.Tensor], metadata: dict | None = None):
    save_file(tensors, str(path), metadata=metadata)
    return path


def write_ai_toolkit(path, lora: Lora):
    return write(path, _pairs(lora, "diffusion_model.", "lora_A", "lora_B"))


def write_kohya(path, lora: Lora):
    return write(path, _pairs(lora, "diffusion_model.", "lora_down", "lora_up"))


def write_kohya_flat(path, lora: Lora):
    """kohya's flattened module names: `lora_unet_layers_0_attention_qkv.lora_down.weight`."""
    return write(path, _pairs(lora, "lora_unet_", "lora_down", "lora_up", sep="_"))


def write_diffsynth(path, lora: Lora, adapter_segment: bool = False):
    b = "lora_B.default" if adapter_segment else "lora_B"
    a = "lora_A.default" if adapter_segment else "lora_A"
    return write(path, _pairs(lora, "", a, b))


def write_peft(path, lora: Lora):
    """diffusers' layout: `transformer.` prefix, split to_q/to_k/to_v, to_out.0; alpha (if any) in the
    header's `lora_adapter_metadata`, as diffusers' `save_lora_weights` writes it."""
    out = {}
    for name, (A, B) in lora.layers.items():
        key = "transformer." + name
        if name.endswith(".attention.qkv"):
            As = lora.split_a.get(name, (A, A, A))
            for part, a, b in zip(("to_q", "to_k", "to_v"), As, B.chunk(3, dim=0)):
                stem = key[: -len("qkv")] + part
                out[f"{stem}.lora_A.weight"], out[f"{stem}.lora_B.weight"] = a.clone(), b.contiguous()
            continue
        if name.endswith(".attention.o"):
            key = key[: -len("o")] + "to_out.0"
        out[f"{key}.lora_A.weight"], out[f"{key}.lora_B.weight"] = A.contiguous(), B.contiguous()
    metadata = None
    if lora.alpha is not None:
        from peft import LoraConfig

        targets = sorted({k.removeprefix("transformer.").rsplit(".lora_", 1)[0] for k in out})
        config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=targets).to_dict()
        config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
        metadata = {
            "format": "pt",
            "lora_adapter_metadata": json.dumps({f"transformer.{k}": v for k, v in config.items()}),
        }
    return write(path, out, metadata)


WRITERS = {
    "ai-toolkit": write_ai_toolkit,
    "kohya": write_kohya,
    "peft": write_peft,
    "diffsynth": write_diffsynth,
}
