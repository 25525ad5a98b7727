"""The argument primitives every core check is built from: one value (flag, choice, number, int, seed,
image side) or one image argument (a PIL image or a path, opened), each raising the first finding of
`rules` (or a ValueError/TypeError naming the argument, the value and the fix).

Below `checks`, `edit_checks` and `masks`, which all use them. No torch here.
"""

from __future__ import annotations

import os
import random
from typing import Any

from .rules import choice_problems, flag_problems, int_problems, number_problems, raise_first, seed_problems

# --- single values ------------------------------------------------------------------------------


def check_flag(name: str, value: Any) -> bool:
    raise_first(flag_problems(name, value))
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    raise_first(choice_problems(name, value, choices))
    return value


def check_number(name: str, value: Any, example: float, *, positive: bool = False) -> float:
    """A finite real number (bools and strings refused: a typo in a sweep must not become 1.0)."""
    raise_first(number_problems(name, value, example, positive=positive))
    return float(value)


def check_int(name: str, value: Any, low: int, high: int, example: int) -> int:
    raise_first(int_problems(name, value, low, high, example))
    return int(value)


def draw_seed() -> int:
    """A seed for `seed=None`: the one place seeds are drawn (from the OS, whatever `random.seed` says)."""
    return random.SystemRandom().randrange(2**31)


def check_seed(name: str, value: Any) -> int:
    """A seed in 0..MAX_SEED; None draws one (recorded in the output)."""
    if value is None:
        return draw_seed()
    raise_first(seed_problems(name, value))
    return int(value)


# --- images -------------------------------------------------------------------------------------


def load_image(name: str, image: Any):
    """A PIL image, or a path to one, loaded (in its own mode)."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        from ideogram4.image_files import ImageFileError, read_image

        try:
            return read_image(image, mode=None)
        except ImageFileError as e:
            raise ValueError(f"{name}={str(image)!r}{e.what}: {e.fix}") from None
    if not isinstance(image, Image.Image):
        raise TypeError(f"{name} is a {type(image).__name__}: pass a PIL image or the path of an image file")
    return image


def open_image(name: str, image: Any, height: int | None, width: int | None):
    """A PIL image, or a path to one, as RGB of exactly width x height (None: any size)."""
    image = load_image(name, image)
    if height is not None and image.size != (width, height):
        raise ValueError(
            f"{name} is {image.size[0]}x{image.size[1]} (WxH) but the output is {width}x{height}: "
            f"resize it first (e.g. img.resize(({width}, {height}))) or pass width={image.size[0]}, "
            f"height={image.size[1]}"
        )
    return image.convert("RGB")


def open_images(input_image: Any, batch: int, height: int | None, width: int | None) -> list | None:
    """One RGB image per prompt (one image or path serves them all), or None for text-to-image."""
    if input_image is None:
        return None
    if not isinstance(input_image, (list, tuple)):
        return [open_image("input_image", input_image, height, width)] * batch
    if len(input_image) != batch:
        raise ValueError(f"input_image has {len(input_image)} images for {batch} prompts: give one per prompt, or one")
    return [open_image(f"input_image[{i}]", im, height, width) for i, im in enumerate(input_image)]
