"""Edit regions, prepared before any model runs: what to repaint, how strongly, on which canvas.

The rules (the README's "Editing" section states them for users):
- `mask_image`: greyscale, white (grey level >= 128) = repaint, black = keep. Any size whose aspect ratio is
  within 1 % of the output's; it is resized to the output size (nearest neighbour, so it stays black and
  white) and reduced to the latent grid (one latent pixel = 8 x 8 image pixels): a latent pixel is repainted
  when any of its 64 pixels is white. Everything marked is repainted; nothing outside the mask's latent
  pixels changes.
- `mask_blur` (pixels) feathers inward: the repaint weight rises linearly from 0 at the mask's edge to 1 at
  `mask_blur` pixels inside (at the latent grid for the sampler, at full resolution for `paste_back`), so
  the kept region stays exactly kept and every marked pixel keeps some weight.
- `strength_map` (Differential Diffusion): greyscale, level / 255 x `denoising_strength` is each position's
  strength: it joins the denoising once the schedule has come down to that strength (sampling.join_weights).
  Resized bilinearly, averaged over each latent pixel's 8 x 8 block (in integers, so one grey level gives
  exactly level / 255).
- `outpaint`: the input on a larger canvas, the new area filled by repeating the input's edge pixels (a
  start for strengths below 1; at 1 the new area starts from noise), and a mask that is white on it.
- `edit_elements`: the bbox of each listed element of the caption (indexes as in
  `python -m ideogram4.captions preview`), grown by `edit_margin` pixels, is the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .arguments import load_image
from .captions.draw import bbox_to_pixels
from .captions.schema import caption_elements, parse_caption, valid_bbox
from .spec import LATENT_PIXELS, MASK_ASPECT_TOLERANCE, MASK_MODES, MASK_WHITE


@dataclass(frozen=True)
class EditArgs:
    """The edit arguments of `generate`, once checked (ideogram4.checks.check_edit_args)."""

    kind: str  # one of spec.EDIT_KINDS
    source: Any  # mask image(s) or path(s), the strength map, {side: pixels}, or element indexes
    blur: float  # mask_blur, pixels
    paste_back: bool
    margin: int  # edit_margin, pixels


@dataclass
class EditRegion:
    """One image's edit, as paste-back and the edit metrics need it."""

    reference: Any  # PIL RGB at the output size: the input (outpaint: on its canvas), what kept pixels show
    edited: np.ndarray  # (H, W) bool: pixels whose latent pixel may change (weight or strength > 0)
    paste: np.ndarray  # (H, W) float32 in [0, 1]: weight of the generated pixel when pasting back


@dataclass
class EditPlan:
    kind: str
    regions: list[EditRegion]
    weights: np.ndarray  # (B, H/8, W/8) float64: repaint weights in [0, 1], or per-position strengths
    per_position_strength: bool  # True: `weights` are strengths (join times), False: blend weights
    paste_back: bool
    strength: float  # the schedule's strength: denoising_strength, or the largest per-position strength


# --- reading ---------------------------------------------------------------------------------------


def grey_levels(name: str, image, height: int, width: int, resample: str) -> np.ndarray:
    """(height, width) uint8 grey levels of a mask or strength map (PIL image or path), checked."""
    from PIL import Image

    img = load_image(name, image)
    fix = "pass an 8-bit greyscale image, white = repaint, black = keep (e.g. Image.open(path).convert('L'))"
    if img.mode not in MASK_MODES:
        raise ValueError(f"{name} has mode {img.mode!r} (alpha and palettes are not read as a mask): {fix}")
    levels = np.asarray(img.convert("RGB") if img.mode == "RGB" else img.convert("L"))
    if levels.ndim == 3:
        if not ((levels[..., 0] == levels[..., 1]) & (levels[..., 1] == levels[..., 2])).all():
            raise ValueError(f"{name} is a colour image (its R, G and B differ): {fix}")
        levels = levels[..., 0]
    mh, mw = levels.shape
    if abs((mw / mh) / (width / height) - 1) > MASK_ASPECT_TOLERANCE:
        raise ValueError(
            f"{name} is {mw}x{mh} (WxH) but the output is {width}x{height}: a mask is stretched to the output "
            f"only when the aspect ratios agree within {MASK_ASPECT_TOLERANCE:.0%}: give a {width}x{height} mask"
        )
    if (mw, mh) != (width, height):
        method = Image.Resampling.NEAREST if resample == "nearest" else Image.Resampling.BILINEAR
        levels = np.asarray(Image.fromarray(levels).resize((width, height), method))
    return levels


def element_mask(name: str, caption: str, elements: list[int], margin: int, height: int, width: int) -> np.ndarray:
    """(height, width) bool: the bboxes of `elements` of a structured caption, grown by `margin` pixels."""
    parsed = parse_caption(caption)
    if not isinstance(parsed, dict):
        raise ValueError(
            f"edit_elements={elements} needs a structured caption with bboxes, but {name} is plain text: "
            "pass the caption mapping the image was made from"
        )
    found = caption_elements(parsed)
    white = np.zeros((height, width), dtype=bool)
    for i in elements:
        if not 0 <= i < len(found):
            have = f"{len(found)} elements (0..{len(found) - 1})" if found else "no elements"
            raise ValueError(
                f"edit_elements={elements}: element {i} is out of range: {name} has {have}, "
                "numbered as `python -m ideogram4.captions preview` draws them"
            )
        bbox = found[i].get("bbox")
        if not valid_bbox(bbox):
            raise ValueError(
                f"edit_elements={elements}: element {i} of {name} has no bbox ({bbox!r}): give it "
                '"bbox": [ymin, xmin, ymax, xmax] in 0..1000, or edit an element that has one'
            )
        x0, y0, x1, y1 = bbox_to_pixels(bbox, width, height)
        white[max(0, y0 - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin] = True
    return white


def outpaint_canvas(image, sides: dict[str, int]) -> tuple[Any, np.ndarray]:
    """(the input on the larger canvas, edge pixels repeated outward; (H, W) bool, True on the new area)."""
    from PIL import Image

    pixels = np.asarray(image.convert("RGB"))
    h, w = pixels.shape[:2]
    top, bottom, left, right = sides["top"], sides["bottom"], sides["left"], sides["right"]
    canvas = np.pad(pixels, ((top, bottom), (left, right), (0, 0)), mode="edge")
    white = np.ones(canvas.shape[:2], dtype=bool)
    white[top : top + h, left : left + w] = False
    return Image.fromarray(canvas), white


# --- grids and feathering --------------------------------------------------------------------------


def to_latent_grid(white: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H/8, W/8) float64: 1 where any of the latent pixel's 8 x 8 pixels is white."""
    h, w = white.shape[0] // LATENT_PIXELS, white.shape[1] // LATENT_PIXELS
    return white.reshape(h, LATENT_PIXELS, w, LATENT_PIXELS).any(axis=(1, 3)).astype(np.float64)


def block_strength(levels: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (H/8, W/8) float64 mean level / 255 per 8 x 8 block (summed in integers: exact)."""
    h, w = levels.shape[0] // LATENT_PIXELS, levels.shape[1] // LATENT_PIXELS
    sums = levels.reshape(h, LATENT_PIXELS, w, LATENT_PIXELS).astype(np.int64).sum(axis=(1, 3))
    return sums / (LATENT_PIXELS * LATENT_PIXELS * 255)


def feather(mask: np.ndarray, width: float) -> np.ndarray:
    """Inward feathering of a 0/1 mask: the weight rises linearly from 0 at the mask's edge to 1 at `width`
    grid pixels inside (distance from each pixel's centre to the nearest kept pixel, minus half a pixel).
    Kept pixels stay 0; the image border is no edge (a mask touching it stays 1 there)."""
    white = mask > 0
    if width <= 0 or white.all():
        return white.astype(np.float64)
    from scipy.ndimage import distance_transform_edt

    return np.clip((distance_transform_edt(white) - 0.5) / width, 0.0, 1.0)


def upsample(grid: np.ndarray) -> np.ndarray:
    """(H/8, W/8) -> (H, W): each latent pixel's value on its 8 x 8 image pixels."""
    return np.repeat(np.repeat(grid, LATENT_PIXELS, axis=0), LATENT_PIXELS, axis=1)


# --- the plan --------------------------------------------------------------------------------------


def white_masks(args: EditArgs, inputs: list, captions: list[str], names: list[str], height: int, width: int):
    """(references at the output size, (H, W) bool masks), one per image, for the binary-mask edits."""
    if args.kind == "outpaint":
        pairs = [outpaint_canvas(image, args.source) for image in inputs]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    if args.kind == "edit_elements":
        whites = [element_mask(n, c, args.source, args.margin, height, width) for n, c in zip(names, captions)]
    else:
        masks = args.source if isinstance(args.source, (list, tuple)) else [args.source]
        names = [f"mask_image[{i}]" for i in range(len(masks))] if len(masks) > 1 else ["mask_image"]
        read = [grey_levels(n, m, height, width, "nearest") >= MASK_WHITE for n, m in zip(names, masks)]
        whites = read if len(read) == len(inputs) else read * len(inputs)
    for i, white in enumerate(whites):
        if not white.any():
            where = "mask_image" if args.kind == "mask_image" else f"the edit_elements mask of {names[i]}"
            raise ValueError(
                f"{where} is all black (no pixel >= {MASK_WHITE}): nothing would be repainted: "
                "paint the area to change white"
            )
    return list(inputs), whites


def prepare_edit(
    args: EditArgs, inputs: list, captions: list[str], height: int, width: int, strength: float, names=None
) -> EditPlan:
    """The EditPlan of one call: reads the mask or map (the only files read), one region per image.
    `names` label the captions in messages (default prompts[i])."""
    names = names or [f"prompts[{i}]" for i in range(len(captions))]
    if args.kind == "strength_map":
        levels = grey_levels("strength_map", args.source, height, width, "bilinear")
        if not levels.any():
            raise ValueError(
                "strength_map is all black: every position has strength 0 and nothing would change: "
                "paint the areas to change grey (partly) or white (fully)"
            )
        grid = block_strength(levels) * strength
        regions = [EditRegion(im, upsample(grid > 0), (levels > 0).astype(np.float32)) for im in inputs]
        weights = np.stack([grid] * len(inputs))
        return EditPlan(args.kind, regions, weights, True, args.paste_back, float(grid.max()))
    references, whites = white_masks(args, inputs, captions, names, height, width)
    grids = [feather(to_latent_grid(w), args.blur / LATENT_PIXELS) for w in whites]
    regions = [
        EditRegion(ref, upsample(g > 0), feather(w.astype(np.float64), args.blur).astype(np.float32))
        for ref, g, w in zip(references, grids, whites)
    ]
    return EditPlan(args.kind, regions, np.stack(grids), False, args.paste_back, strength)


def latent_tokens(weights: np.ndarray):
    """(B, H/8, W/8) -> (B, N, 128) float64 tensor: each latent pixel's value on its 32 channels, as packed."""
    import torch

    from .models.vae import LATENT_CHANNELS, patchify

    grid = torch.from_numpy(np.ascontiguousarray(weights))[:, None]
    return patchify(grid.expand(-1, LATENT_CHANNELS, -1, -1).contiguous())


def paste_back(pixels, regions: list[EditRegion]):
    """uint8 (B, H, W, 3) tensor -> the same with the input's pixels outside each mask (feathered blend)."""
    import torch

    out = []
    for generated, region in zip(pixels.numpy(), regions):
        weight = region.paste[..., None].astype(np.float32)
        reference = np.asarray(region.reference, dtype=np.float32)
        out.append(np.rint(reference * (1.0 - weight) + generated.astype(np.float32) * weight).astype(np.uint8))
    return torch.from_numpy(np.stack(out))
