"""Job outputs: PNGs with embedded settings, the manifest, resume keys, environment facts.

Writes are crash-safe: a PNG is written to a temporary file in the same folder and renamed into
place; a manifest record is one JSON line written with a single ``write`` to a file opened for
appending, then flushed and fsynced. An interrupted job therefore leaves only whole images and
whole lines behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ideogram4.image_files import opened_image

from .manifest import MANIFEST, OutputWriteError, append_manifest, latest_records, read_manifest  # noqa: F401

log = logging.getLogger("ideogram4.experiment")

IMAGES = "images"


def image_name(prompt_id: str, seed: int) -> str:
    return f"{prompt_id}__seed{seed}.png"


def settings_hash(settings: dict, weights_identity: dict) -> str:
    """The resume key: identical generation settings on identical weights give the same hash."""
    blob = json.dumps(
        {"settings": settings, "weights": weights_identity}, sort_keys=True, ensure_ascii=False, default=str
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def save_png_atomic(image, path: Path, text: dict[str, str]) -> None:
    """Write `image` with PNG text chunks to `path` via a temp file in the same folder + rename."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for k, v in text.items():
        info.add_text(k, v)  # latin-1 -> tEXt, anything else -> iTXt (UTF-8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; collaborators must read images
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise OutputWriteError(e.errno, f"could not write {path}: {e.strerror or e}") from e
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(folder: Path) -> None:
    """Raise OutputWriteError now (before weights load) if `folder` cannot take new files."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputWriteError(e.errno, f"cannot write to the output folder {folder}: {e.strerror or e}") from e


def clean_temp_files(folder: Path) -> int:
    n = 0
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            p.unlink(missing_ok=True)
            n += 1
    return n


def read_png_text(path: Path) -> dict[str, str]:
    with opened_image(path) as im:
        im.load()
        return dict(getattr(im, "text", {}) or im.info)


def write_image(folder: Path, record, image, png_text: dict[str, str]) -> None:
    """The PNG (atomically, settings embedded), then its manifest line: a line never names a missing file."""
    save_png_atomic(image, folder / record.image, png_text)
    append_manifest(folder, record.to_dict())


def is_valid_png(path: Path) -> bool:
    try:  # an image put in the folder is bounded as any other (over the pixel limit: not valid)
        with opened_image(path) as im:
            im.verify()
        return True
    except Exception:
        return False


# --- environment facts (computed once per process) -------------------------------------------------


PACKAGES = (
    "ideogram4-runner",
    "torch",
    "diffusers",
    "transformers",
    "safetensors",
    "huggingface_hub",
    "hydra-core",
    "omegaconf",
    "wandb",
    "pillow",
    "numpy",
)


@functools.cache
def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


@functools.cache
def git_revision() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[3]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return {"commit": rev or None, "dirty": bool(dirty)}
    except Exception:
        return {"commit": None, "dirty": None}


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        try:
            import torch

            return torch.cuda.get_device_name(torch.device(device))
        except Exception:
            return "cuda (unknown)"
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"
