"""A small LoRA for the tiny model, written in one trainer's key layout, so LoRA can be tried offline.

The same random LoRA (fixed seed, rank 4, on every attention and feed-forward Linear of each layer)
is spelled three ways: ai-toolkit (`diffusion_model.` + fused qkv, lora_A/lora_B), kohya (flattened
`lora_unet_` names, lora_down/lora_up + alpha) and PEFT/diffusers (`transformer.`, split to_q/to_k/to_v,
to_out.0). Loaded at the same scale, the three make the same image.
"""

from __future__ import annotations

from pathlib import Path

import torch

EXAMPLE_LAYOUTS = ("aitk", "kohya", "peft")
_TARGETS = ("attention.qkv", "attention.o", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
_PEFT_NAMES = {"attention.o": "attention.to_out.0"}


def example_factors(rank: int = 4, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Our Linear name -> (A [rank, in], B [out, rank]) for the tiny DiT; delta W = B @ A."""
    from ideogram4.models.transformer import Ideogram4Transformer
    from ideogram4.tiny import TINY_DIT

    from .manager import linear_shapes

    with torch.device("meta"):
        shapes = linear_shapes(Ideogram4Transformer(TINY_DIT))
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(shapes):
        if name.startswith("layers.") and name.split(".", 2)[2] in _TARGETS:
            rows, cols = shapes[name]
            # strong enough to change a tiny-model image visibly at scale 1
            out[name] = (torch.randn(rank, cols, generator=g) / cols**0.5, torch.randn(rows, rank, generator=g) * 0.5)
    return out


def example_tensors(layout: str, rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """The example LoRA's tensors as the `layout` trainer names them."""
    if layout not in EXAMPLE_LAYOUTS:
        raise ValueError(f"layout {layout!r}: choose one of {', '.join(EXAMPLE_LAYOUTS)}")
    tensors: dict[str, torch.Tensor] = {}
    for name, (A, B) in example_factors(rank, seed).items():
        if layout == "aitk":
            tensors[f"diffusion_model.{name}.lora_A.weight"] = A
            tensors[f"diffusion_model.{name}.lora_B.weight"] = B
        elif layout == "kohya":  # alpha = rank: the scale alpha / rank is 1, as in the other two
            stem = "lora_unet_" + name.replace(".", "_")
            tensors |= {
                f"{stem}.lora_down.weight": A,
                f"{stem}.lora_up.weight": B,
                f"{stem}.alpha": torch.tensor(rank * 1.0),
            }
        else:
            tensors |= _peft_pair(name, A, B)
    return {k: v.contiguous() for k, v in tensors.items()}


def _peft_pair(name: str, A: torch.Tensor, B: torch.Tensor) -> dict[str, torch.Tensor]:
    layer, target = name.split(".", 2)[1], name.split(".", 2)[2]
    stem = f"transformer.layers.{layer}."
    if target != "attention.qkv":
        key = stem + _PEFT_NAMES.get(target, target)
        return {f"{key}.lora_A.weight": A, f"{key}.lora_B.weight": B}
    out = {}  # diffusers splits the fused projection: one A shared by q, k and v, B in three row blocks
    for part, rows in zip(("to_q", "to_k", "to_v"), B.chunk(3, dim=0)):
        out[f"{stem}attention.{part}.lora_A.weight"] = A.clone()
        out[f"{stem}attention.{part}.lora_B.weight"] = rows
    return out


def make_example(path: str | Path, layout: str = "aitk", rank: int = 4, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(example_tensors(layout, rank, seed), str(path), metadata={"format": "pt", "ideogram4:example": layout})
    return path
