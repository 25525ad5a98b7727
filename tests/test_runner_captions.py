"""Issue 13 in the runner: layout overlays, W&B layout boxes, prompt upsampling once per sweep."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from runner_helpers import TINY, read_manifest, run_inprocess

from ideogram4.prompts import parse_caption, validate_caption

FAST = [*TINY, "tracker=none", "prompts=smoke"]


@pytest.mark.slow
def test_layout_overlay_draws_the_caption_boxes(tmp_path, tiny_root):
    out = tmp_path / "job"
    run_inprocess(
        [*FAST, "output.layout_overlay=true", "resolution.height=256", "resolution.width=256"], out, tiny_root
    )
    sign = next(r for r in read_manifest(out) if r["prompt_id"] == "sign_hello")
    overlay = out / "images" / "sign_hello__seed0__layout.png"
    with Image.open(out / sign["image"]) as im, Image.open(overlay) as ov:
        assert ov.size == im.size and ov.tobytes() != im.tobytes()
        # the text element's bbox [300, 200, 700, 800] (ymin, xmin, ymax, xmax of 1000): its left edge changed
        x, y = round(200 / 1000 * 256), round(500 / 1000 * 256)
        assert ov.getpixel((x, y)) != im.getpixel((x, y))
    assert [r["image"] for r in read_manifest(out)] == ["images/red_cube__seed0.png", "images/sign_hello__seed0.png"]


def test_wandb_images_carry_the_layout_boxes(tmp_path, tiny_root):
    out = tmp_path / "job"
    run_inprocess([*TINY, "prompts=smoke", "tracker=wandb", "tracker.mode=offline"], out, tiny_root)
    boxes = [json.loads(p.read_text()) for p in out.rglob("*.boxes2D.json")]
    assert boxes, "no W&B box files written"
    captions = [b["box_caption"] for f in boxes for b in f["box_data"]]
    assert any("HELLO" in c for c in captions)


@pytest.fixture(scope="module")
def head_dir(tiny_original, tmp_path_factory):
    from tiny_heads import save_tiny_head

    return save_tiny_head(tiny_original, tmp_path_factory.mktemp("head"))


@pytest.mark.slow
def test_a_sweep_over_cfg_upsamples_each_prompt_once(tmp_path, tiny_root, head_dir):
    from ideogram4.experiment.run import cache

    up = ["prompt=a red fox asleep in the snow", "prompts.upsample=true", f"prompts.upsample_head={head_dir}",
          "prompts.upsample_max_new_tokens=300", *TINY, "tracker=none"]  # fmt: skip
    (first,) = run_inprocess([*up, "cfg=3"], tmp_path / "0", tiny_root).made
    pipe = cache._CURRENT.pipe
    generations = pipe.caption_writer.generations
    (second,) = run_inprocess([*up, "cfg=7"], tmp_path / "1", tiny_root).made
    assert pipe.caption_writer.generations == generations  # the second job reused the caption
    assert first["caption"] == second["caption"] and first["upsampled_from"] == "a red fox asleep in the snow"
    caption = parse_caption(first["caption"])
    assert isinstance(caption, dict) and not [i for i in validate_caption(caption) if i.severity == "error"]
    # resume: the same job again is skipped (keyed on the prompt and the upsampling settings)
    assert not run_inprocess([*up, "cfg=3"], tmp_path / "0", tiny_root).made
