"""The steps of `Ideogram4Pipeline.from_pretrained`: resolve paths, load components, compile, describe.

Each step is a plain function of checked options (`checks.LoadOptions`), so the pipeline class only
composes them.

Memory modes (for 24 GB cards): `offload_text_encoder` keeps the text encoder on the CPU and moves it
to the GPU only to encode a prompt not yet in the cache; `offload_transformers` keeps both DiTs on the
CPU and moves each to the GPU for its pass (slow: PCIe-bound, ~0.4 s per step for fp8 at 25 GB/s);
`vae_tiling` decodes 2048^2 in tiles. `compile_blocks` compiles each transformer block (regional
torch.compile: one compiled block reused 34 times); a string names the torch.compile backend.
`compile_mode` picks an inductor mode (spec.COMPILE_MODES); "reduce-overhead" replays CUDA graphs,
with text padded to multiples of 64 tokens so that few shapes are recorded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from .checkpoints import (
    ModelConfig,
    load_text_encoder,
    load_transformer,
    load_vae,
    resolve_model_configs,
    resolve_source,
)
from .checks import LoadOptions
from .models.quant import fp8_paths
from .prompts import load_tokenizer

log = logging.getLogger(__name__)

# Text rows are padded to a multiple of this when CUDA graphs replay the compiled blocks: each new
# sequence length records a new graph, and 2048 / 64 = 32 lengths at most per resolution.
CUDA_GRAPH_TEXT_BUCKET = 64


@dataclass
class Components:
    transformer: nn.Module
    unconditional_transformer: nn.Module | None
    text_encoder: nn.Module
    vae: nn.Module
    tokenizer: object
    infos: dict[str, dict]  # per component: format, fingerprint (and layout, fp8_mode for the DiTs)


def resolve_paths(
    source: str | None,
    model_configs: list[ModelConfig] | None,
    tokenizer_config: ModelConfig | None,
    revision: str | None,
    tokenizer_source: str | None,
    load_unconditional: bool,
) -> dict[str, Path]:
    """{component: local file or folder}; downloads what a hub source lacks in the local cache."""
    if source is not None:
        return resolve_source(str(source), revision, tokenizer_source, load_unconditional)
    paths = resolve_model_configs(model_configs, tokenizer_config)
    if not load_unconditional:
        paths.pop("unconditional_transformer", None)
    return paths


def load_components(paths: dict[str, Path], opts: LoadOptions) -> Components:
    """Every module on its device (the CPU for offloaded ones), eval mode, no gradients."""
    dit_device = "cpu" if opts.offload_transformers else opts.device
    transformer, t_info = load_transformer(paths["transformer"], opts.torch_dtype, dit_device, opts.fp8_mode)
    uncond, u_info = None, None
    if "unconditional_transformer" in paths:
        uncond, u_info = load_transformer(
            paths["unconditional_transformer"], opts.torch_dtype, dit_device, opts.fp8_mode
        )
    else:
        log.warning(
            "no unconditional_transformer loaded: the conditional transformer serves the unconditional "
            "branch with empty text (DiffSynth's fallback; images differ from the official method)"
        )
    text_device = "cpu" if opts.offload_text_encoder else opts.device
    text_encoder, te_info = load_text_encoder(paths["text_encoder"], opts.torch_dtype, text_device)
    vae, vae_info = load_vae(paths["vae"], opts.torch_dtype, opts.device)
    if opts.vae_tiling:
        vae.enable_tiling()
    infos = {"transformer": t_info, "unconditional_transformer": u_info, "text_encoder": te_info, "vae": vae_info}
    return Components(transformer, uncond, text_encoder, vae, load_tokenizer(paths["tokenizer"]), infos)


def compile_blocks(nets: list[nn.Module | None], backend: str, mode: str | None) -> None:
    """Regional compile: each transformer block is compiled; the 34 blocks share one compiled graph.

    Sequence lengths are dynamic (text length varies per prompt, the unconditional pass has no text),
    so a new prompt length reuses the graph instead of recompiling.
    """
    for net in nets:
        for block in net.layers if net is not None else ():
            block.compile(backend=backend, mode=mode, dynamic=True)


def text_bucket(opts: LoadOptions) -> int | None:
    """Pad text to a bucket only where shapes are recorded one by one (CUDA graphs)."""
    return CUDA_GRAPH_TEXT_BUCKET if opts.compile_blocks and opts.compile_mode == "reduce-overhead" else None


def build_info(
    source: str | None,
    model_configs: list[ModelConfig] | None,
    revision: str | None,
    paths: dict[str, Path],
    parts: Components,
    opts: LoadOptions,
) -> dict:
    """What `describe()` returns: the options under their from_pretrained names, and what was loaded."""
    t_info, u_info = parts.infos["transformer"], parts.infos["unconditional_transformer"]
    return {
        "source": str(source)
        if source is not None
        else [f"{m.model_id or m.path}:{m.origin_file_pattern or ''}" for m in model_configs],
        "revision": revision,
        "dtype": str(opts.torch_dtype).replace("torch.", ""),
        "device": opts.device,
        "format": t_info["format"],
        "layout": t_info["layout"],
        "fp8_mode": t_info["fp8_mode"],
        # which path each Linear actually takes, e.g. {"fp8_matmul": 136, "dequantize_per_call": 108}
        "fp8_paths": fp8_paths(parts.transformer) if t_info["format"] == "fp8" else None,
        "unconditional": "unconditional_transformer" if u_info else "conditional fallback",
        "load_unconditional": u_info is not None,
        "offload_text_encoder": opts.offload_text_encoder,
        "offload_transformers": opts.offload_transformers,
        "offload": [
            n
            for n, on in (("text_encoder", opts.offload_text_encoder), ("transformers", opts.offload_transformers))
            if on
        ],
        "vae_tiling": opts.vae_tiling,
        "compile_blocks": opts.compile_blocks or False,
        "compile_mode": (opts.compile_mode or "default") if opts.compile_blocks == "inductor" else None,
        "text_bucket": text_bucket(opts),
        "fingerprints": {
            "transformer": t_info["fingerprint"],
            "unconditional_transformer": u_info["fingerprint"] if u_info else None,
            "text_encoder": parts.infos["text_encoder"]["fingerprint"],
            "vae": parts.infos["vae"]["fingerprint"],
        },
        "paths": {k: str(v) for k, v in paths.items()},
    }
