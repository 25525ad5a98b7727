"""The steps of `Ideogram4Pipeline.from_pretrained`: resolve paths, load components, compile, describe.

Each step is a plain function of checked options (`checks.LoadOptions`), so the pipeline class only
composes them.

`fp8_mode` (the fp8 release): "auto" (the default) is `dequantize_once` where the device holds both
DiTs in the compute dtype, else `dequantize_per_call` (`choose_fp8_mode`); "fp8_matmul" multiplies in
fp8 (`fp8_fast_accum=True`: cuBLAS's faster, less exact accumulation).

Memory modes (for 24 GB cards): `offload_text_encoder` keeps the text encoder on the CPU and moves it
to the GPU only to encode a prompt not yet in the cache; `offload_transformers` keeps the DiTs' blocks
in pinned CPU memory and streams each to the GPU one block ahead of its use (models/offload.py:
PCIe-bound, computed ~1.4 s per guided step in bf16 at 25 GB/s, half in fp8; not yet measured);
`vae_tiling` decodes 2048^2 in tiles. `compile_blocks` ("auto", the default: inductor on CUDA)
compiles each transformer block (regional torch.compile: one graph reused 34 times, dynamic in the
sequence length only); a string names the torch.compile backend. `compile_mode` picks an inductor mode
(spec.COMPILE_MODES); "reduce-overhead" and "max-autotune" replay CUDA graphs: the whole DiT is then
one graph (`compile_nets`) and text is padded to multiples of 64 tokens so that few shapes are recorded.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoints import (
    COMPONENTS,
    ModelConfig,
    load_text_encoder,
    load_transformer,
    load_vae,
    resolve_model_configs,
    resolve_source,
)
from .checkpoints.readers import tokenizer_fingerprint, weight_files
from .checks import LoadOptions
from .errors import memory_tips, out_of_memory_as_tips
from .models.offload import stream_blocks
from .models.quant import fp8_paths
from .prompts import load_tokenizer
from .spec import CUDA_GRAPH_TEXT_BUCKET, VARIANTS, variant_for

log = logging.getLogger(__name__)

# fp8_mode="auto" keeps this much device memory free beyond the weights: activations at 2048^2, the VAE
# decode (tiled or not) and the allocator's slack.
FP8_AUTO_HEADROOM_BYTES = 12 * 2**30


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
    """{component: local file or folder}; downloads what a hub source lacks in the local cache.

    With both a source and configs, each config replaces its component and the source gives the rest."""
    configs = [mc for mc in [*(model_configs or []), tokenizer_config] if mc is not None]
    if not load_unconditional:
        configs = [mc for mc in configs if mc.component_name() != "unconditional_transformer"]
    if source is None:
        return resolve_model_configs(configs, None)
    overrides = resolve_model_configs(configs, None, required=())
    base = resolve_source(str(source), revision, tokenizer_source, load_unconditional, elsewhere=tuple(overrides))
    return {**base, **overrides}


def component_sources(source: str | None, configs: list[ModelConfig], revision: str | None) -> dict[str, dict]:
    """Where each component was asked for: {component: {"source": repo id or path, "revision": ...}}."""
    out = {c: {"source": str(source), "revision": revision} for c in COMPONENTS} if source is not None else {}
    for mc in configs:
        out[mc.component_name()] = {"source": mc.model_id or mc.path, "revision": mc.revision}
    return out


def load(source: str | None, configs: tuple, revision, tokenizer_source, opts: LoadOptions) -> tuple[Components, dict]:
    """(Components, describe()'s dict): the files (fetched), the modules (compiled when asked), where each
    came from. `configs`: (model_configs, tokenizer_config) as from_pretrained got them."""
    t0 = time.perf_counter()
    model_configs, tokenizer_config = configs
    paths = resolve_paths(source, model_configs, tokenizer_config, revision, tokenizer_source, opts.load_unconditional)
    given = [*(model_configs or []), *([tokenizer_config] if tokenizer_config else [])]
    sources = component_sources(source, given, revision)
    with out_of_memory_as_tips(lambda: memory_tips({**asdict(opts), "source": source})):
        parts = load_components(paths, opts, variant_for(sources.get("transformer", {}).get("source")))
    compile_nets([parts.transformer, parts.unconditional_transformer], opts)
    info = build_info(source, given or None, revision, sources, paths, parts, opts)
    info["load_s"] = round(time.perf_counter() - t0, 3)
    return parts, info


def component_bytes(paths: dict[str, Path], name: str) -> int:
    return sum(f.stat().st_size for f in weight_files(paths[name], name)) if name in paths else 0


def device_memory_bytes(device: str) -> int:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_properties(torch.device(device)).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_fp8_mode(paths: dict[str, Path], opts: LoadOptions) -> tuple[str, str]:
    """fp8_mode="auto" -> (mode, why). The rule: `dequantize_once` (full speed) when the device's memory
    holds both DiTs in the compute dtype (file bytes x dtype size: fp8 is 1 byte per weight), the text
    encoder (unless offloaded), the VAE and FP8_AUTO_HEADROOM_BYTES; else `dequantize_per_call` (1 byte
    per weight resident). With offload_transformers the fp8 bytes are what crosses PCIe: per call."""
    if opts.fp8_mode != "auto":
        return opts.fp8_mode, "requested"
    if opts.offload_transformers:
        return "dequantize_per_call", "auto: offload_transformers streams fp8 weights (half the bytes of bf16)"
    dits = component_bytes(paths, "transformer") + component_bytes(paths, "unconditional_transformer")
    need = dits * opts.torch_dtype.itemsize + component_bytes(paths, "vae") + FP8_AUTO_HEADROOM_BYTES
    if not opts.offload_text_encoder:
        need += component_bytes(paths, "text_encoder")
    have = device_memory_bytes(opts.device)
    mode = "dequantize_once" if need <= have else "dequantize_per_call"
    return mode, f"auto: needs {need / 2**30:.1f} GiB for dequantize_once, {opts.device} has {have / 2**30:.1f} GiB"


def load_components(paths: dict[str, Path], opts: LoadOptions, variant: str | None = None) -> Components:
    """Every module on its device, eval mode, no gradients; with offload_transformers the DiTs' blocks
    stay in pinned CPU memory and stream in per pass (models/offload.py). `variant`: the spec.VARIANTS
    entry the transformer comes from (single-branch; its caveat is logged)."""
    fp8_mode, why = choose_fp8_mode(paths, opts)
    dit_device = "cpu" if opts.offload_transformers else opts.device
    nets, infos = [], []
    for name in ("transformer", "unconditional_transformer"):
        net, info = None, None
        if name in paths:
            net, info = load_transformer(paths[name], opts.torch_dtype, dit_device, fp8_mode, opts.fp8_fast_accum)
            if info["fp8_mode"]:
                info["fp8_mode_rule"] = why
            if opts.offload_transformers and torch.device(opts.device).type == "cuda":
                stream_blocks(net, opts.device)
        nets.append(net)
        infos.append(info)
    (transformer, uncond), (t_info, u_info) = nets, infos
    if variant is not None:
        log.info("%s is single-branch: no unconditional transformer is needed at guidance 1", variant)
        if VARIANTS[variant].note:
            log.warning("%s: %s", variant, VARIANTS[variant].note)
    elif uncond is None:
        log.warning(
            "no unconditional_transformer loaded: at guidance weights other than 1 the conditional transformer "
            "serves the unconditional branch with empty text (DiffSynth's fallback; images differ from the official method)"
        )
    text_device = "cpu" if opts.offload_text_encoder else opts.device
    text_encoder, te_info = load_text_encoder(paths["text_encoder"], opts.torch_dtype, text_device)
    vae, vae_info = load_vae(paths["vae"], opts.torch_dtype, opts.device)
    if opts.vae_tiling:
        vae.enable_tiling()
    infos = {"transformer": t_info, "unconditional_transformer": u_info, "text_encoder": te_info, "vae": vae_info}
    return Components(transformer, uncond, text_encoder, vae, load_tokenizer(paths["tokenizer"]), infos)


def compile_nets(nets: list[nn.Module | None], opts: LoadOptions, scope: str | None = None) -> str | None:
    """torch.compile the DiTs (nothing without `opts.compile_blocks`); returns the scope, "blocks" or
    "model" (default: "model" exactly when CUDA graphs replay; bench/gpu_check passes it to run the
    whole-DiT path with another backend).

    Without CUDA graphs, regional compile: each block is compiled and the 34 blocks share one graph.
    With CUDA graphs (spec.CUDA_GRAPH_COMPILE_MODES), the whole DiT is one graph: per-block graphs would
    feed one replay's outputs into the next replay of the same graph, which overwrites them (pytorch
    #152887); the pipeline marks each denoising step (`torch.compiler.cudagraph_mark_step_begin`).
    Either way only the sequence length is dynamic (marked on the inputs, `SequenceLayout.mark_dynamic`):
    a new prompt length reuses the graph, every other dimension is specialised.
    """
    if not opts.compile_blocks:
        return None
    scope = scope or ("model" if opts.cuda_graphs else "blocks")
    for net in nets:
        if net is None:
            continue
        net.dynamic_sequence = True
        if scope == "model":
            net.compile(backend=opts.compile_blocks, mode=opts.compile_mode, dynamic=False)
            continue
        for block in net.layers:
            block.compile(backend=opts.compile_blocks, mode=opts.compile_mode, dynamic=False)
    return scope


def text_bucket(opts: LoadOptions) -> int | None:
    """Pad text to a bucket only where shapes are recorded one by one (CUDA graphs); elsewhere exact
    lengths, so a batch of one text length runs without an attention mask."""
    return CUDA_GRAPH_TEXT_BUCKET if opts.cuda_graphs else None


class CompileClock:
    """Wall seconds torch.compile spends compiling (dynamo, the backend, CUDA-graph recording), summed
    over the process, so that a call can report them apart from its sampling time."""

    def __init__(self):
        self.total = 0.0
        self._started: float | None = None

    def _start(self, _args) -> None:
        self._started = time.perf_counter()

    def _end(self, _args) -> None:
        if self._started is not None:
            self.total += time.perf_counter() - self._started
            self._started = None

    def seconds(self) -> float:
        from torch._dynamo.callback import callback_handler

        if self._start not in callback_handler.start_callbacks:  # torch._dynamo.reset() clears them
            callback_handler.register_start_callback(self._start)
            callback_handler.register_end_callback(self._end)
        return self.total


COMPILE_CLOCK = CompileClock()


def build_info(
    source: str | None,
    model_configs: list[ModelConfig] | None,
    revision: str | None,
    sources: dict[str, dict],
    paths: dict[str, Path],
    parts: Components,
    opts: LoadOptions,
) -> dict:
    """What `describe()` returns: the options under their from_pretrained names, and what was loaded
    (`sources`: `component_sources`' answer, recorded per loaded component with its fingerprint)."""
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
        "fp8_mode_rule": t_info.get("fp8_mode_rule"),
        "fp8_fast_accum": opts.fp8_fast_accum if t_info["fp8_mode"] == "fp8_matmul" else None,
        # which path each Linear actually takes, e.g. {"fp8_matmul": 170, "dequantize_per_call": 74}
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
        "compile_scope": ("model" if opts.cuda_graphs else "blocks") if opts.compile_blocks else None,
        "text_bucket": text_bucket(opts),
        "fingerprints": {
            "transformer": t_info["fingerprint"],
            "unconditional_transformer": u_info["fingerprint"] if u_info else None,
            "text_encoder": parts.infos["text_encoder"]["fingerprint"],
            "vae": parts.infos["vae"]["fingerprint"],
            "tokenizer": tokenizer_fingerprint(paths["tokenizer"]),
        },
        # a distilled variant (spec.VARIANTS) when the transformer comes from one: the guard's cue
        "variant": variant_for((sources.get("transformer") or {}).get("source")),
        # per component: the source asked for (repo id or path) and its revision; loaded ones only
        "components": {c: s for c, s in sources.items() if c in paths},
        "paths": {k: str(v) for k, v in paths.items()},
    }
