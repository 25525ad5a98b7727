"""Opening an image file that came from anywhere: its declared size is checked before a pixel is decoded.

A 17 KB PNG can declare 12000 x 12000 pixels (8 GB once decoded). Every reader of image files
(metrics, score, reproduce, img2img input, grid) opens them here, so each such file is one line naming
it and the fix instead of a memory blow-up or a raw PIL error.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ideogram4.spec import MAX_IMAGE_PIXELS


class ImageFileError(ValueError):
    """An image file that cannot be used: `what` follows its path (": no such file"), `fix` says what to do."""

    def __init__(self, path: str | Path, what: str, fix: str):
        super().__init__(f"{path}{what}. Fix: {fix}")
        self.what, self.fix = what, fix


def check_pixels(path: str | Path, size: tuple[int, int]) -> None:
    """ImageFileError when the header's width x height is over spec.MAX_IMAGE_PIXELS."""
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        megapixels, limit = width * height / 1e6, MAX_IMAGE_PIXELS / 1e6
        what = f" declares {width}x{height} pixels ({megapixels:.1f} MP), over the {limit:.1f} MP limit for image files"
        raise ImageFileError(path, what, "downscale it")


@contextmanager
def opened_image(path: str | Path) -> Iterator[Any]:
    """The PIL image at `path`, header read and size checked, nothing decoded yet."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # PIL warns from 89 MP; check_pixels below stops at a lower limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except FileNotFoundError:
        raise ImageFileError(path, ": no such file", "give the path of an existing image") from None
    except IsADirectoryError:
        raise ImageFileError(path, " is a folder", "give the path of an image file") from None
    except UnidentifiedImageError:
        raise ImageFileError(path, " is not an image PIL can read", "give a PNG, JPEG or WebP file") from None
    except Image.DecompressionBombError as e:
        raise ImageFileError(path, f": {e}", "downscale it") from None
    except OSError as e:
        raise ImageFileError(path, f" cannot be read ({e.strerror or e})", "check the file's permissions") from None
    with im:
        check_pixels(path, im.size)
        yield im


def read_image(path: str | Path, mode: str | None = "RGB") -> Any:
    """The decoded image at `path` (converted to `mode`; None keeps its own mode and info)."""
    with opened_image(path) as im:
        try:
            im.load()
            return im.convert(mode) if mode else im.copy()
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            what = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ImageFileError(path, f" is damaged or truncated ({what})", "use an intact copy") from None
