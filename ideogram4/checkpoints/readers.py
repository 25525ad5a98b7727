"""Reading safetensors: which files hold a component, keys and shapes without data, strict filling.

Layout (original vs diffusers keys) and format (plain, fp8, nf4) are detected from the keys.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError

WEIGHT_FILES = {
    "transformer": "diffusion_pytorch_model.safetensors",
    "unconditional_transformer": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
}


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


def folder_of(path: Path) -> Path:
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


# The files that decide a tokenizer's token ids and chat template. tokenizer_config.json is left out:
# it also records how it was saved (e.g. `local_files_only`, true when built offline), not what it does.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")


def tokenizer_fingerprint(path: Path) -> str:
    """A tokenizer's identity: its defining files (all files of the folder when it has none of them)."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    defining = [f for f in files if f.name in TOKENIZER_FILES]
    return fingerprint(defining or files)


def detect_format(keys: list[str]) -> str:
    if any(".quant_state.bitsandbytes__" in k for k in keys):
        return "nf4"
    if any(k.endswith(".weight_scale") for k in keys):
        return "fp8"
    return "plain"


def cast(t: torch.Tensor, dtype: torch.dtype, device: str, key: str) -> torch.Tensor:
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
