"""Bad masked-edit arguments: one clear line naming the argument, the value and the fix, before any weights
load: through `generate` on a pipeline with no models (any model use would crash instead), and through the
runner's validation (a ConfigError before the pipeline is looked up).
"""

import numpy as np
import pytest
import torch
from PIL import Image

from ideogram4 import Ideogram4Pipeline
from ideogram4.tiny import TINY_DIT

FAST = dict(height=64, width=64, num_inference_steps=2, progress=False)
CAPTION = {
    "high_level_description": "A poster.",
    "compositional_deconstruction": {
        "background": "Paper.",
        "elements": [
            {"type": "text", "bbox": [100, 100, 400, 900], "text": "HI", "desc": "ink"},
            {"type": "obj", "desc": "a bird"},
        ],
    },
}


@pytest.fixture
def modelless():
    pipe = Ideogram4Pipeline(None, None, None, None, device="cpu", dtype=torch.float32)
    pipe.side_range = TINY_DIT.side_range  # the tiny model's: the cases render 64 px
    return pipe


@pytest.fixture
def files(tmp_path):
    """Name -> path of the images the cases use."""
    half = np.zeros((64, 64), np.uint8)
    half[:, :32] = 255
    made = {
        "input": Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)),
        "mask": Image.fromarray(half),
        "black": Image.new("L", (64, 64), 0),
        "rgba": Image.fromarray(half).convert("RGBA"),
        "colour": Image.new("RGB", (64, 64), (255, 0, 0)),
        "palette": Image.fromarray(half).convert("P"),
        "wide": Image.new("L", (128, 64), 255),
        "small": Image.fromarray(np.zeros((48, 64, 3), np.uint8)),
    }
    paths = {}
    for name, image in made.items():
        paths[name] = tmp_path / f"{name}.png"
        image.save(paths[name])
    return paths


# (prompt, generate arguments with file names, the one-line message)
CASES = {
    "wrong mode (alpha)": (
        "x",
        dict(mask_image="rgba"),
        r"mask_image has mode 'RGBA' .*: pass an 8-bit greyscale image",
    ),
    "wrong mode (palette)": ("x", dict(mask_image="palette"), r"mask_image has mode 'P'"),
    "colour mask": ("x", dict(mask_image="colour"), r"mask_image is a colour image \(its R, G and B differ\)"),
    "all black": (
        "x",
        dict(mask_image="black"),
        r"mask_image is all black .*nothing would be repainted: paint the area",
    ),
    "black strength map": (
        "x",
        dict(strength_map="black"),
        r"strength_map is all black: every position has strength 0",
    ),
    "size policy": (
        "x",
        dict(mask_image="wide"),
        r"mask_image is 128x64 \(WxH\) but the output is 64x64: a mask is stretched .*aspect ratios agree.*give a 64x64 mask",
    ),
    "element out of range": (
        CAPTION,
        dict(edit_elements=[5]),
        r"edit_elements=\[5\]: element 5 is out of range: prompts\[0\] has 2 elements \(0\.\.1\)",
    ),
    "caption without bboxes": (
        "a poster that says HI",
        dict(edit_elements=[0]),
        r"edit_elements=\[0\] needs a structured caption with bboxes, but prompts\[0\] is plain text",
    ),
    "element without a bbox": (CAPTION, dict(edit_elements=[1]), r"element 1 of prompts\[0\] has no bbox \(None\)"),
    "empty element list": ("x", dict(edit_elements=[]), r"edit_elements=\[\]: pass a non-empty list"),
    "outpaint not a multiple of 16": (
        "x",
        dict(outpaint={"right": 100}),
        r"outpaint\['right'\]=100 is not a multiple of 16: use 96",
    ),
    "outpaint unknown side": ("x", dict(outpaint={"east": 64}), r"outpaint=\{'east': 64\}: pass pixels per side"),
    "outpaint beyond the limits": (
        "x",
        dict(outpaint={"right": 1600}, height=256, width=1856),
        r"width x height='1856x256' has aspect ratio 7\.25:1, beyond 6:1: bring width/height within 6:1",
    ),
    "two regions": ("x", dict(mask_image="mask", strength_map="mask"), r"mask_image and strength_map are both given"),
    "no input image": (
        "x",
        dict(mask_image="mask", input_image=None),
        r"mask_image edits an image but input_image is None",
    ),
    "blur without a mask": ("x", dict(mask_blur=8), r"mask_blur=8 applies to a masked edit"),
    "blur on a strength map": (
        "x",
        dict(strength_map="mask", mask_blur=8),
        r"mask_blur=8\.0 does not apply to strength_map",
    ),
    "negative blur": ("x", dict(mask_image="mask", mask_blur=-1), r"mask_blur=-1\.0 is outside 0\.\.256"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_edit_is_one_line_before_any_model_runs(modelless, files, case):
    prompt, args, message = CASES[case]
    args = {"input_image": "input", **args}
    args = {k: files.get(v, v) if isinstance(v, str) else v for k, v in args.items()}
    with pytest.raises((ValueError, TypeError), match=message) as info:
        modelless.generate([prompt], [0], **(FAST | args))
    assert "\n" not in str(info.value)


def test_outpaint_size_mismatch_says_which_output_size(modelless, files):
    with pytest.raises(
        ValueError, match=r"grows the 64x48 \(WxH\) input_image to 64x64.*but the output is 256x256: pass width=64"
    ) as info:
        modelless.generate(
            ["x"], [0], input_image=files["small"], outpaint={"top": 16}, **(FAST | dict(height=256, width=256))
        )
    assert "\n" not in str(info.value)


# --- the runner: the same checks, as config problems, before the pipeline is looked up ------------


RUNNER_CASES = {  # overrides (input_image added unless "no input"), the field, what the line says
    "wrong mode": (["mask_image={rgba}"], "mask_image = ", "has mode 'RGBA'"),
    "all black": (["mask_image={black}"], "mask_image = ", "all black"),
    "size policy": (["mask_image={wide}"], "mask_image = ", "aspect ratios agree"),
    "element out of range": (["edit_elements=[7]", "prompts=layout"], "edit_elements = [7]", "out of range"),
    "caption without bboxes": (["edit_elements=[0]", "prompt=a plain prompt"], "edit_elements = [0]", "plain text"),
    "outpaint resolution": (["outpaint.right=64"], "outpaint = ", "set resolution.width=128 resolution.height=64"),
    "missing mask file": (["mask_image=/no/such/mask.png"], "mask_image = ", "no such file"),
    "no input": (["mask_image={mask}"], "mask_image = ", "input_image is None"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(RUNNER_CASES))
def test_runner_reports_a_bad_edit_at_validation(files, case):
    """build_plan is the runner's validation: it runs before the pipeline (and its weights) is looked up."""
    from runner_helpers import TINY, compose

    from ideogram4.experiment import ConfigError, build_plan

    overrides, field, message = RUNNER_CASES[case]
    overrides = [o.format(**files) for o in overrides]
    source = [] if case == "no input" else [f"input_image={files['input']}"]
    with pytest.raises(ConfigError) as info:
        build_plan(compose([*TINY, *source, *overrides]), check_tokens=False)
    lines = [p for p in info.value.problems if p.startswith(field) and message in p]
    assert len(lines) == 1, info.value.problems
    assert "\n" not in lines[0] and "Fix:" in lines[0]
