"""Argument checks for masked editing (`generate`'s mask_image, strength_map, outpaint, edit_elements,
mask_blur, paste_back, edit_margin): one clear error each, before any model runs.

Part of the core check layer (`ideogram4.checks` calls these); the masks themselves (mode, size policy,
all black, bboxes) are read and checked by `ideogram4.masks`, the only place that opens them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .arguments import check_flag, check_int, check_number, open_images
from .masks import EditArgs, prepare_edit
from .rules import multiple_problems, raise_first
from .spec import EDIT_KINDS, EDIT_MARGIN, MAX_MASK_BLUR, MAX_SIDE, OUTPAINT_SIDES


def check_edit_args(kw: dict):
    """The edit arguments of `generate` -> masks.EditArgs, or None for no edit; no file is read here."""
    blur = check_number("mask_blur", kw["mask_blur"], 8)
    if not 0 <= blur <= MAX_MASK_BLUR:
        raise ValueError(
            f"mask_blur={blur} is outside 0..{MAX_MASK_BLUR} (pixels, the width of the inward feathering): e.g. mask_blur=8"
        )
    paste = check_flag("paste_back", kw["paste_back"])
    margin = check_int("edit_margin", kw["edit_margin"], 0, MAX_SIDE, EDIT_MARGIN)
    given = [name for name in EDIT_KINDS if kw[name] is not None]
    if not given:
        for name, value in (("mask_blur", blur), ("paste_back", paste)):
            if value:
                raise ValueError(
                    f"{name}={kw[name]!r} applies to a masked edit: pass mask_image, outpaint or edit_elements "
                    f"(with input_image), or leave {name} at its default"
                )
        return None
    if len(given) > 1:
        raise ValueError(f"{given[0]} and {given[1]} are both given: an edit has one region: pass only one of them")
    kind = given[0]
    if kw["input_image"] is None:
        raise ValueError(f"{kind} edits an image but input_image is None: pass input_image=the image to edit")
    if kind == "strength_map" and blur:
        raise ValueError(f"mask_blur={blur} does not apply to strength_map (already grey): blur the map itself")
    source = {"outpaint": check_outpaint, "edit_elements": check_elements}.get(kind, lambda v: v)(kw[kind])
    if kind == "strength_map" and isinstance(source, (list, tuple)):
        raise TypeError("strength_map is a list: pass one map for the whole call (its strengths set the schedule)")
    return EditArgs(kind, source, blur, paste, margin)


def check_outpaint(value: Any) -> dict[str, int]:
    """{side: pixels} for every side (a sequence is read as left, right, top, bottom). The canvas is
    height x width, judged with every size by the resolution rule against the model's side range."""
    if isinstance(value, (list, tuple)) and len(value) == len(OUTPAINT_SIDES):
        value = dict(zip(OUTPAINT_SIDES, value))
    if not isinstance(value, Mapping) or any(k not in OUTPAINT_SIDES for k in value):
        sides = ", ".join(OUTPAINT_SIDES)
        raise TypeError(f"outpaint={value!r}: pass pixels per side, e.g. outpaint={{'right': 128}} (sides: {sides})")
    sides = {side: check_int(f"outpaint[{side!r}]", value.get(side, 0), 0, MAX_SIDE, 128) for side in OUTPAINT_SIDES}
    raise_first(
        [finding for side, pixels in sides.items() for finding in multiple_problems(f"outpaint[{side!r}]", pixels)]
    )
    if not any(sides.values()):
        raise ValueError(f"outpaint={value!r} adds no pixels: give at least one side, e.g. outpaint={{'right': 128}}")
    return sides


def check_elements(value: Any) -> list[int]:
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"edit_elements={value!r}: pass a non-empty list of element indexes, e.g. edit_elements=[3]")
    return [check_int(f"edit_elements[{i}]", v, 0, 10**6, 3) for i, v in enumerate(value)]


def open_edit(edit, input_image: Any, captions: list[str], height: int, width: int, strength: float, names=None):
    """The masks.EditPlan of a call: opens the input (outpaint: the canvas minus the margins) and the edit
    region. `names` label the captions in messages (default prompts[i])."""
    batch = len(captions)
    if edit.kind != "outpaint":
        inputs = open_images(input_image, batch, height, width)
    else:
        inputs = open_images(input_image, batch, None, None)
        sides = edit.source
        grow = (sides["left"] + sides["right"], sides["top"] + sides["bottom"])
        for image in inputs:
            w, h = image.size
            if (w + grow[0], h + grow[1]) != (width, height):
                raise ValueError(
                    f"outpaint={sides} grows the {w}x{h} (WxH) input_image to {w + grow[0]}x{h + grow[1]}, but the "
                    f"output is {width}x{height}: pass width={w + grow[0]}, height={h + grow[1]}"
                )
    if isinstance(edit.source, (list, tuple)) and edit.kind == "mask_image" and len(edit.source) not in (1, batch):
        raise ValueError(f"mask_image has {len(edit.source)} masks for {batch} prompts: give one per prompt, or one")
    return prepare_edit(edit, inputs, captions, height, width, strength, names)
