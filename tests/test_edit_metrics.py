"""Edit metrics on synthetic images with known answers: the kept region against an independent PSNR,
and OCR / palette restricted to the edited region (texts drawn with Pillow, real PP-OCR)."""

import numpy as np
from PIL import Image
from test_metrics import BOTTOM, TOP, caption, poster

from ideogram4.masks import EditRegion
from ideogram4.metrics import get_metric, score_image


def region(reference, edited: np.ndarray) -> EditRegion:
    return EditRegion(reference=reference, edited=edited, paste=edited.astype(np.float32))


def lower_half(size: int) -> np.ndarray:
    edited = np.zeros((size, size), bool)
    edited[size // 2 :] = True
    return edited


def test_kept_region_psnr_ssim_and_edited_change():
    reference = poster(("HELLO", TOP))
    pixels = np.asarray(reference).copy()
    size = pixels.shape[0]
    pixels[size // 2 :] = 255 - pixels[size // 2 :]  # the edit changed the lower half only
    edit = region(reference, lower_half(size))
    values = get_metric("edit").score(Image.fromarray(pixels), None, edit=edit)
    assert values["kept_psnr"] == 100.0 and values["kept_ssim"] > 0.95
    expected_change = np.abs(np.asarray(reference, float)[size // 2 :] - pixels[size // 2 :]).mean()
    assert np.isclose(values["edited_change"], expected_change)

    noisy = pixels.astype(int)
    noisy[: size // 2] += np.random.default_rng(0).integers(-20, 21, noisy[: size // 2].shape)
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    mse = ((np.asarray(reference, float)[: size // 2] - noisy[: size // 2]) ** 2).mean()
    values = get_metric("edit").score(Image.fromarray(noisy), None, edit=edit)
    assert np.isclose(values["kept_psnr"], 10 * np.log10(255**2 / mse)) and values["kept_ssim"] < 0.95


def test_edit_metrics_are_none_without_an_edit():
    image = poster(("HELLO", TOP))
    scored = score_image([get_metric("edit"), get_metric("edit_caption")], image, caption(("HELLO", TOP)))
    assert not scored.errors and set(scored.values.values()) == {None}


def test_ocr_and_palette_count_only_what_the_edit_repainted():
    cap = caption(
        ("HELLO", TOP),
        ("WORLD", BOTTOM),
        element_palettes=[(["#FF0000"], [0, 0, 100, 100]), (["#19193C"], [880, 0, 1000, 1000])],
    )
    image = poster(("WRONG", TOP), ("WORLD", BOTTOM))  # the top text is wrong, but the edit kept it
    edit = region(image, lower_half(image.height))
    scored = get_metric("edit_caption").score_detailed(image, cap, edit=edit)
    assert scored.values["edited_ocr_word_accuracy"] == 1.0 and scored.values["edited_ocr_ned"] == 1.0
    assert [t["text"] for t in scored.details["texts"]] == ["WORLD"]
    assert [e["index"] for e in scored.details["elements"]] == [3], "only the element inside the edit is scored"
    assert get_metric("ocr").score(image, cap)["ocr_word_accuracy"] == 0.5  # the whole image: half right
