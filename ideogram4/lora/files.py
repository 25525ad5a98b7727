"""LoRA files: where they come from, their bytes, their identity.

A source is a local file, a folder holding one LoRA file, a hub file (`"owner/repo/file.safetensors"`,
or `"owner/repo"` with `weight_name=`; `revision=` pins it) fetched through huggingface_hub's cache,
a DiffSynth `ModelConfig`, or a state dict already in memory. `read_lora` returns a `LoraFile`: the
raw tensors and header metadata, plus two hashes (the file's sha256, the identity a manifest records,
and the A1111 "addnet" hash of the tensor data that its PNG `Lora hashes` field shows). Files are
read once per (path, size, mtime): loading the same LoRA again, or into another pipeline, reuses it.
Mapping the keys to the DiT is `layouts.map_lora`.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..safetensors_header import lora_file_problem
from ..sources import HUB_FILE, HUB_REPO, WEIGHT_SUFFIXES, hub_file, parse_source

# Names trainers give the single LoRA file of a folder or repo, most specific first.
DEFAULT_WEIGHT_NAMES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")
_CACHE_SIZE = 4
_cache: OrderedDict[tuple, LoraFile] = OrderedDict()


class LoraError(CheckpointError, ValueError):
    """A LoRA file or argument the user can fix; raised before any module is modified."""


@dataclass
class LoraFile:
    """One LoRA as stored: keys exactly as in the file (nothing mapped yet)."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    path: str | None = None  # None for a state dict passed in memory
    sha256: str = ""  # of the whole file (of the sorted keys + tensor bytes for an in-memory dict)
    addnet_hash: str | None = None  # sha256 of a .safetensors file's data section (A1111 shows [:12])

    @property
    def label(self) -> str:
        return self.path or "<state dict>"

    @property
    def stem(self) -> str:
        return Path(self.path).name.split(".")[0] if self.path else "lora"


# --- where the file is ---------------------------------------------------------------------------


def resolve_lora_path(source, weight_name: str | None = None, revision: str | None = None) -> Path:
    """A local path, a folder's LoRA file, a hub file (through the hub cache), or a DiffSynth ModelConfig."""
    if hasattr(source, "model_id") and hasattr(source, "origin_file_pattern"):  # checkpoints.ModelConfig
        if source.path:
            return resolve_lora_path(source.path, weight_name)
        if not (source.model_id and source.origin_file_pattern):
            raise LoraError("a LoRA ModelConfig needs path=... or model_id=... with origin_file_pattern=...")
        return hub_file(source.model_id, source.origin_file_pattern, source.revision or revision, LoraError)
    where = parse_source(source)
    if where.kind == HUB_FILE:
        return hub_file(where.repo_id, where.filename, revision, LoraError)
    if where.kind == HUB_REPO:
        if not weight_name:
            raise LoraError(
                f"LoRA source {where.text!r} looks like a hub repo: name the file, e.g. "
                f"load_lora({where.text!r}, weight_name='lora.safetensors') or load_lora('{where.text}/lora.safetensors')"
            )
        return hub_file(where.repo_id, weight_name, revision, LoraError)
    if where.path.is_dir():
        return _file_in_folder(where.path, weight_name)
    if not where.path.is_file():
        raise LoraError(
            f"LoRA source {where.text!r} does not exist: pass an existing file or folder, or a hub file "
            "('owner/repo/file.safetensors')"
        )
    return where.path


def _file_in_folder(folder: Path, weight_name: str | None) -> Path:
    if weight_name:
        path = folder / weight_name
        if not path.is_file():
            raise LoraError(f"{folder} has no {weight_name}: check weight_name")
        return path
    for name in DEFAULT_WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if len(files) != 1:
        found = ", ".join(p.name for p in files) or "no weight files"
        raise LoraError(f"LoRA folder {folder} holds {found}: pick one with weight_name='<file>'")
    return files[0]


# --- reading -------------------------------------------------------------------------------------


def read_lora(source, weight_name: str | None = None, revision: str | None = None) -> LoraFile:
    """Tensors, metadata and hashes of a LoRA (cached per path, size and mtime)."""
    if isinstance(source, LoraFile):
        return source
    if isinstance(source, dict):
        return _from_state_dict(source)
    path = resolve_lora_path(source, weight_name, revision).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    lora = _read_file(path)
    _cache[key] = lora
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return lora


def _read_file(path: Path) -> LoraFile:
    if problem := lora_file_problem(path):  # before hashing or allocating anything the file declares
        raise LoraError(f"{path} {problem}. Fix: give a LoRA .safetensors file")
    sha256, addnet = file_hashes(path)
    try:
        if path.name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        else:
            metadata, tensors = {}, torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors' header/size errors, pickle errors, short reads
        raise LoraError(f"LoRA file {path} is truncated or corrupt ({e}): download or copy it again") from e
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise LoraError(f"LoRA file {path} does not hold a flat mapping of names to tensors")
    if not tensors:
        raise LoraError(f"LoRA file {path} holds no tensors")
    return LoraFile(tensors, metadata, str(path), sha256, addnet)


def _from_state_dict(state_dict: dict) -> LoraFile:
    if not state_dict or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise LoraError("a LoRA state dict must be a non-empty mapping of names to tensors")
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return LoraFile(dict(state_dict), {}, None, h.hexdigest(), None)


def file_hashes(path: Path, block: int = 1 << 20) -> tuple[str, str | None]:
    """(sha256 of the file, sha256 of the bytes after a safetensors header) in one pass."""
    whole, data = hashlib.sha256(), None
    with open(path, "rb") as fh:
        if path.name.endswith(".safetensors"):
            head = fh.read(8)
            header = fh.read(int.from_bytes(head, "little")) if len(head) == 8 else b""
            whole.update(head + header)
            data = hashlib.sha256()
        for chunk in iter(lambda: fh.read(block), b""):
            whole.update(chunk)
            if data is not None:
                data.update(chunk)
    return whole.hexdigest(), data.hexdigest() if data is not None else None


def adapter_metadata(lora: LoraFile) -> dict:
    """diffusers/PEFT adapter config stored in the header (`lora_adapter_metadata`), without the
    `transformer.` prefix diffusers' pipeline-level save adds; {} when absent or unreadable."""
    raw = lora.metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise LoraError(f"LoRA file {lora.label}: lora_adapter_metadata is not valid JSON ({e})") from e
    if any(k.startswith("transformer.") for k in meta):
        meta = {k.removeprefix("transformer."): v for k, v in meta.items() if k.startswith("transformer.")}
    return meta
