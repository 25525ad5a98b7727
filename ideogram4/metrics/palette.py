"""Colour: how far is each colour the caption asks for from the colours the image actually has?

The image's dominant colours come from Pillow's median-cut quantiser (on a thumbnail; colours covering
less than `min_share` of the area are ignored, so a stray pixel cannot match a whole palette). Each
caption colour scores its CIEDE2000 distance (scikit-image) to the nearest dominant colour; 0 is an exact
match, about 2 is just noticeable, 10+ is clearly another colour. Lower is better:
    palette_delta_e           mean over style_description.color_palette, against the whole image
    palette_delta_e_elements  mean over every element palette colour, against that element's bbox
"""

from __future__ import annotations

import statistics

import numpy as np
from PIL import Image

from .caption import hex_to_rgb, pixel_box
from .registry import MetricError, MetricResult

NAME = "palette"
VERSION = "1"
KEYS = {"palette_delta_e": "lower", "palette_delta_e_elements": "lower"}
PACKAGES = {"skimage": "scikit-image>=0.22"}
EXTRA = "metrics"  # the install extra that brings PACKAGES
WEIGHTS = "none"
OPTIONS = {"colors": 16, "min_share": 0.005}
THUMBNAIL = 512  # large enough to keep thin strokes (text) their own colour; 4x fewer pixels at 1024^2


def check(options: dict) -> None:
    if not 1 <= options["colors"] <= 256:
        raise MetricError(f"metric 'palette' option 'colors': {options['colors']} must be in 1..256")
    if not 0 <= options["min_share"] < 1:
        raise MetricError(f"metric 'palette' option 'min_share': {options['min_share']} must be in [0, 1)")


def dominant_colors(image, colors: int = 16, min_share: float = 0.005) -> list[tuple[tuple[int, int, int], float]]:
    """((r, g, b), share of the area) of the image's dominant colours, largest share first."""
    small = image.convert("RGB")
    small.thumbnail((THUMBNAIL, THUMBNAIL))
    quantised = small.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, kmeans=2)
    flat = quantised.getpalette()
    total = small.width * small.height
    found = [
        (tuple(flat[3 * index : 3 * index + 3]), count / total)
        for count, index in quantised.getcolors(maxcolors=256)
        if count / total >= min_share
    ]
    return sorted(found, key=lambda c: -c[1]) or [(tuple(flat[0:3]), 1.0)]


def _lab(rgb: list[tuple[int, int, int]]) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(np.asarray(rgb, dtype=np.float64).reshape(-1, 1, 3) / 255.0).reshape(-1, 3)  # (N, 3)


def _hex(rgb) -> str:
    return "#{:02X}{:02X}{:02X}".format(*rgb)


def nearest(colors: tuple[str, ...], image_colors: list) -> list[dict]:
    """Per caption colour: its CIEDE2000 distance to the nearest image colour, and that colour."""
    from skimage.color import deltaE_ciede2000

    wanted = _lab([hex_to_rgb(c) for c in colors])  # (N, 3)
    have = _lab([rgb for rgb, _ in image_colors])  # (M, 3)
    distances = deltaE_ciede2000(wanted[:, None, :], have[None, :, :])  # (N, M)
    best = distances.argmin(axis=1)
    return [
        {"color": c, "delta_e": float(distances[i, best[i]]), "nearest": _hex(image_colors[best[i]][0])}
        for i, c in enumerate(colors)
    ]


def score_detailed(image, facts, options: dict) -> MetricResult:
    colors, share = options["colors"], options["min_share"]
    details: dict = {"style": [], "elements": []}
    style_value = None
    if facts.style_palette:
        image_colors = dominant_colors(image, colors, share)
        details["image_colors"] = [{"color": _hex(rgb), "share": round(s, 4)} for rgb, s in image_colors]
        details["style"] = nearest(facts.style_palette, image_colors)
        style_value = statistics.fmean(d["delta_e"] for d in details["style"])
    element_distances = []
    for target in facts.element_palettes:
        region = image.crop(pixel_box(target.bbox, image.size))
        judged = nearest(target.colors, dominant_colors(region, colors, share))
        element_distances += [d["delta_e"] for d in judged]
        details["elements"].append(
            {
                "index": target.index,
                "bbox": list(target.bbox) if target.bbox else None,
                "delta_e": statistics.fmean(d["delta_e"] for d in judged),
                "colors": judged,
            }
        )
    values = {
        "palette_delta_e": style_value,
        "palette_delta_e_elements": statistics.fmean(element_distances) if element_distances else None,
    }
    return MetricResult(values=values, details=details)
