"""The grid PNG: one sheet per Z value, a title with the fixed settings, X values across the top, Y values
and prompt x seed sections down the left (margins measured from the labels), optional scores under each
image, near-uniform images outlined in red."""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image, ImageDraw

from ideogram4.captions.draw import font
from ideogram4.image_files import ImageFileError, opened_image

from .axes import Layout
from .present import round_value

PAD = 8
BACKGROUND = "white"
MISSING_FILL = (200, 200, 200)
FLAG_COLOUR = (220, 0, 0)
log = logging.getLogger("ideogram4.experiment")
SEPARATOR = (170, 170, 170)
MIN_TITLE_WIDTH = 640  # narrower sheets wrap their title lines at this width


def _thumb(path: Path, cell: int) -> Image.Image | None:
    """The cell's picture; None (a warning names the file) when it is damaged or too large to decode."""
    try:
        with opened_image(path) as im:
            im.draft("RGB", (cell, cell))
            thumb = im.convert("RGB")
    except (ImageFileError, OSError, SyntaxError, ValueError) as e:
        log.warning("Grid: %s", e)
        return None
    if max(thumb.size) > cell:
        thumb.thumbnail((cell, cell), Image.LANCZOS)
    elif max(thumb.size) < cell:  # tiny test images: scale up (nearest) so they are visible
        f = cell / max(thumb.size)
        thumb = thumb.resize((max(1, round(thumb.width * f)), max(1, round(thumb.height * f))), Image.NEAREST)
    return thumb


class _Text:
    """Measured text in one font size (so margins fit what is written in them)."""

    def __init__(self, size: int):
        self.font = font(size)
        self.line = size + 4
        self._probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(self, lines: list[str]) -> int:
        return int(max((self._probe.textlength(t, font=self.font) for t in lines), default=0))

    def wrap(self, text: str, width: int) -> list[str]:
        lines: list[str] = []
        for word in text.split(" "):
            if lines and self.width([f"{lines[-1]} {word}"]) <= width:
                lines[-1] = f"{lines[-1]} {word}"
            else:
                lines.append(word)
        return lines

    def fit(self, text: str, width: int) -> str:
        """`text` cut with an ellipsis to `width` pixels (an over-long value never overlaps its neighbour)."""
        if self.width([text]) <= width:
            return text
        while text and self.width([text + "\u2026"]) > width:
            text = text[:-1]
        return text + "\u2026"


def _row_labels(layout: Layout, section: int, y: int) -> list[str]:
    lines = [layout.section_title(section)] if y == 0 or layout.y.key is None else []
    return lines + ([layout.y.title(y)] if layout.y.key else [])


def _scores(record: dict, scores: list[str]) -> list[tuple[str, str]]:
    metrics = record.get("metrics") or {}
    return [(m, round_value(metrics[m]) if isinstance(metrics.get(m), (int, float)) else "-") for m in scores]


def render_sheet(layout: Layout, z: int, title: list[str], cell: int = 256, scores: list[str] = ()) -> Image.Image:
    """One sheet (all cells with Z position `z`) as an RGB image."""
    text, small = _Text(max(12, min(20, cell // 14))), _Text(max(11, min(16, cell // 18)))
    rows = [(s, y) for s in range(len(layout.sections)) for y in range(len(layout.y.values))]
    label_w = text.width([line for s, y in rows for line in _row_labels(layout, s, y)]) + 2 * PAD
    head = [layout.x.title(i).split("\n") for i in range(len(layout.x.values))]
    header_h = text.line * max(len(h) for h in head) + 2 * PAD
    score_h = small.line * len(scores)
    row_h, col_w = cell + score_h + PAD, cell + PAD
    W = max(label_w + len(layout.x.values) * col_w + PAD, MIN_TITLE_WIDTH)
    title = [part for line in title for part in text.wrap(line, W - 2 * PAD)]
    title_h = text.line * len(title) + PAD
    canvas = Image.new("RGB", (W, title_h + header_h + len(rows) * row_h + PAD), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title):
        draw.text((PAD, PAD + i * text.line), line, fill="black", font=text.font)
    for c, lines in enumerate(head):
        for i, line in enumerate(lines):
            draw.text(
                (label_w + c * col_w, title_h + PAD + i * text.line), text.fit(line, cell), fill="black", font=text.font
            )
    for r, (s, y) in enumerate(rows):
        top = title_h + header_h + r * row_h
        if r and y == 0:  # a line between sections
            draw.line([(PAD, top - PAD // 2), (W - PAD, top - PAD // 2)], fill=SEPARATOR, width=1)
        for i, line in enumerate(_row_labels(layout, s, y)):
            draw.text((PAD, top + i * text.line), line, fill="black", font=text.font)
        for c in range(len(layout.x.values)):
            _draw_cell(canvas, draw, layout.cells.get((z, s, y, c)), (label_w + c * col_w, top), cell, small, scores)
    return canvas


def _draw_cell(canvas, draw, entry: dict | None, at: tuple[int, int], cell: int, small: _Text, scores) -> None:
    x, y = at
    thumb = _thumb(Path(entry["path"]), cell) if entry is not None and Path(entry["path"]).exists() else None
    if thumb is None:
        draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=MISSING_FILL)
        label = "unreadable" if entry is not None and Path(entry["path"]).exists() else "missing"
        draw.text((x + PAD, y + PAD), label, fill="black", font=small.font)
        return
    canvas.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
    if (entry["record"].get("flags") or {}).get("near_uniform"):
        draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=FLAG_COLOUR, width=3)
        draw.text((x + PAD, y + cell - small.line - 2), "FLAGGED near-uniform", fill=FLAG_COLOUR, font=small.font)
    for i, (name, value) in enumerate(_scores(entry["record"], list(scores))):
        line = f"{small.fit(name, cell - small.width([f' {value}']))} {value}"  # the name gives way, never the value
        draw.text((x, y + cell + 2 + i * small.line), line, fill="black", font=small.font)
