"""What a caption asks for, in the form the metrics score: texts at places, colours, a description.

A structured caption (a mapping or its JSON string) states each text element's words and bbox and the
palettes; a plain prose prompt states only its quoted strings (anywhere in the image) and itself as the
description. Parsing is strict about what metrics read (bboxes, colours) so a bad caption fails with
the field's path instead of scoring nonsense.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from PIL import ImageColor

from ..prompts import parse_caption

BBOX_SCALE = 1000  # caption bboxes are [ymin, xmin, ymax, xmax] in 0..1000 of the image height/width

# "..."  “...”  and '...' whose quotes are not apostrophes inside words (don't, it's)
_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”|(?<!\w)'([^']+)'(?!\w)")


class CaptionError(ValueError):
    """A caption field the metrics cannot read; the message names the field and the expected form."""


@dataclass(frozen=True)
class TextTarget:
    text: str
    bbox: tuple[int, int, int, int] | None  # None: anywhere in the image (plain prompt, or no bbox given)
    index: int | None  # position in compositional_deconstruction.elements; None for a quoted string


@dataclass(frozen=True)
class PaletteTarget:
    colors: tuple[str, ...]  # '#RRGGBB'
    bbox: tuple[int, int, int, int] | None
    index: int


@dataclass(frozen=True)
class CaptionFacts:
    structured: bool
    description: str | None  # high_level_description, or the whole plain prompt
    texts: tuple[TextTarget, ...] = ()
    style_palette: tuple[str, ...] = ()
    element_palettes: tuple[PaletteTarget, ...] = ()


def caption_facts(caption: str | dict | CaptionFacts | None) -> CaptionFacts:
    """Read a caption (mapping, its JSON string, prose, or None for 'no caption') for scoring."""
    if isinstance(caption, CaptionFacts):
        return caption
    if caption is None:
        return CaptionFacts(structured=False, description=None)
    try:
        parsed = parse_caption(caption)
    except ValueError as e:
        raise CaptionError(str(e)) from e
    if isinstance(parsed, str):
        return _prose_facts(parsed)
    if not isinstance(parsed, dict):
        raise CaptionError(f"caption must be a JSON object or prose, got {type(parsed).__name__}")
    return _structured_facts(parsed)


def _prose_facts(prompt: str) -> CaptionFacts:
    quoted = [next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(prompt)]
    texts = tuple(TextTarget(text=q, bbox=None, index=None) for q in quoted if q.strip())
    return CaptionFacts(structured=False, description=prompt.strip() or None, texts=texts)


def _structured_facts(caption: dict) -> CaptionFacts:
    description = caption.get("high_level_description")
    style = caption.get("style_description") or {}
    style_palette = _palette(style.get("color_palette") if isinstance(style, dict) else None, "style_description")
    comp = caption.get("compositional_deconstruction") or {}
    elements = comp.get("elements") if isinstance(comp, dict) else None
    elements = elements if isinstance(elements, list) else []
    texts, palettes = [], []
    for i, element in enumerate(elements):
        if not isinstance(element, dict):
            continue
        path = f"compositional_deconstruction.elements[{i}]"
        bbox = _bbox(element.get("bbox"), path)
        text = element.get("text")
        if element.get("type") == "text" and isinstance(text, str) and text.strip():
            texts.append(TextTarget(text=text, bbox=bbox, index=i))
        colors = _palette(element.get("color_palette"), path)
        if colors:
            palettes.append(PaletteTarget(colors=colors, bbox=bbox, index=i))
    return CaptionFacts(
        structured=True,
        description=description if isinstance(description, str) and description.strip() else None,
        texts=tuple(texts),
        style_palette=style_palette,
        element_palettes=tuple(palettes),
    )


def _bbox(bbox, path: str) -> tuple[int, int, int, int] | None:
    if bbox is None:
        return None
    ok = isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
    if not ok or not all(0 <= v <= BBOX_SCALE for v in bbox) or bbox[0] > bbox[2] or bbox[1] > bbox[3]:
        raise CaptionError(f"{path}.bbox: {bbox!r} must be [ymin, xmin, ymax, xmax] with 0 <= min <= max <= 1000")
    return tuple(int(v) for v in bbox)


def _palette(colors, path: str) -> tuple[str, ...]:
    if colors is None:
        return ()
    if not isinstance(colors, list):
        raise CaptionError(f"{path}.color_palette: {colors!r} must be a list of '#RRGGBB' strings")
    out = []
    for c in colors:
        if not (isinstance(c, str) and re.fullmatch(r"#[0-9A-Fa-f]{6}", c)):
            raise CaptionError(f"{path}.color_palette: {c!r} is not a '#RRGGBB' colour")
        out.append(c.upper())
    return tuple(out)


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    return ImageColor.getrgb(color)[:3]


def pixel_box(bbox: tuple[int, int, int, int] | None, size: tuple[int, int], margin: float = 0) -> tuple[int, ...]:
    """A caption bbox (0..1000, y first) as a PIL crop box (left, top, right, bottom), grown by `margin`
    bbox units on each side and clipped to the image; None covers the whole image."""
    width, height = size
    if bbox is None:
        return (0, 0, width, height)
    ymin, xmin, ymax, xmax = bbox
    left = max(0, round((xmin - margin) * width / BBOX_SCALE))
    top = max(0, round((ymin - margin) * height / BBOX_SCALE))
    right = min(width, round((xmax + margin) * width / BBOX_SCALE))
    bottom = min(height, round((ymax + margin) * height / BBOX_SCALE))
    return (left, top, max(right, left + 1), max(bottom, top + 1))
