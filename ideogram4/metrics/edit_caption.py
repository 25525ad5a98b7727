"""Masked edits: does the edited region show what the caption asks for there?

The existing `ocr` and `palette` metrics, restricted to the edited region (masks.EditRegion.edited):
the caption elements whose bbox lies mostly (more than half its area) in the edited region are scored
in their boxes as those metrics do; texts without a place (a plain prompt's quoted strings) are read
in the edited region's bounding box, and the style palette is compared with that box's colours.
    edited_ocr_word_accuracy, edited_ocr_ned   as ocr_word_accuracy, ocr_ned
    edited_palette_delta_e                      style palette vs the edited region's dominant colours
    edited_palette_delta_e_elements             the edited elements' palettes in their boxes
Options: those of `ocr` and `palette`. An image made without a mask scores None.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import ocr, palette
from .caption import BBOX_SCALE, CaptionFacts, pixel_box
from .registry import MetricResult

NAME = "edit_caption"
VERSION = "1"
KEYS = {
    "edited_ocr_word_accuracy": "higher",
    "edited_ocr_ned": "higher",
    "edited_palette_delta_e": "lower",
    "edited_palette_delta_e_elements": "lower",
}
PACKAGES = {**ocr.PACKAGES, **palette.PACKAGES}
EXTRA = ocr.EXTRA
WEIGHTS = ocr.WEIGHTS
OPTIONS = {**ocr.OPTIONS, **palette.OPTIONS}
READS_EDIT = True
INSIDE_SHARE = 0.5  # an element belongs to the edit when more than this share of its bbox was edited


def check(options: dict) -> None:
    ocr.check({k: options[k] for k in ocr.OPTIONS})
    palette.check({k: options[k] for k in palette.OPTIONS})


def region_bbox(edited: np.ndarray) -> tuple[int, int, int, int]:
    """The edited pixels' bounding rectangle as a caption bbox [ymin, xmin, ymax, xmax] in 0..1000."""
    rows, cols = np.flatnonzero(edited.any(axis=1)), np.flatnonzero(edited.any(axis=0))
    h, w = edited.shape
    top, left, bottom, right = int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1
    return (top * BBOX_SCALE // h, left * BBOX_SCALE // w, -(-bottom * BBOX_SCALE // h), -(-right * BBOX_SCALE // w))


def in_edit(bbox, edited: np.ndarray) -> bool:
    left, top, right, bottom = pixel_box(bbox, (edited.shape[1], edited.shape[0]))
    return bool(edited[top:bottom, left:right].mean() > INSIDE_SHARE)


def edited_facts(facts: CaptionFacts, edited: np.ndarray) -> CaptionFacts:
    """The caption's targets that the edit repainted; unplaced texts and the style palette move to its box."""
    box = region_bbox(edited)
    texts = tuple(
        t if t.bbox is not None else dataclasses.replace(t, bbox=box)
        for t in facts.texts
        if t.bbox is None or in_edit(t.bbox, edited)
    )
    palettes = tuple(p for p in facts.element_palettes if p.bbox is not None and in_edit(p.bbox, edited))
    return dataclasses.replace(facts, texts=texts, element_palettes=palettes)


def score_detailed(image, facts, options: dict, edit=None) -> MetricResult:
    if edit is None or not edit.edited.any():
        return MetricResult(values=dict.fromkeys(KEYS))
    restricted = edited_facts(facts, edit.edited)
    read = ocr.score_detailed(image, restricted, {k: options[k] for k in ocr.OPTIONS})
    colour_options = {k: options[k] for k in palette.OPTIONS}
    elements = palette.score_detailed(image, dataclasses.replace(restricted, style_palette=()), colour_options)
    region = image.crop(pixel_box(region_bbox(edit.edited), image.size))
    style = palette.score_detailed(region, dataclasses.replace(restricted, element_palettes=()), colour_options)
    values = {
        "edited_ocr_word_accuracy": read.values["ocr_word_accuracy"],
        "edited_ocr_ned": read.values["ocr_ned"],
        "edited_palette_delta_e": style.values["palette_delta_e"],
        "edited_palette_delta_e_elements": elements.values["palette_delta_e_elements"],
    }
    details = {"texts": read.details["texts"], "elements": elements.details["elements"], "style": style.details}
    return MetricResult(values=values, details=details)
