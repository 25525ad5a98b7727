"""Masked editing on the tiny model: inpainting, per-position strength, outpainting, caption-element edits.

Oracles: the VAE encoding of the input done here (the kept region's latents must equal it exactly),
scikit-image's PSNR against what the VAE round trip alone gives, text-to-image and img2img runs of the
same pipeline (an all-white mask, a single-grey strength map), and masks built here from the rules.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from ideogram4 import sampling
from ideogram4.models.vae import from_pil

SIDE = 256
RUN = dict(num_inference_steps=3, progress=False, height=SIDE, width=SIDE)


def source_image(height=SIDE, width=SIDE, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    return Image.fromarray((gradient * 0.8 + rng.integers(0, 50, (height, width, 3))).astype(np.uint8))


def half_mask(height=SIDE, width=SIDE) -> Image.Image:
    """White (repaint) on the left half, black (keep) on the right."""
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    return Image.fromarray(mask)


def encode(pipe, image) -> torch.Tensor:
    return pipe.vae.encode(from_pil([image], image.height, image.width))


def as_grid(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return tokens.reshape(tokens.shape[0], height // 16, width // 16, -1)


def decoded(pipe, tokens, height, width) -> np.ndarray:
    pixels = pipe.vae.decode(tokens, height // 16, width // 16)
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round()[0].permute(1, 2, 0).numpy().astype(np.uint8)


def psnr(a, b) -> float:
    return peak_signal_noise_ratio(np.asarray(a), np.asarray(b), data_range=255)


# --- Must show ------------------------------------------------------------------------------------


def test_left_half_mask_keeps_the_right_half_latents_exactly_and_its_pixels(pipe):
    source = source_image()
    out = pipe.generate(["a cat"], [0], input_image=source, mask_image=half_mask(), output_type="np", **RUN)
    final, encoded = as_grid(out.latents, SIDE, SIDE), as_grid(encode(pipe, source), SIDE, SIDE)
    assert torch.equal(final[:, :, SIDE // 32 :], encoded[:, :, SIDE // 32 :]), "kept half differs from the input"
    assert (final[:, :, : SIDE // 32] - encoded[:, :, : SIDE // 32]).abs().mean() > 0.1, "the masked half was kept"
    right = np.s_[:, SIDE // 2 :]
    roundtrip = psnr(np.asarray(source)[right], decoded(pipe, encode(pipe, source), SIDE, SIDE)[right])
    kept = psnr(np.asarray(source)[right], out.images[0][right])
    assert kept > roundtrip - 0.5, f"kept region {kept:.2f} dB vs the VAE round trip alone {roundtrip:.2f} dB"


def test_all_white_mask_at_strength_one_is_text_to_image(pipe):
    white = Image.new("L", (SIDE, SIDE), 255)
    edit = pipe.generate(["a cat"], [4], input_image=source_image(), mask_image=white, output_type="latent", **RUN)
    text_to_image = pipe.generate(["a cat"], [4], output_type="latent", **RUN)
    assert torch.equal(edit.latents, text_to_image.latents)


@pytest.mark.parametrize("level, strength", [(153, 1.0), (204, 0.5)])  # 0.6 and 0.8 x 0.5 = 0.4
def test_single_grey_strength_map_is_img2img_at_that_strength(pipe, level, strength):
    grey = Image.new("L", (SIDE, SIDE), level)
    source = source_image()
    mapped = pipe.generate(
        ["a cat"],
        [1],
        input_image=source,
        strength_map=grey,
        denoising_strength=strength,
        output_type="latent",
        **RUN,
    )
    img2img = pipe.generate(
        ["a cat"],
        [1],
        input_image=source,
        denoising_strength=level / 255 * strength,
        output_type="latent",
        **RUN,
    )
    assert torch.equal(mapped.latents, img2img.latents)


def test_outpaint_256_by_128_right_keeps_the_left_256_columns(pipe):
    source = source_image()
    out = pipe.generate(
        ["a cat"],
        [2],
        input_image=source,
        outpaint={"right": 128},
        output_type="np",
        **(RUN | dict(height=256, width=384)),
    )
    assert out.images.shape == (1, 256, 384, 3)
    canvas = Image.fromarray(np.pad(np.asarray(source), ((0, 0), (0, 128), (0, 0)), mode="edge"))
    final, encoded = as_grid(out.latents, 256, 384), as_grid(encode(pipe, canvas), 256, 384)
    assert torch.equal(final[:, :, :16], encoded[:, :, :16])
    assert not torch.equal(final[:, :, 16:], encoded[:, :, 16:])
    roundtrip = psnr(source, decoded(pipe, encode(pipe, source), 256, 256))
    kept = psnr(source, out.images[0][:, :256])
    assert kept > roundtrip - 0.5, f"kept region {kept:.2f} dB vs the VAE round trip alone {roundtrip:.2f} dB"


# --- the rules behind them ------------------------------------------------------------------------


def test_black_and_white_strength_map_is_the_same_edit_as_that_mask(pipe):
    source, mask = source_image(seed=3), half_mask()
    as_mask = pipe.generate(["a dog"], [5], input_image=source, mask_image=mask, output_type="latent", **RUN)
    as_map = pipe.generate(["a dog"], [5], input_image=source, strength_map=mask, output_type="latent", **RUN)
    assert torch.equal(as_mask.latents, as_map.latents)


def test_each_position_joins_when_the_schedule_reaches_its_strength():
    """Differential Diffusion: a position of strength s is the input (noised to the current time) at every
    time whose schedule position u is above s, and follows the sampler from there on."""
    steps, tokens = 6, 3
    strengths = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)[None, :, None].expand(1, tokens, 4)
    times = sampling.timesteps(steps, 256, 256, denoising_strength=1.0)
    x0, noise = torch.full((1, tokens, 4), 2.0), torch.randn(1, tokens, 4, generator=torch.Generator().manual_seed(0))
    edit = sampling.edit_blend(x0, noise, times, strengths, per_position_strength=True)
    seen = []

    def velocity(z, t):
        seen.append(z.clone())
        return torch.ones_like(z)  # anything but the input's own path

    z = sampling.denoise(velocity, edit(0, noise.clone()), times, [1.0] * steps, edit=edit)
    u = sampling.schedule_positions(steps, 1.0)
    for i, z_i in enumerate(seen):
        known = sampling.noise_to(x0, noise, float(times[i]))
        assert torch.equal(z_i[:, 2], known[:, 2]), "strength 0 must stay the input"
        assert torch.equal(z_i[:, 1], known[:, 1]) == bool(u[i] > 0.5), f"step {i}: u={float(u[i]):.2f}"
        assert not torch.equal(z_i[:, 0], known[:, 0])
    assert torch.equal(z[:, 2], x0[:, 2]) and not torch.equal(z[:, 1], x0[:, 1])


def test_mask_rules_latent_grid_resize_and_inward_feathering():
    from ideogram4.masks import EditArgs, prepare_edit

    source = source_image(64, 64)
    mask = np.zeros((64, 64), np.uint8)
    mask[3, 40] = 255  # one white pixel marks its whole 8 x 8 latent pixel
    mask[32:, :] = 255
    plan = prepare_edit(EditArgs("mask_image", Image.fromarray(mask), 0.0, False, 0), [source], ["x"], 64, 64, 1.0)
    expected = np.zeros((8, 8))
    expected[0, 5] = 1.0
    expected[4:, :] = 1.0
    assert np.array_equal(plan.weights[0], expected)
    big = Image.fromarray(mask).resize((128, 128), Image.Resampling.NEAREST)  # any size of the same aspect
    assert np.array_equal(
        prepare_edit(EditArgs("mask_image", big, 0.0, False, 0), [source], ["x"], 64, 64, 1.0).weights, plan.weights
    )
    feathered = prepare_edit(
        EditArgs("mask_image", Image.fromarray(mask), 24.0, False, 0), [source], ["x"], 64, 64, 1.0
    )
    w = feathered.weights[0]
    assert np.all(w[expected == 0] == 0), "feathering must never touch the kept region"
    # 24 pixels = 3 latent pixels: from the edge, latent rows 4, 5, 6, 7 are 0.5, 1.5, 2.5, 3.5 pixels in
    assert np.allclose(w[4:, 3], [0.5 / 3, 1.5 / 3, 2.5 / 3, 1.0]), w[:, 3]
    assert 0 < w[0, 5] < 1, "a mask thinner than the feathering keeps some weight"
    paste = feathered.regions[0].paste  # at full resolution: 24 pixels of ramp
    assert paste[31, 0] == 0 and np.isclose(paste[32, 0], 0.5 / 24) and paste[56, 0] == 1.0


def test_paste_back_puts_the_input_pixels_back_outside_the_mask(pipe):
    source = source_image(seed=5)
    out = pipe.generate(
        ["a cat"], [0], input_image=source, mask_image=half_mask(), paste_back=True, output_type="np", **RUN
    )
    assert np.array_equal(out.images[0][:, SIDE // 2 :], np.asarray(source)[:, SIDE // 2 :])
    assert not np.array_equal(out.images[0][:, : SIDE // 2], np.asarray(source)[:, : SIDE // 2])


CAPTION = {
    "high_level_description": "A poster.",
    "compositional_deconstruction": {
        "background": "Plain paper.",
        "elements": [
            {"type": "obj", "bbox": [0, 0, 250, 250], "desc": "a sun"},
            {"type": "text", "bbox": [500, 250, 750, 750], "text": "HELLO", "desc": "bold letters"},
            {"type": "obj", "desc": "a bird somewhere"},
        ],
    },
}


def test_edit_elements_repaints_the_element_bbox_with_its_margin_and_keeps_the_rest(pipe):
    source = source_image(seed=7)
    out = pipe.generate(
        [CAPTION], [3], input_image=source, edit_elements=[1], edit_margin=16, output_type="latent", **RUN
    )
    # element 1: rows 500..750, columns 250..750 of 1000 -> pixels 128..192 x 64..192, grown by 16
    region = np.zeros((SIDE, SIDE), bool)
    region[112:208, 48:208] = True
    edited = np.repeat(np.repeat(region.reshape(32, 8, 32, 8).any(axis=(1, 3)), 8, 0), 8, 1)
    assert np.array_equal(out.edits[0].edited, edited)
    kept_tokens = torch.from_numpy(~region.reshape(16, 16, 16, 16).any(axis=(1, 3))).reshape(-1)
    final, encoded = out.latents[0, kept_tokens], encode(pipe, source)[0, kept_tokens]
    assert torch.equal(final, encoded)
    assert not torch.equal(out.latents, encode(pipe, source))
