"""Thumbnails for the report, made once: a thumbnail newer than its PNG is kept on the next report."""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from ideogram4.image_files import ImageFileError, opened_image

log = logging.getLogger("ideogram4.experiment")

THUMB_SIDE = 192  # longest side in pixels (a grid cell shows 160 px)
JPEG_QUALITY = 82


def thumbnail(source: Path, target: Path, side: int = THUMB_SIDE) -> Path | None:
    """A JPEG of `source` at most `side` pixels on its longest side (small images kept at their size).
    None (a warning names the file) for an image that is damaged or over the pixel limit: nothing of it
    is decoded then, and the report shows the cell without a picture."""
    if target.is_file() and target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with opened_image(source) as im:
            im.draft("RGB", (side, side))
            small = im.convert("RGB")
    except (ImageFileError, OSError, SyntaxError, ValueError) as e:
        log.warning("Report thumbnail: %s", e)
        return None
    small.thumbnail((side, side), Image.BILINEAR, reducing_gap=2.0)
    tmp = target.with_name(f".{target.name}.tmp")
    small.save(tmp, format="JPEG", quality=JPEG_QUALITY, optimize=False)
    tmp.replace(target)
    return target
