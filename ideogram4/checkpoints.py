"""Weights source -> local files -> modules.

Sources: a hub repo id (`ideogram-ai/ideogram-4-fp8`, `ideogram-ai/ideogram-4-nf4`,
`DiffSynth-Studio/ideogram-4-bf16-repackage`, a diffusers-layout repo), a local folder in either
layout, or DiffSynth-style `ModelConfig`s naming single files. Layout (original vs diffusers keys)
and format (plain, fp8, nf4) are detected from the safetensors keys. Modules are built on the meta
device and filled tensor by tensor, so a 9.3B model never exists twice in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .errors import CheckpointError
from .models.quant import FP8_MODES, materialize_fp8, swap_linears_for_fp8
from .models.transformer import Ideogram4Config, Ideogram4Transformer

log = logging.getLogger(__name__)

COMPONENTS = ("transformer", "unconditional_transformer", "text_encoder", "vae", "tokenizer")
REQUIRED = ("transformer", "text_encoder", "vae", "tokenizer")
WEIGHT_FILES = {
    "transformer": "diffusion_pytorch_model.safetensors",
    "unconditional_transformer": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
}
# The bf16 repackage ships no tokenizer; DiffSynth takes it from the fp8 release.
DEFAULT_TOKENIZER_REPO = "ideogram-ai/ideogram-4-fp8"


@dataclass
class ModelConfig:
    """One component's files, as in DiffSynth-Studio: a hub file pattern or a local path."""

    model_id: str | None = None
    origin_file_pattern: str | None = None
    path: str | None = None
    revision: str | None = None

    @property
    def component(self) -> str:
        ref = (self.origin_file_pattern or self.path or "").replace("\\", "/").strip("/")
        parts = ref.split("/")
        for part in reversed(parts[:-1] if len(parts) > 1 and "." in parts[-1] else parts):
            if part in COMPONENTS:
                return part
        raise CheckpointError(
            f"cannot tell which component {ref!r} is: the path must contain one of the folders {', '.join(COMPONENTS)} "
            "(e.g. origin_file_pattern='transformer/diffusion_pytorch_model.safetensors')"
        )


# --- finding files ------------------------------------------------------------------------------


def is_local(source: str) -> bool:
    return os.path.isdir(os.path.expanduser(source)) or source.startswith((".", "/", "~"))


def hub_download(repo_id: str, patterns: list[str], revision: str | None = None) -> Path:
    """Only the named files/folders of a repo, through huggingface_hub's cache; clear errors for the usual failures."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, revision=revision))
    except GatedRepoError as e:
        raise CheckpointError(
            f"{repo_id} is gated: accept its licence on the Hugging Face page, then log in "
            "(`hf auth login`) or set HF_TOKEN, and run again"
        ) from e
    except RepositoryNotFoundError as e:
        raise CheckpointError(
            f"{repo_id} was not found, or it is gated/private and no token was sent: check the name, then "
            "`hf auth login` or set HF_TOKEN"
        ) from e
    except RevisionNotFoundError as e:
        raise CheckpointError(f"{repo_id} has no revision {revision!r}: pin an existing branch, tag or commit") from e
    except LocalEntryNotFoundError as e:
        raise CheckpointError(
            f"{repo_id} ({', '.join(patterns)}) is not in the local cache and the hub cannot be reached "
            "(offline or HF_HUB_OFFLINE=1): download it on a machine with network access "
            f"(`hf download {repo_id}`) and copy the cache, or point model.path at a local folder"
        ) from e


def resolve_source(
    source: str, revision: str | None = None, tokenizer_source: str | None = None, load_unconditional: bool = True
) -> dict[str, Path]:
    """A folder or repo id -> {component: local folder}. Raises CheckpointError naming what is missing."""
    wanted = [c for c in COMPONENTS if load_unconditional or c != "unconditional_transformer"]
    if is_local(source):
        root = Path(os.path.expanduser(source))
        if not root.is_dir():
            raise CheckpointError(f"model folder {root} does not exist: check model.path (or the source you passed)")
    else:
        root = hub_download(source, [f"{c}/*" for c in wanted], revision)
    found = {c: root / c for c in wanted if (root / c).is_dir()}
    if "tokenizer" not in found:
        if tokenizer_source:
            found["tokenizer"] = resolve_tokenizer(tokenizer_source, revision=None)
        elif not is_local(source):
            log.info("%s has no tokenizer/; using %s's, as DiffSynth-Studio does", source, DEFAULT_TOKENIZER_REPO)
            found["tokenizer"] = resolve_tokenizer(DEFAULT_TOKENIZER_REPO)
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        hint = " (pass tokenizer_source=... for a repo without one)" if missing == ["tokenizer"] else ""
        raise CheckpointError(
            f"{source} is missing {', '.join(f'{m}/' for m in missing)}: an Ideogram 4 checkpoint folder needs "
            f"{', '.join(f'{c}/' for c in REQUIRED)} (and optionally unconditional_transformer/){hint}"
        )
    return found


def resolve_tokenizer(source: str, revision: str | None = None) -> Path:
    if is_local(source):
        p = Path(os.path.expanduser(source))
        return p / "tokenizer" if (p / "tokenizer").is_dir() else p
    return hub_download(source, ["tokenizer/*"], revision) / "tokenizer"


def resolve_model_configs(model_configs: list[ModelConfig], tokenizer_config: ModelConfig | None) -> dict[str, Path]:
    """DiffSynth-style configs -> {component: local folder}. The component's whole folder is fetched (config + weights)."""
    found: dict[str, Path] = {}
    for mc in list(model_configs) + ([tokenizer_config] if tokenizer_config else []):
        component = mc.component
        if mc.path:
            p = Path(os.path.expanduser(mc.path))
            if not p.exists():
                raise CheckpointError(f"ModelConfig(path={mc.path!r}) does not exist")
            found[component] = p  # a named file is used as named; a folder is searched (weight_files)
        elif mc.model_id:
            found[component] = hub_download(mc.model_id, [f"{component}/*"], mc.revision) / component
        else:
            raise CheckpointError("a ModelConfig needs model_id + origin_file_pattern, or path")
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        raise CheckpointError(
            f"model_configs name no {', '.join(missing)}: add ModelConfig(model_id=..., origin_file_pattern='{missing[0]}/...')"
            + (
                " and tokenizer_config=ModelConfig(model_id=..., origin_file_pattern='tokenizer/')"
                if "tokenizer" in missing
                else ""
            )
        )
    return found


# --- reading safetensors ------------------------------------------------------------------------


def weight_files(folder: Path, component: str) -> list[Path]:
    """The component's safetensors files: a sharded index first, then the single file (as the official loader).

    `folder` may also be one explicitly named file (DiffSynth-style `ModelConfig(path=...)`)."""
    if folder.is_file():
        return [folder]
    name = WEIGHT_FILES[component]
    index = folder / f"{name}.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / s for s in shards]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise CheckpointError(f"{index} lists shards that are missing: {', '.join(absent)}; download them again")
        return files
    single = folder / name
    if single.is_file():
        return [single]
    others = sorted(folder.glob("*.safetensors"))
    if len(others) == 1:
        return others
    raise CheckpointError(
        f"{folder} has no {name} (nor {name}.index.json): the {component} weights are missing; download them again"
    )


def _folder_of(path: Path) -> Path:
    """Where a component's config.json lives: next to a named file, or in the folder itself."""
    return path.parent if path.is_file() else path


class SafetensorsReader:
    """Keys and shapes without reading data; tensors one at a time (memory-mapped)."""

    def __init__(self, files: list[Path]):
        from safetensors import SafetensorError, safe_open

        self.files, self._handles, self.key_to_file = files, {}, {}
        for f in files:
            try:
                handle = safe_open(str(f), framework="pt", device="cpu")
                keys = list(handle.keys())
            except (SafetensorError, OSError, ValueError) as e:
                raise CheckpointError(
                    f"{f} is truncated or corrupt ({e}); delete it and download it again "
                    "(with huggingface_hub: `hf download <repo> <file> --force-download`)"
                ) from e
            self._handles[f] = handle
            for k in keys:
                self.key_to_file[k] = f

    def keys(self) -> list[str]:
        return list(self.key_to_file)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handles[self.key_to_file[key]].get_slice(key).get_shape())

    def get(self, key: str) -> torch.Tensor:
        f = self.key_to_file[key]
        try:
            return self._handles[f].get_tensor(key)
        except Exception as e:  # a header that lies about the data (truncated file) fails here
            raise CheckpointError(
                f"{f} is truncated or corrupt (reading {key}: {e}); delete it and download it again"
            ) from e


def fingerprint(files: list[Path]) -> str:
    """Cheap identity of weight files: size + sha256 of the first MiB and the header (stable across copies)."""
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.stat().st_size).encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


# --- building modules ---------------------------------------------------------------------------


def detect_format(keys: list[str]) -> str:
    if any(".quant_state.bitsandbytes__" in k for k in keys):
        return "nf4"
    if any(k.endswith(".weight_scale") for k in keys):
        return "fp8"
    return "plain"


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
            out[key.replace(".to_q.", ".qkv.")] = _cast(torch.cat(parts, 0), dtype, device, key)
        else:
            out[_from_diffusers_key(key)] = _cast(reader.get(key), dtype, device, key)
    return out


def _cast(t: torch.Tensor, dtype: torch.dtype, device: str, key: str) -> torch.Tensor:
    # fp8 weights and their fp32 scales keep their dtype; every other float goes to the compute dtype.
    if t.dtype == torch.float8_e4m3fn or key.endswith("weight_scale") or not t.is_floating_point():
        return t.to(device)
    return t.to(device=device, dtype=dtype)


def fill_module(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict, assign-style load with messages that name the file and the first offending keys."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {expected[k]}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != expected[k]
    ]
    if missing or unexpected or wrong:
        lines = []
        if missing:
            lines.append(f"{len(missing)} missing keys, e.g. {missing[:4]}")
        if unexpected:
            lines.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:4]}")
        if wrong:
            lines.append(f"{len(wrong)} wrong shapes, e.g. {wrong[:3]}")
        raise CheckpointError(
            f"{source} does not match the Ideogram 4 layout: {'; '.join(lines)}. "
            "Is this the right file for this component (and a complete download)?"
        )
    module.load_state_dict(state_dict, strict=True, assign=True)


def load_transformer(
    path: Path, dtype: torch.dtype, device: str, fp8_mode: str = "dequantize_per_call"
) -> tuple[Ideogram4Transformer, dict]:
    if fp8_mode not in FP8_MODES:
        raise ValueError(f"fp8_mode={fp8_mode!r}: use one of {FP8_MODES}")
    files, folder = weight_files(path, "transformer"), _folder_of(path)
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
            swap_linears_for_fp8(model, quantized, "dequantize_per_call" if fp8_mode == "dequantize_once" else fp8_mode)
        fill_module(model, read_dit_state_dict(reader, dtype, device), str(files[0]))
        if fmt == "fp8" and fp8_mode == "dequantize_once":
            materialize_fp8(model, dtype)
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
            "(CUDA only), or use the fp8/bf16 release (model=fp8 or model=bf16)"
        ) from e
    if not torch.cuda.is_available():
        raise CheckpointError(
            "nf4 weights run on CUDA only: set device=cuda on a GPU machine, or use model=fp8 / model=bf16"
        )
    if not str(device).startswith("cuda"):
        raise CheckpointError(
            "nf4 transformers are not CPU-offloaded (they are already ~5 GB each): drop "
            "offload_transformers (model.offload=text_encoder or none)"
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
        k: _cast(reader.get(k), dtype, device, k)
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

    from .models.text_encoder import Ideogram4TextEncoder

    files, folder = weight_files(path, "text_encoder"), _folder_of(path)
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
    fill_module(lm, {k: _cast(reader.get(src), dtype, device, src) for k, src in state.items()}, str(files[0]))
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

    from .models.text_encoder import Ideogram4TextEncoder

    model = AutoModel.from_pretrained(str(folder), dtype=dtype, device_map={"": device})
    return Ideogram4TextEncoder(model.language_model).eval(), {
        "format": "nf4",
        "fingerprint": fingerprint(weight_files(folder, "text_encoder")),
    }


def load_vae(path: Path, dtype: torch.dtype, device: str) -> tuple[nn.Module, dict]:
    from diffusers import AutoencoderKLFlux2

    from .models.vae import Ideogram4VAE

    files, folder = weight_files(path, "vae"), _folder_of(path)
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
