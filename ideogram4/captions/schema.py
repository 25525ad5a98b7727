"""The structured caption: key order, limits, parsing and the exact serialisation the model reads.

The model was trained on JSON captions serialised compactly (`separators=(",", ":")`, literal
UTF-8) in a fixed key order (spec G.1). A mapping is serialised here in that order; a string is fed
verbatim. Torch-free, so config checks and the command-line tools stay fast.
"""

from __future__ import annotations

import json
from typing import Any

from .bounded import BoundError, loads_json

TOP_LEVEL_KEYS = ("high_level_description", "style_description", "compositional_deconstruction")
STYLE_KEYS_PHOTO = ("aesthetics", "lighting", "photo", "medium", "color_palette")
STYLE_KEYS_ART = ("aesthetics", "lighting", "medium", "art_style", "color_palette")
COMPOSITION_KEYS = ("background", "elements")
ELEMENT_KEYS = {
    "obj": ("type", "bbox", "desc", "color_palette"),
    "text": ("type", "bbox", "text", "desc", "color_palette"),
}
MAX_STYLE_COLORS, MAX_ELEMENT_COLORS = 16, 5
BBOX_SCALE = 1000  # bbox values are [ymin, xmin, ymax, xmax], each axis normalised to 0..1000


def _ordered(mapping: dict, order: tuple[str, ...]) -> dict:
    known = {k: mapping[k] for k in order if k in mapping}
    known.update({k: v for k, v in mapping.items() if k not in known})  # unknown keys keep their place at the end
    return known


def canonical_caption(caption: dict) -> dict:
    """The same caption with every level's keys in the official order."""
    out = _ordered(caption, TOP_LEVEL_KEYS)
    style = out.get("style_description")
    if isinstance(style, dict):
        out["style_description"] = _ordered(style, STYLE_KEYS_PHOTO if "photo" in style else STYLE_KEYS_ART)
    comp = out.get("compositional_deconstruction")
    if isinstance(comp, dict):
        comp = _ordered(comp, COMPOSITION_KEYS)
        if isinstance(comp.get("elements"), list):
            comp["elements"] = [
                _ordered(e, ELEMENT_KEYS.get(e.get("type"), ELEMENT_KEYS["obj"])) if isinstance(e, dict) else e
                for e in comp["elements"]
            ]
        out["compositional_deconstruction"] = comp
    return out


def serialize_caption(caption: str | dict) -> str:
    """The exact string the text encoder sees."""
    if isinstance(caption, str):
        return caption
    if isinstance(caption, dict):
        return json.dumps(canonical_caption(_plain(caption)), separators=(",", ":"), ensure_ascii=False)
    raise TypeError(f"prompt must be a string or a mapping (structured caption), got {type(caption).__name__}")


def pretty_caption(caption: str | dict) -> str:
    """Indented JSON in the official key order, for editing; plain prose comes back as it is."""
    parsed = parse_caption(caption)
    if isinstance(parsed, str):
        return parsed
    return json.dumps(canonical_caption(parsed), indent=2, ensure_ascii=False)


def _plain(obj: Any) -> Any:
    """OmegaConf containers and tuples -> plain dicts/lists, so json can serialise them."""
    if isinstance(obj, dict) or hasattr(obj, "items"):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or (hasattr(obj, "__iter__") and not isinstance(obj, (str, bytes))):
        return [_plain(v) for v in obj]
    return obj


def parse_caption(caption: str | dict) -> dict | str:
    """A mapping as is; a string that looks like JSON is parsed (ValueError with line/column if it fails)."""
    if not isinstance(caption, str):
        return _plain(caption)
    if not caption.lstrip().startswith("{"):
        return caption
    try:
        return loads_json(caption)
    except BoundError as e:
        raise ValueError(f"prompt is a JSON caption that {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(
            f"prompt looks like a JSON caption but does not parse: {e.msg} at line {e.lineno}, column {e.colno}"
        ) from e


def caption_elements(caption: str | dict) -> list[dict]:
    """The caption's element mappings (none for prose or a malformed caption), for drawing and scoring."""
    try:
        parsed = parse_caption(caption)
    except ValueError:
        return []
    comp = parsed.get("compositional_deconstruction") if isinstance(parsed, dict) else None
    elements = comp.get("elements") if isinstance(comp, dict) else None
    return [e for e in elements if isinstance(e, dict)] if isinstance(elements, list) else []


def valid_bbox(bbox: Any) -> bool:
    """[ymin, xmin, ymax, xmax]: 4 integers in 0..1000, min <= max on each axis."""
    return (
        isinstance(bbox, list)
        and len(bbox) == 4
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= BBOX_SCALE for v in bbox)
        and bbox[0] <= bbox[2]
        and bbox[1] <= bbox[3]
    )
