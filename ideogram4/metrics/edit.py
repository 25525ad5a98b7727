"""Masked edits: was the kept region kept, and how much did the edited region change?

Compared with the edit's reference (the input image; for outpainting, the input on its canvas), over the
pixels the edit kept (those whose latents were the input's: masks.EditRegion.edited is False) or edited:
    kept_psnr      PSNR (scikit-image, data range 255) of the kept region; 100 = identical (paste_back)
    kept_ssim      mean of scikit-image's SSIM map over the kept region (grey, 7 x 7 windows)
    edited_change  mean absolute difference (0..255) over the edited region: how far the edit moved it
The VAE round trip alone costs the kept region some dB (measure it once: an edit cannot beat it);
`paste_back=True` makes the kept region identical. An image made without a mask scores None.
"""

from __future__ import annotations

import numpy as np

from .registry import MetricResult

NAME = "edit"
VERSION = "1"
KEYS = {"kept_psnr": "higher", "kept_ssim": "higher", "edited_change": "neither"}
PACKAGES = {"skimage": "scikit-image>=0.22"}
EXTRA = "metrics"  # the install extra that brings PACKAGES
WEIGHTS = "none"
OPTIONS: dict = {}
READS_CAPTION = False
READS_EDIT = True
IDENTICAL_PSNR = 100.0  # PSNR of identical pixels is infinite; JSON has no infinity


def kept_psnr(reference: np.ndarray, image: np.ndarray, kept: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    a, b = reference[kept], image[kept]
    return IDENTICAL_PSNR if np.array_equal(a, b) else float(peak_signal_noise_ratio(a, b, data_range=255))


def kept_ssim(reference: np.ndarray, image: np.ndarray, kept: np.ndarray) -> float:
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(rgb2gray(reference), rgb2gray(image), data_range=1.0, full=True)
    return float(full[kept].mean())


def score_detailed(image, facts, options: dict, edit=None) -> MetricResult:
    if edit is None:
        return MetricResult(values=dict.fromkeys(KEYS))
    reference = np.asarray(edit.reference.convert("RGB"))
    pixels = np.asarray(image)
    kept, edited = ~edit.edited, edit.edited
    values = {
        "kept_psnr": kept_psnr(reference, pixels, kept) if kept.any() else None,
        "kept_ssim": kept_ssim(reference, pixels, kept) if kept.any() else None,
        "edited_change": float(np.abs(reference[edited].astype(np.float64) - pixels[edited]).mean()),
    }
    return MetricResult(values=values, details={"kept_pixels": int(kept.sum()), "edited_pixels": int(edited.sum())})
