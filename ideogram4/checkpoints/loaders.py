"""Local files -> modules: the DiTs (plain, fp8, nf4; original or diffusers keys), text encoder, VAE.

Modules are built on the meta device and filled tensor by tensor, so a 9.3B model never exists
twice in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError
from ..models.quant import fuse_shared_inputs, materialize_fp8, swap_linears_for_fp8
from ..models.transformer import Ideogram4Config, Ideogram4Transformer
from ..spec import FP8_MODES, side_range
from .readers import SafetensorsReader, cast, detect_format, fill_module, fingerprint, folder_of, weight_files


def dit_config_from(reader: SafetensorsReader, folder: Path) -> Ideogram4Config:
    """Sizes from the tensor shapes (robust to any config file); rope/eps settings from config.json when present."""
    defaults = Ideogram4Config()
    extra = {}
    cfg_file = folder / "config.json"
    if cfg_file.is_file():
        raw = json.loads(cfg_file.read_text())
        for k in ("rope_theta", "norm_eps"):
            if k in raw:
                extra[k] = type(getattr(defaults, k))(raw[k])
        if "mrope_section" in raw:
            extra["mrope_section"] = tuple(raw["mrope_section"])
        extra["min_side"], extra["max_side"] = side_range(raw)
    keys = reader.keys()
    if detect_format(keys) == "nf4":  # packed shapes say nothing; the release is full size
        return Ideogram4Config(**extra)
    layer_ids = {int(k.split(".")[1]) for k in keys if k.startswith("layers.")}
    emb_dim, in_channels = reader.shape("input_proj.weight")
    head_dim = reader.shape("layers.0.attention.norm_q.weight")[0]
    return Ideogram4Config(
        emb_dim=emb_dim,
        num_layers=len(layer_ids),
        num_heads=emb_dim // head_dim,
        intermediate_size=reader.shape("layers.0.feed_forward.w1.weight")[0],
        adaln_dim=reader.shape("adaln_proj.weight")[0],
        in_channels=in_channels,
        llm_features_dim=reader.shape("llm_cond_proj.weight")[1],
        **extra,
    )


def _from_diffusers_key(key: str) -> str:
    return key.replace(".attention.to_out.0.", ".attention.o.")


def read_dit_state_dict(reader: SafetensorsReader, dtype: torch.dtype, device: str) -> dict[str, torch.Tensor]:
    """Tensors in the original key layout; diffusers' split q/k/v are fused back (rows [Q|K|V])."""
    out: dict[str, torch.Tensor] = {}
    keys = reader.keys()
    for key in keys:
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        if ".attention.to_q." in key:
            parts = [reader.get(key.replace("to_q", n)) for n in ("to_q", "to_k", "to_v")]
            out[key.replace(".to_q.", ".qkv.")] = cast(torch.cat(parts, 0), dtype, device, key)
        else:
            out[_from_diffusers_key(key)] = cast(reader.get(key), dtype, device, key)
    return out


def load_transformer(
    path: Path, dtype: torch.dtype, device: str, fp8_mode: str = "dequantize_per_call", fast_accum: bool = False
) -> tuple[Ideogram4Transformer, dict]:
    if fp8_mode not in FP8_MODES:
        raise ValueError(f"fp8_mode={fp8_mode!r}: use one of {FP8_MODES}")
    files, folder = weight_files(path, "transformer"), folder_of(path)
    reader = SafetensorsReader(files)
    fmt = detect_format(reader.keys())
    config = dit_config_from(reader, folder)
    if fmt == "nf4":
        model = _load_nf4_transformer(reader, config, dtype, device)
    else:
        with torch.device("meta"):
            model = Ideogram4Transformer(config)
        if fmt == "fp8":
            quantized = {
                _from_diffusers_key(k[: -len(".weight_scale")] + ".").rstrip(".").replace(".to_q", ".qkv")
                for k in reader.keys()
                if k.endswith(".weight_scale") and ".to_k." not in k and ".to_v." not in k
            }
            # fp8_matmul keeps the fragile layers (quant.FP8_MATMUL_PROTECTED) on the weight-only path
            load_mode = "dequantize_per_call" if fp8_mode == "dequantize_once" else fp8_mode
            swap_linears_for_fp8(model, quantized, load_mode, fast_accum=fast_accum)
        fill_module(model, read_dit_state_dict(reader, dtype, device), str(files[0]))
        if fmt == "fp8" and fp8_mode == "dequantize_once":
            materialize_fp8(model, dtype)  # one Linear at a time: peak = the model + one float Linear
        elif fmt == "fp8" and fp8_mode == "fp8_matmul":
            fuse_shared_inputs(model)  # w1|w3 as one weight: one GEMM
    model.eval().requires_grad_(False)
    info = {
        "format": fmt,
        "fp8_mode": fp8_mode if fmt == "fp8" else None,
        "fingerprint": fingerprint(files),
        "layout": "diffusers" if any(".to_q." in k for k in reader.keys()) else "original",
        "config": config,
    }
    return model, info


def _load_nf4_transformer(reader: SafetensorsReader, config: Ideogram4Config, dtype: torch.dtype, device: str):
    """bitsandbytes nf4 (no double quantisation): every Linear becomes a Linear4bit from its pre-quantised state."""
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        raise CheckpointError(
            "this checkpoint is nf4 (bitsandbytes); install the extra: pip install 'ideogram4-runner[nf4]' "
            "(CUDA only), or load the fp8 or bf16 release (ideogram-ai/ideogram-4-fp8, DiffSynth-Studio/ideogram-4-bf16-repackage)"
        ) from e
    if not torch.cuda.is_available():
        raise CheckpointError(
            "nf4 weights run on CUDA only: pass device='cuda' on a GPU machine, or load the fp8 or bf16 release "
            "(ideogram-ai/ideogram-4-fp8, DiffSynth-Studio/ideogram-4-bf16-repackage)"
        )
    if not str(device).startswith("cuda"):
        raise CheckpointError(
            "nf4 transformers are not CPU-offloaded (they are already ~5 GB each): "
            "pass offload_transformers=False (offload_text_encoder=True still saves memory)"
        )
    with torch.device("meta"):
        model = Ideogram4Transformer(config)
    keys = reader.keys()
    quantized = {k[: -len(".weight.absmax")] for k in keys if k.endswith(".weight.absmax")}
    for name, child in list(model.named_modules()):
        if isinstance(child, nn.Linear) and name in quantized:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            prefix = f"{name}.weight."
            stats = {k[len(prefix) :]: reader.get(k) for k in keys if k.startswith(prefix)}
            layer = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=dtype,
                quant_type="nf4",
                device="meta",
            )
            layer.weight = bnb.nn.Params4bit.from_prequantized(reader.get(f"{name}.weight"), stats, device=device)
            if child.bias is not None:
                layer.bias = nn.Parameter(
                    reader.get(f"{name}.bias").to(device=device, dtype=dtype), requires_grad=False
                )
            setattr(parent, attr, layer)
    rest = {
        k: cast(reader.get(k), dtype, device, k)
        for k in keys
        if not any(k.startswith(f"{q}.weight") or k == f"{q}.bias" for q in quantized)
    }
    model.load_state_dict(rest, strict=False, assign=True)
    unloaded = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.is_meta]
    if unloaded:
        raise CheckpointError(
            f"the nf4 checkpoint lacks {len(unloaded)} tensors, e.g. {unloaded[:4]}: is the download complete?"
        )
    return model


def load_text_encoder(path: Path, dtype: torch.dtype, device: str) -> tuple[nn.Module, dict]:
    """Only the Qwen3-VL language model is built and read; the vision tower's weights are skipped."""
    from transformers import AutoConfig

    from ..models.text_encoder import Ideogram4TextEncoder

    files, folder = weight_files(path, "text_encoder"), folder_of(path)
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder} has no config.json: the text encoder needs its Qwen3-VL config next to the weights"
        )
    config = AutoConfig.from_pretrained(str(folder))
    if getattr(config, "quantization_config", None):
        return _load_bnb_text_encoder(folder, dtype, device)
    text_config = getattr(config, "text_config", config)
    text_config._attn_implementation = "sdpa"
    reader = SafetensorsReader(files)

    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextModel, Qwen3VLTextRotaryEmbedding

    with torch.device("meta"):
        lm = Qwen3VLTextModel(text_config)
    prefixes = ("model.language_model.", "language_model.", "model.")
    state = {}
    for key in reader.keys():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None or key.startswith(("visual.", "model.visual.", "lm_head.")):
            continue
        state[key[len(prefix) :]] = key
    quantized = {k[: -len(".weight_scale")] for k in state if k.endswith(".weight_scale")}
    fmt = "fp8" if quantized else "plain"
    if quantized:
        swap_linears_for_fp8(lm, quantized, "dequantize_per_call")
    fill_module(lm, {k: cast(reader.get(src), dtype, device, src) for k, src in state.items()}, str(files[0]))
    # Non-persistent buffers (RoPE frequencies) are not in the file: build them for real.
    lm.rotary_emb = Qwen3VLTextRotaryEmbedding(text_config).to(device)
    encoder = Ideogram4TextEncoder(lm).eval().requires_grad_(False)
    return encoder, {"format": fmt, "fingerprint": fingerprint(files)}


def _load_bnb_text_encoder(folder: Path, dtype: torch.dtype, device: str):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise CheckpointError(
            "this text encoder is bitsandbytes-quantised (nf4): pip install 'ideogram4-runner[nf4]' (CUDA only)"
        ) from e
    from transformers import AutoModel

    from ..models.text_encoder import Ideogram4TextEncoder

    model = AutoModel.from_pretrained(str(folder), dtype=dtype, device_map={"": device})
    return Ideogram4TextEncoder(model.language_model).eval(), {
        "format": "nf4",
        "fingerprint": fingerprint(weight_files(folder, "text_encoder")),
    }


def load_vae(path: Path, dtype: torch.dtype, device: str) -> tuple[nn.Module, dict]:
    from diffusers import AutoencoderKLFlux2

    from ..models.vae import Ideogram4VAE

    files, folder = weight_files(path, "vae"), folder_of(path)
    SafetensorsReader(files)  # a clear error for a truncated file before diffusers reads it
    if (folder / "config.json").is_file():
        ae = AutoencoderKLFlux2.from_pretrained(str(folder), dtype=dtype, low_cpu_mem_usage=False)
    else:  # DiffSynth-style single file: the FLUX.2 VAE with diffusers' default config
        from safetensors.torch import load_file

        ae = AutoencoderKLFlux2()
        ae.load_state_dict(load_file(str(files[0])))
        ae = ae.to(dtype)
    return Ideogram4VAE(ae.to(device).eval().requires_grad_(False)), {
        "format": "plain",
        "fingerprint": fingerprint(files),
    }
