"""LoRA key layouts -> our DiT's Linear names, with A, B and the file's scale folded into B.

Layouts (detected from the keys; several can be read, a file is labelled by what it uses):
- "ai-toolkit": ai-toolkit (ostris) / ComfyUI, `diffusion_model.<original name>.lora_A/lora_B.weight`,
  fused `attention.qkv` (also `conditional_transformer.` as prefix).
- "kohya": `lora_down/lora_up.weight` + `<module>.alpha` (scale alpha / rank), dotted original names
  under a prefix, or kohya's flattened `lora_unet_layers_0_attention_qkv`.
- "peft": diffusers / PEFT, `transformer.layers.N.attention.to_q|to_k|to_v|to_out.0...lora_A/lora_B`,
  q/k/v split; alpha from the header's `lora_adapter_metadata` (r, lora_alpha, rank/alpha patterns).
- "diffsynth": DiffSynth-Studio, original names with no prefix, `lora_A/lora_B[.default].weight`.

The split q/k/v LoRAs are fused into one LoRA on our `attention.qkv` whose delta is exactly the three
deltas stacked: with one shared A (what a converter from a fused file writes), A stays and the Bs
are stacked; otherwise A = [A_q; A_k; A_v] and B is block-diagonal. Anything not placeable, a
missing half, a shape that does not fit, DoRA / LoKr / LoHa: `LoraError` before anything is modified.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from .files import LoraError, LoraFile, adapter_metadata

LAYOUT_DESCRIPTIONS = {
    "ai-toolkit": "ai-toolkit/ComfyUI `diffusion_model.layers.N.attention.qkv.lora_A.weight`",
    "kohya": "kohya `<prefix>layers.N.attention.qkv.lora_down.weight` + `.alpha` (or `lora_unet_layers_N_...`)",
    "peft": "diffusers/PEFT `transformer.layers.N.attention.to_q.lora_A.weight` (split q/k/v, `to_out.0`)",
    "diffsynth": "DiffSynth `layers.N.attention.qkv.lora_A[.default].weight` (no prefix)",
}
# Stripped from module names, first match wins. `unconditional_transformer.` is deliberately absent:
# choose the network with target=..., the file describes one DiT.
PREFIXES = (
    "model.diffusion_model.",
    "diffusion_model.",
    "conditional_transformer.",
    "base_model.model.",
    "transformer.",
    "pipe.dit.",
    "dit.",
    "lora_unet_",
    "lora_transformer_",
)
_KEY = re.compile(r"^(?P<module>.+?)\.(?P<role>lora_A|lora_B|lora_down|lora_up)(?:\.(?P<adapter>[^.]+))?\.weight$")
_REFUSED = {
    "dora_scale": "DoRA (dora_scale)",
    "lora_magnitude_vector": "DoRA (lora_magnitude_vector)",
    ".lokr_": "LoKr",
    ".hada_": "LoHa",
    ".oft_": "OFT",
}
_QKV_PARTS = {"to_q": 0, "to_k": 1, "to_v": 2}


@dataclass
class LoraWeights:
    """A LoRA placed on our DiT: Linear name -> (A [r, in], B [out, r] with alpha/rank folded in), fp32."""

    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]
    layout: str
    rank: int  # the largest rank in the file
    file: LoraFile


@dataclass
class _Entry:
    key: str  # the file's module name, for messages
    A: torch.Tensor | None = None
    B: torch.Tensor | None = None
    alpha: float | None = None


def name_table(shapes: dict[str, tuple[int, int]]) -> dict[str, tuple[str, int | None]]:
    """Every spelling of each Linear -> (our name, q/k/v part or None): original, diffusers, flattened."""
    table: dict[str, tuple[str, int | None]] = {}
    for name in shapes:
        spellings = {name: None}
        if name.endswith(".attention.qkv"):
            stem = name[: -len("qkv")]
            spellings.update({stem + p: i for p, i in _QKV_PARTS.items()})
        if name.endswith(".attention.o"):
            spellings[name[: -len("o")] + "to_out.0"] = None
        for spelling, part in spellings.items():
            table[spelling] = table[spelling.replace(".", "_")] = (name, part)
    return table


def refuse_unsupported(lora: LoraFile) -> None:
    for marker, what in _REFUSED.items():
        hits = [k for k in lora.tensors if marker in k]
        if hits:
            raise LoraError(
                f"LoRA file {lora.label} is {what} (e.g. {hits[0]}): only plain LoRA (A/B or down/up pairs) "
                "is supported; dropping those keys would silently give a different model"
            )
    if adapter_metadata(lora).get("use_dora"):
        raise LoraError(f"LoRA file {lora.label} is DoRA (use_dora in its metadata): only plain LoRA is supported")


def _split_keys(lora: LoraFile, table: dict) -> tuple[dict[tuple[str, int | None], _Entry], list[str], set[str]]:
    """Group the file's keys by the Linear they belong to; return (entries, unplaceable keys, traits)."""
    entries: dict[tuple[str, int | None], _Entry] = {}
    unplaced, traits = [], set()
    for key in lora.tensors:
        m = _KEY.match(key)
        module = m["module"] if m else key[: -len(".alpha")] if key.endswith(".alpha") else None
        target = _place(module, table, traits) if module is not None else None
        if target is None:
            unplaced.append(key)
            continue
        entry = entries.setdefault(target, _Entry(module))
        if entry.key != module:
            raise LoraError(f"LoRA file {lora.label} holds two LoRAs for {target[0]}: {entry.key} and {module}")
        tensor = lora.tensors[key]
        if m is None:
            entry.alpha = float(tensor.reshape(-1)[0])
            continue
        traits.add("down/up" if m["role"] in ("lora_down", "lora_up") else "A/B")
        slot = "A" if m["role"] in ("lora_A", "lora_down") else "B"
        if getattr(entry, slot) is not None:
            raise LoraError(f"LoRA file {lora.label} holds {slot} of {module} twice (e.g. {key})")
        setattr(entry, slot, tensor)
    return entries, unplaced, traits


def _place(module: str, table: dict, traits: set[str]) -> tuple[str, int | None] | None:
    prefix = next((p for p in PREFIXES if module.startswith(p)), "")
    found = table.get(module[len(prefix) :])
    if found is None:
        return None
    traits.add(f"prefix:{prefix}")
    if found[1] is not None or ".to_out." in module or "_to_out_" in module:
        traits.add("diffusers names")
    return found


def _layout(traits: set[str]) -> str:
    prefixes = {t.removeprefix("prefix:") for t in traits if t.startswith("prefix:")}
    if "down/up" in traits:
        return "kohya"
    if "diffusers names" in traits or prefixes & {"transformer.", "base_model.model."}:
        return "peft"
    if prefixes <= {"", "pipe.dit.", "dit."}:
        return "diffsynth"
    return "ai-toolkit"


def _module_scale(entry: _Entry, our_name: str, rank: int, meta: dict) -> float:
    """The file's own factor: alpha / rank (kohya `.alpha`, or PEFT metadata), 1 when it gives none."""
    if entry.alpha is not None:
        return entry.alpha / rank
    if not meta:
        return 1.0
    alpha = _pattern_value(meta.get("alpha_pattern") or {}, entry.key, our_name, meta.get("lora_alpha"))
    if alpha is None:
        return 1.0
    return float(alpha) / (math.sqrt(rank) if meta.get("use_rslora") else rank)


def _pattern_value(patterns: dict, key: str, our_name: str, default):
    """PEFT alpha patterns: a module name, or its tail after a dot (a leading ^ anchors it)."""
    for pattern, value in patterns.items():
        p = pattern.lstrip("^")
        for name in (key.removeprefix("transformer."), our_name):
            if name == p or name.endswith("." + p):
                return value
    return default


def _check_pair(lora: LoraFile, entry: _Entry) -> int:
    if entry.A is None or entry.B is None:
        half = "A (lora_A / lora_down)" if entry.A is None else "B (lora_B / lora_up)"
        raise LoraError(f"LoRA file {lora.label}: {entry.key} has no {half}; the file is incomplete")
    if entry.A.ndim != 2 or entry.B.ndim != 2 or entry.A.shape[0] != entry.B.shape[1]:
        raise LoraError(
            f"LoRA file {lora.label}: {entry.key} has A {tuple(entry.A.shape)} and B {tuple(entry.B.shape)}, "
            "which do not form a low-rank pair (A [r, in], B [out, r])"
        )
    return entry.A.shape[0]


def _check_shape(lora: LoraFile, name: str, A: torch.Tensor, B: torch.Tensor, shape: tuple[int, int]) -> None:
    out_f, in_f = shape
    if A.shape[1] != in_f or B.shape[0] != out_f:
        raise LoraError(
            f"LoRA file {lora.label} does not fit this model: {name} is [out {out_f}, in {in_f}] but the LoRA "
            f"gives A {tuple(A.shape)} and B {tuple(B.shape)} (a LoRA for another model or size?)"
        )


def _fuse_parts(
    parts: dict[int, tuple[torch.Tensor, torch.Tensor]], out_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """q/k/v LoRAs -> one LoRA on qkv whose delta is the three deltas stacked in rows [q | k | v]."""
    block = out_rows // 3
    As = [parts[i][0] for i in sorted(parts)]
    if len(parts) == 3 and all(torch.equal(As[0], a) for a in As[1:]):
        return As[0], torch.cat([parts[i][1] for i in range(3)], dim=0)
    A = torch.cat(As, dim=0)  # (sum r, in)
    B = torch.zeros(out_rows, A.shape[0], dtype=A.dtype)  # block-diagonal: part i's rows, part i's ranks
    col = 0
    for i in sorted(parts):
        b = parts[i][1]
        B[i * block : (i + 1) * block, col : col + b.shape[1]] = b
        col += b.shape[1]
    return A, B


def map_lora(lora: LoraFile, shapes: dict[str, tuple[int, int]]) -> LoraWeights:
    """Place every key of `lora` on the Linears named in `shapes` ({name: (out, in)}) or raise."""
    refuse_unsupported(lora)
    entries, unplaced, traits = _split_keys(lora, name_table(shapes))
    if unplaced:
        tried = "; ".join(LAYOUT_DESCRIPTIONS.values())
        raise LoraError(
            f"LoRA file {lora.label}: {len(unplaced)} of {len(lora.tensors)} keys match no Linear of this DiT, "
            f"e.g. {unplaced[:4]}. Layouts tried: {tried}"
        )
    meta = adapter_metadata(lora)
    fused: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    ranks = []
    for (name, part), entry in entries.items():
        rank = _check_pair(lora, entry)
        ranks.append(rank)
        B = entry.B.float() * _module_scale(entry, name, rank, meta)
        rows = shapes[name][0] // 3 if part is not None else shapes[name][0]
        _check_shape(
            lora,
            f"{name}{'' if part is None else ' (' + entry.key.rsplit('.', 1)[-1] + ')'}",
            entry.A,
            B,
            (rows, shapes[name][1]),
        )
        fused.setdefault(name, {})[-1 if part is None else part] = (entry.A.float(), B)
    layers = {}
    for name, parts in fused.items():
        if -1 in parts and len(parts) > 1:
            raise LoraError(f"LoRA file {lora.label} holds {name} both fused and as split q/k/v parts")
        layers[name] = parts[-1] if -1 in parts else _fuse_parts(parts, shapes[name][0])
    if not layers:
        raise LoraError(f"LoRA file {lora.label} holds only alphas, no LoRA weights")
    return LoraWeights(layers, _layout(traits), max(ranks), lora)
