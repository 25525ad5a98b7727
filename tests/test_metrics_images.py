"""Metrics on what a file really holds (issue 20): 16-bit and palette PNGs, uncaptioned and missing
images named, options for a metric that is not computed refused."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from ideogram4.metrics import MetricError, check_metrics, get_metric
from ideogram4.metrics.__main__ import main as metrics_main


def test_a_16_bit_png_is_scored_on_its_real_values(tmp_path):
    values = np.tile(np.linspace(0, 65535, 64), (64, 1)).astype(np.uint16)  # (H, W) a full-range ramp
    path = tmp_path / "ramp16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # Pillow reads it as 16-bit greyscale
        got = get_metric("image_stats").score(im, None)["pixel_std"]
    expected = np.rint(values / 257.0).std()  # the same picture in 8 bits (numpy oracle)
    assert got == pytest.approx(expected, abs=0.5) and got > 70


def test_a_palette_png_is_scored_as_its_colours(tmp_path):
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(8, 3), dtype=np.uint8)
    rgb = Image.fromarray(colours[rng.integers(0, 8, size=(48, 48))])  # (H, W, 3) 8 colours
    rgb.quantize(colors=8, method=Image.Quantize.MAXCOVERAGE).save(tmp_path / "palette.png")
    with Image.open(tmp_path / "palette.png") as im:
        assert im.mode == "P"
        palette_values = get_metric("image_stats").score(im, None)
        back = im.convert("RGB")
    assert palette_values == get_metric("image_stats").score(back, None)
    assert np.array_equal(np.asarray(back), np.asarray(rgb))  # 8 colours survive the palette exactly


def test_cli_names_an_image_without_a_caption(tmp_path, capsys):
    path = tmp_path / "plain.png"
    Image.new("RGB", (32, 32), "white").save(path)
    assert metrics_main([str(path), "--metrics", "palette,image_stats"]) == 0
    out, err = capsys.readouterr()
    assert f"note: {path} has no caption" in err
    assert json.loads(out)["palette_delta_e"] is None


def test_options_for_a_metric_that_is_not_computed_are_refused():
    with pytest.raises(MetricError, match=r"options for 'palette', which is not among the metrics"):
        check_metrics(["image_stats"], {"palette": {"colors": 8}})


def test_score_names_an_image_missing_on_disk(tmp_path, caplog):
    from ideogram4.experiment.score import score_folder

    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32), "grey").save(tmp_path / "images" / "a__seed0.png")
    base = {"caption": "x", "seed": 0, "rng_device": "cpu", "settings": {}}
    lines = [
        {**base, "image": f"images/{name}__seed0.png", "prompt_id": name, "settings_hash": name}
        for name in ("a", "gone")
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with caplog.at_level(logging.WARNING, logger="ideogram4.experiment"):
        assert score_folder(tmp_path, ["image_stats"], {}) == 1
    assert "missing on disk" in caplog.text and "images/gone__seed0.png" in caplog.text
