"""Paths as the user typed them (relative to where `run.py` was started) and cheap file identities."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path


def original_cwd() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return HydraConfig.get().runtime.cwd
    except Exception:  # pragma: no cover - outside Hydra
        pass
    return os.getcwd()


def abspath(path: str) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else Path(original_cwd()) / p)


def folder_fingerprints(folder: str) -> dict[str, str]:
    """sha256 of the first MiB + size of every weights file in a local folder (cheap identity)."""
    root = Path(folder)
    return {str(p.relative_to(root)): file_fingerprint(p) for p in sorted(root.glob("**/*.safetensors"))}


def file_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
    return f"{h.hexdigest()[:16]}+{path.stat().st_size}"


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def file_sha256_cached(path: str) -> str:
    """file_sha256, computed once per process per (file, size, mtime): every job of a sweep keys on it."""
    st = os.stat(path)
    return _sha256_cached(path, st.st_size, st.st_mtime_ns)
