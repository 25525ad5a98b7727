"""The caption verifier's rules (spec G.1), each finding with its JSON path, severity and a fix.

Severity follows what the official verifier and our serialisation make of a finding:
- "error": the caption breaks a rule of the schema (a wrong type, a missing required key, a bbox
  outside 0..1000 or upside down, a colour that is not uppercase `#RRGGBB`, too many colours, a
  text element without text, both or neither of `photo`/`art_style`). The model reads something
  other than what it was trained on.
- "warning": what the official verifier only warns about, or what `serialize_caption` repairs:
  unknown keys, keys out of the official order, `\\uXXXX` escapes, a zero-area bbox.
`python -m ideogram4.captions check` fails on errors and, with `--strict`, on warnings too; the runner
with `prompts.strict=true` stops on the same errors, and without it only warns (see `prompt_files`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .schema import (
    BBOX_SCALE,
    COMPOSITION_KEYS,
    ELEMENT_KEYS,
    MAX_ELEMENT_COLORS,
    MAX_STYLE_COLORS,
    STYLE_KEYS_ART,
    STYLE_KEYS_PHOTO,
    TOP_LEVEL_KEYS,
    parse_caption,
)

_HEX = re.compile(r"^#[0-9A-F]{6}$")
_HEX_ANY_CASE = re.compile(r"^#?[0-9A-Fa-f]{6}$")
SEVERITIES = ("error", "warning")


@dataclass(frozen=True)
class CaptionIssue:
    path: str  # e.g. "compositional_deconstruction.elements[2].bbox"
    message: str
    fix: str = ""
    severity: str = "error"  # "error" or "warning", see the module docstring

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def validate_caption(caption: str | dict) -> list[CaptionIssue]:
    """Schema problems of a structured caption; plain prose is allowed and returns []."""
    try:
        parsed = parse_caption(caption)
    except ValueError as e:
        return [CaptionIssue("prompt", str(e), "fix the JSON at that line and column")]
    if isinstance(parsed, str):
        return []
    if not isinstance(parsed, dict):
        return [CaptionIssue("prompt", "a structured caption must be a JSON object", "wrap the caption in { ... }")]
    issues: list[CaptionIssue] = []
    required = ("high_level_description", "compositional_deconstruction")
    _check_keys(parsed, TOP_LEVEL_KEYS, "", issues, required=required)
    if isinstance(caption, str) and "\\u" in caption:
        issues.append(
            CaptionIssue(
                "prompt",
                "contains \\uXXXX escapes",
                "write the characters literally (UTF-8); `format` prints the caption that way",
                "warning",
            )
        )
    _check_string(parsed, "high_level_description", "", issues)
    if "style_description" in parsed:
        _check_style(parsed["style_description"], issues)
    comp = parsed.get("compositional_deconstruction")
    if comp is not None:
        _check_composition(comp, issues)
    return issues


def _check_keys(obj: dict, order: tuple[str, ...], path: str, issues: list, required: tuple[str, ...]) -> None:
    prefix = f"{path}." if path else ""
    for key in obj:
        if key not in order:
            issues.append(
                CaptionIssue(
                    f"{prefix}{key}",
                    f"unknown key; allowed here: {', '.join(order)}",
                    "remove it or rename it to one of the allowed keys",
                    "warning",
                )
            )
    for key in required:
        if key not in obj:
            issues.append(CaptionIssue(f"{prefix}{key}", "missing", f"add {key!r} (required here)"))
    present = [k for k in obj if k in order]
    expected = [k for k in order if k in obj]
    if present != expected:
        issues.append(
            CaptionIssue(
                path or "prompt",
                f"keys out of order: {present}; expected {expected}",
                "reorder them; `python -m ideogram4.captions format` prints the official order",
                "warning",
            )
        )


def _check_string(obj: dict, key: str, path: str, issues: list, *, nonempty: bool = False) -> None:
    if key not in obj:
        return
    where = f"{path}.{key}" if path else key
    value = obj[key]
    if not isinstance(value, str):
        issues.append(CaptionIssue(where, f"{value!r} must be a string", "write it as a quoted string"))
    elif nonempty and not value.strip():
        issues.append(CaptionIssue(where, "is empty", "write the exact characters to render"))


def _check_style(style: Any, issues: list) -> None:
    path = "style_description"
    if not isinstance(style, dict):
        issues.append(CaptionIssue(path, f"{style!r} must be an object", "write it as { ... } or leave it out"))
        return
    has_photo, has_art = "photo" in style, "art_style" in style
    if has_photo == has_art:
        issues.append(
            CaptionIssue(
                path,
                "needs exactly one of 'photo' or 'art_style'" + (" (found both)" if has_photo else " (found neither)"),
                "keep 'photo' for a photograph, 'art_style' for anything else",
            )
        )
    order = STYLE_KEYS_PHOTO if has_photo else STYLE_KEYS_ART
    checked = {k: v for k, v in style.items() if not (has_art and k == "art_style")} if has_photo else style
    # With both or neither of photo/art_style, the finding above says it all: no "missing" for either.
    optional = ("color_palette",) if has_photo != has_art else ("color_palette", "photo", "art_style")
    _check_keys(checked, order, path, issues, required=tuple(k for k in order if k not in optional))
    for key in order:
        if key != "color_palette":
            _check_string(style, key, path, issues)
    _check_palette(style.get("color_palette"), MAX_STYLE_COLORS, f"{path}.color_palette", issues)


def _check_composition(comp: Any, issues: list) -> None:
    path = "compositional_deconstruction"
    if not isinstance(comp, dict):
        issues.append(CaptionIssue(path, f"{comp!r} must be an object", "write it as {background, elements}"))
        return
    _check_keys(comp, COMPOSITION_KEYS, path, issues, required=COMPOSITION_KEYS)
    _check_string(comp, "background", path, issues)
    elements = comp.get("elements", [])
    if not isinstance(elements, list):
        issues.append(CaptionIssue(f"{path}.elements", f"{elements!r} must be a list", "write it as [ {...}, ... ]"))
        return
    for i, el in enumerate(elements):
        _check_element(el, f"{path}.elements[{i}]", issues)


def _check_element(el: Any, path: str, issues: list) -> None:
    if not isinstance(el, dict):
        issues.append(CaptionIssue(path, f"{el!r} must be an object", 'write it as {"type": "obj", "desc": ...}'))
        return
    kind = el.get("type")
    if kind not in ELEMENT_KEYS:
        issues.append(
            CaptionIssue(
                f"{path}.type",
                f"{kind!r} is not 'obj' or 'text'",
                "use 'text' for characters to render, 'obj' for everything else",
            )
        )
        return
    order = ELEMENT_KEYS[kind]
    _check_keys(el, order, path, issues, required=tuple(k for k in order if k not in ("bbox", "color_palette")))
    _check_string(el, "desc", path, issues)
    if kind == "text":
        _check_string(el, "text", path, issues, nonempty=True)
    if "bbox" in el:
        issue = bbox_issue(el["bbox"], f"{path}.bbox")
        if issue:
            issues.append(issue)
    _check_palette(el.get("color_palette"), MAX_ELEMENT_COLORS, f"{path}.color_palette", issues)


def bbox_issue(bbox: Any, path: str) -> CaptionIssue | None:
    """What is wrong with a [ymin, xmin, ymax, xmax] box in 0..1000, or None."""
    shape = "[ymin, xmin, ymax, xmax]"
    if not (
        isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int) and not isinstance(v, bool) for v in bbox)
    ):
        fix = f"write 4 integers {shape}, each axis scaled to 0..{BBOX_SCALE}"
        return CaptionIssue(path, f"{bbox!r} must be {shape} as 4 integers", fix)
    if not all(0 <= v <= BBOX_SCALE for v in bbox):
        clipped = [min(max(v, 0), BBOX_SCALE) for v in bbox]
        return CaptionIssue(path, f"{bbox} has values outside 0..{BBOX_SCALE}", f"clip to the frame, e.g. {clipped}")
    ymin, xmin, ymax, xmax = bbox
    if ymin > ymax or xmin > xmax:
        fixed = [min(ymin, ymax), min(xmin, xmax), max(ymin, ymax), max(xmin, xmax)]
        axis = "ymin > ymax" if ymin > ymax else "xmin > xmax"
        return CaptionIssue(path, f"{bbox} has {axis}", f"the order is {shape} (y first); did you mean {fixed}?")
    if ymin == ymax or xmin == xmax:
        return CaptionIssue(
            path, f"{bbox} has zero area", f"give the box a height and a width ({shape}, y first)", "warning"
        )
    return None


def _check_palette(palette: Any, limit: int, path: str, issues: list) -> None:
    if palette is None:
        return
    if not isinstance(palette, list):
        issues.append(CaptionIssue(path, f"{palette!r} must be a list", "write a list of '#RRGGBB' strings"))
        return
    if len(palette) > limit:
        issues.append(
            CaptionIssue(path, f"has {len(palette)} colours; at most {limit}", f"keep the {limit} that matter most")
        )
    for i, c in enumerate(palette):
        if isinstance(c, str) and _HEX.match(c):
            continue
        fix = "write each colour as '#RRGGBB' with uppercase hex digits"
        if isinstance(c, str) and _HEX_ANY_CASE.match(c):
            fix = f"write {'#' + c.lstrip('#').upper()!r}"
        issues.append(CaptionIssue(path, f"colour [{i}] {c!r} is not an uppercase '#RRGGBB' colour", fix))


def errors(issues: list[CaptionIssue]) -> list[CaptionIssue]:
    return [i for i in issues if i.severity == "error"]
