"""A caption's layout made visible: boxes over an image, a preview sheet, W&B bounding boxes.

A box is drawn in its element's first palette colour, or in a fixed colour per element type when
the element has no (valid) palette: `box_color` says which, so a test or a reader knows what to
look for. bbox values are [ymin, xmin, ymax, xmax] scaled to 0..1000 on each axis (spec G.1).
"""

from __future__ import annotations

import functools
import re

from PIL import Image, ImageDraw, ImageFont

from .schema import BBOX_SCALE, MAX_STYLE_COLORS, caption_elements, parse_caption, valid_bbox

TYPE_COLORS = {"obj": (30, 144, 255), "text": (255, 59, 48)}  # obj: blue, text: red (no palette given)
OTHER_COLOR = (128, 128, 128)  # an element whose type is neither
WANDB_CLASS_IDS = {"obj": 1, "text": 2}
CANVAS, GRID, INK = (242, 242, 242), (222, 222, 222), (20, 20, 20)
_HEX = re.compile(r"^#[0-9A-Fa-f]{6}$")


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))


def box_color(element: dict) -> tuple[int, int, int]:
    """The element's first palette colour, else its type's colour (TYPE_COLORS)."""
    palette = element.get("color_palette")
    if isinstance(palette, list) and palette and isinstance(palette[0], str) and _HEX.match(palette[0]):
        return hex_to_rgb(palette[0])
    return TYPE_COLORS.get(element.get("type"), OTHER_COLOR)


def bbox_to_pixels(bbox: list[int], width: int, height: int) -> tuple[int, int, int, int]:
    """[ymin, xmin, ymax, xmax] in 0..1000 -> (x0, y0, x1, y1) pixels of a width x height image."""
    ymin, xmin, ymax, xmax = bbox
    return (
        round(xmin * width / BBOX_SCALE),
        round(ymin * height / BBOX_SCALE),
        round(xmax * width / BBOX_SCALE),
        round(ymax * height / BBOX_SCALE),
    )


def element_label(element: dict, index: int) -> str:
    """'text #3: "F1"' or 'obj #0: An older man ...' (first words of the description)."""
    kind = element.get("type", "?")
    if kind == "text" and isinstance(element.get("text"), str):
        return f'text #{index}: "{element["text"].replace(chr(10), " / ")}"'
    desc = element.get("desc") if isinstance(element.get("desc"), str) else ""
    return f"{kind} #{index}: {' '.join(desc.split()[:8])}"


@functools.lru_cache(maxsize=16)
def font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled scalable font (no system fonts needed); the fixed bitmap one on old Pillow."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _boxes(caption: str | dict) -> list[tuple[int, dict]]:
    return [(i, e) for i, e in enumerate(caption_elements(caption)) if valid_bbox(e.get("bbox"))]


def draw_layout(image: Image.Image, caption: str | dict) -> Image.Image:
    """A copy of `image` with the caption's boxes drawn over it, each labelled with its type and text.
    Elements without a valid bbox, and prose prompts, draw nothing."""
    out = image.convert("RGB")
    W, H = out.size
    boxes = _boxes(caption)
    stroke = max(2, round(min(W, H) / 256))
    label_font = font(max(11, round(min(W, H) / 48)))
    tint = Image.new("RGBA", out.size, (0, 0, 0, 0))
    tint_draw = ImageDraw.Draw(tint)
    for _, el in boxes:  # a faint fill shows each box's area without hiding the image
        tint_draw.rectangle(bbox_to_pixels(el["bbox"], W, H), fill=(*box_color(el), 40))
    out = Image.alpha_composite(out.convert("RGBA"), tint).convert("RGB")
    draw = ImageDraw.Draw(out)
    for _, el in boxes:
        draw.rectangle(bbox_to_pixels(el["bbox"], W, H), outline=box_color(el), width=stroke)
    for i, el in boxes:
        _draw_label(draw, el, i, bbox_to_pixels(el["bbox"], W, H), label_font, stroke)
    return out


def _draw_label(draw: ImageDraw.ImageDraw, el: dict, index: int, box, label_font, stroke: int) -> None:
    """The label on a chip of the box's colour: inside the top-left corner, above the box when it is too
    short, cut to the box's width (at least 12 characters' room)."""
    x0, y0, x1, y1 = box
    color = box_color(el)
    room = max(x1 - x0 - 2 * stroke, int(label_font.getlength("M" * 12)))
    text = _fit(element_label(el, index), label_font, room)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=label_font)
    w, h = right - left + 4, bottom - top + 4
    x, y = x0 + stroke, y0 + stroke
    if y1 - y0 < h + 2 * stroke and y0 >= h:
        y = y0 - h
    draw.rectangle((x, y, x + w, y + h), fill=color)
    ink = INK if sum(color) > 384 else (255, 255, 255)
    draw.text((x + 2 - left, y + 2 - top), text, font=label_font, fill=ink)


def _fit(text: str, label_font, width: int) -> str:
    if label_font.getlength(text) <= width:
        return text
    while text and label_font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _wrap(text: str, label_font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and label_font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return [*lines, line] if line else lines


def render_preview(caption: str | dict, width: int, height: int) -> Image.Image:
    """A sheet: the layout at width x height (pixel (x, y) of the sheet = pixel (x, y) of the image the
    caption asks for), on a 100-unit grid, and below it the description, the background, the style
    and its palette swatches, and the elements that carry no bbox."""
    canvas = Image.new("RGB", (width, height), CANVAS)
    grid = ImageDraw.Draw(canvas)
    for k in range(1, 10):
        grid.line([(round(k * width / 10), 0), (round(k * width / 10), height)], fill=GRID)
        grid.line([(0, round(k * height / 10)), (width, round(k * height / 10))], fill=GRID)
    layout = draw_layout(canvas, caption)
    panel = _panel(caption, width, max(12, round(min(width, height) / 40)))
    sheet = Image.new("RGB", (width, height + panel.height), (255, 255, 255))
    sheet.paste(layout, (0, 0))
    sheet.paste(panel, (0, height))
    return sheet


def _panel(caption: str | dict, width: int, size: int) -> Image.Image:
    try:
        parsed = parse_caption(caption)
    except ValueError as e:
        parsed = f"(not a valid caption: {e})"
    body_font, margin = font(size), size
    lines: list[tuple[str, tuple]] = []  # (text, colour)
    palette: list[str] = []
    if isinstance(parsed, str):
        lines += [(s, INK) for s in _wrap(parsed, body_font, width - 2 * margin)]
    elif isinstance(parsed, dict):
        comp = parsed.get("compositional_deconstruction")
        comp = comp if isinstance(comp, dict) else {}
        style = parsed.get("style_description")
        style = style if isinstance(style, dict) else {}
        for title, value in (
            ("Description", parsed.get("high_level_description")),
            ("Background", comp.get("background")),
            ("Style", "; ".join(f"{k}: {v}" for k, v in style.items() if k != "color_palette" and isinstance(v, str))),
        ):
            if isinstance(value, str) and value:
                lines += [(s, INK) for s in _wrap(f"{title}: {value}", body_font, width - 2 * margin)]
        lines.append(("Boxes: blue = obj, red = text, or the element's first palette colour", (90, 90, 90)))
        unboxed = [element_label(e, i) for i, e in enumerate(caption_elements(parsed)) if "bbox" not in e]
        if unboxed:
            lines += [(s, (90, 90, 90)) for s in _wrap("No bbox: " + "; ".join(unboxed), body_font, width - 2 * margin)]
        raw = style.get("color_palette")
        palette = (
            [c for c in raw if isinstance(c, str) and _HEX.match(c)][:MAX_STYLE_COLORS] if isinstance(raw, list) else []
        )
    line_h = round(size * 1.5)
    swatch = 2 * size
    height = 2 * margin + line_h * len(lines) + (swatch + line_h + margin if palette else 0)
    panel = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    y = margin
    for text, colour in lines:
        draw.text((margin, y), text, font=body_font, fill=colour)
        y += line_h
    _draw_swatches(draw, palette, margin, y + margin // 2, swatch, font(max(9, size * 3 // 4)), width)
    return panel


def _draw_swatches(draw, palette: list[str], x: int, y: int, side: int, label_font, width: int) -> None:
    step = max(side, int(label_font.getlength("#DDDDDD")) + 6)
    for k, colour in enumerate(palette):
        left = x + k * step
        if left + side > width:
            break
        draw.rectangle((left, y, left + side, y + side), fill=hex_to_rgb(colour), outline=INK)
        draw.text((left, y + side + 2), colour.upper(), font=label_font, fill=INK)


def wandb_boxes(caption: str | dict, width: int, height: int) -> dict:
    """The caption's boxes for `wandb.Image(image, boxes=...)` (pixel domain, one class per element
    type); {} when the caption has no valid boxes."""
    box_data = []
    for i, el in _boxes(caption):
        x0, y0, x1, y1 = bbox_to_pixels(el["bbox"], width, height)
        box_data.append(
            {
                "position": {"minX": x0, "maxX": x1, "minY": y0, "maxY": y1},
                "domain": "pixel",
                "class_id": WANDB_CLASS_IDS.get(el.get("type"), 0),
                "box_caption": element_label(el, i),
            }
        )
    if not box_data:
        return {}
    labels = {v: k for k, v in WANDB_CLASS_IDS.items()}
    if any(b["class_id"] == 0 for b in box_data):
        labels[0] = "other"
    return {"layout": {"box_data": box_data, "class_labels": labels}}
