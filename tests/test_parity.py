"""Parity with the reference: diffusers 0.42.1 Ideogram4Pipeline on the same tiny weights.

Ours loads the ORIGINAL layout (fused qkv), diffusers the diffusers layout (split q/k/v); both folders
hold the same values. fp32, CPU, final_step="clean" (diffusers ends at t = 1).
"""

import numpy as np
import pytest
import torch

STRUCTURED = {
    "high_level_description": "A poster for a jazz night with a saxophone.",
    "style_description": {
        "aesthetics": "bold, high contrast",
        "lighting": "spotlight",
        "medium": "screen print",
        "art_style": "mid-century modern poster",
        "color_palette": ["#1A1A1A", "#F2C14E"],
    },
    "compositional_deconstruction": {
        "background": "Deep black with a warm spotlight.",
        "elements": [
            {"type": "obj", "bbox": [100, 300, 800, 700], "desc": "A golden saxophone."},
            {"type": "text", "bbox": [850, 100, 950, 900], "text": "JAZZ NIGHT", "desc": "Large yellow letters."},
        ],
    },
}


@pytest.fixture(scope="module")
def reference(tiny_diffusers):
    from diffusers import Ideogram4Pipeline as DiffusersPipeline

    ref = DiffusersPipeline.from_pretrained(tiny_diffusers, dtype=torch.float32)
    ref.set_progress_bar_config(disable=True)
    return ref


def run_reference(reference, prompts, height, width, schedule, seed=None, latents=None):
    kwargs = dict(
        height=height, width=width, num_inference_steps=len(schedule), guidance_schedule=schedule, mu=0.0, std=1.5
    )

    def call(output_type):  # a fresh generator (or noise copy) per call: both calls must start from the same noise
        noise = (
            {"latents": latents.clone()}
            if latents is not None
            else {"generator": torch.Generator("cpu").manual_seed(seed)}
        )
        return reference(prompts, output_type=output_type, **kwargs, **noise).images

    lat, img = call("latent"), call("np")
    return lat, np.round(img * 255).astype(np.int16)


def run_ours(pipe, prompts, height, width, schedule, seeds, latents=None):
    out = pipe.generate(
        prompts,
        seeds,
        height=height,
        width=width,
        num_inference_steps=len(schedule),
        guidance_schedule=schedule,
        mu=0.0,
        std=1.5,
        final_step="clean",
        latents=latents,
        output_type="np",
        progress=False,
    )
    return out.latents, out.images.astype(np.int16), out


def assert_match(ours, ref):
    (lat, img), (ref_lat, ref_img) = ours, ref
    assert lat.shape == ref_lat.shape
    diff = (lat - ref_lat).abs().max().item()
    print(f"max |latent diff| = {diff:.2e}")
    assert diff < 1e-4, f"final latents differ by {diff}"
    assert np.abs(img - ref_img).max() <= 1
    assert lat.abs().mean() > 0.1  # a real sample, not a degenerate zero


@pytest.mark.slow
def test_square_with_polish_steps(pipe, reference):
    schedule = [7.0, 7.0, 3.0, 3.0]
    lat, img, _ = run_ours(pipe, ["a red fox in the snow"], 128, 128, schedule, [42])
    assert_match((lat, img), run_reference(reference, "a red fox in the snow", 128, 128, schedule, seed=42))


@pytest.mark.slow
def test_non_square_structured_prompt(pipe, reference):
    schedule = [6.0, 6.0, 6.0, 2.5]
    lat, img, out = run_ours(pipe, [STRUCTURED], 64, 160, schedule, [3])
    # diffusers receives the exact string we fed our encoder: the compact official serialisation
    caption = out.captions[0]
    assert caption.startswith('{"high_level_description":"A poster') and ", " not in caption.split('"elements"')[0][-3:]
    assert_match((lat, img), run_reference(reference, caption, 64, 160, schedule, seed=3))


@pytest.mark.slow
def test_batch_of_two_prompt_lengths(pipe, reference):
    prompts = ["a cat", "an extremely detailed watercolor painting of a lighthouse on a cliff at dusk, gulls overhead"]
    lengths = [len(pipe.tokenizer(p)["input_ids"]) for p in prompts]
    assert lengths[0] != lengths[1]
    schedule = [7.0, 7.0, 7.0, 3.0]
    noise = torch.randn((2, 4 * 4, 128), generator=torch.Generator().manual_seed(7))
    lat, img, _ = run_ours(pipe, prompts, 64, 64, schedule, [0, 1], latents=noise)
    assert_match((lat, img), run_reference(reference, prompts, 64, 64, schedule, latents=noise))


def test_seed_draws_the_same_noise_as_diffusers_generator(pipe):
    """seed=s on the CPU equals diffusers' generator=torch.Generator('cpu').manual_seed(s) for one image."""
    from diffusers.utils.torch_utils import randn_tensor

    ours = pipe.generate(
        ["x"],
        [123],
        height=64,
        width=64,
        num_inference_steps=1,
        output_type="latent",
        guidance_schedule=[1.0],
        progress=False,
    )
    noise = randn_tensor((1, 16, 128), generator=torch.Generator("cpu").manual_seed(123), dtype=torch.float32)
    again = pipe.generate(
        ["x"],
        None,
        height=64,
        width=64,
        num_inference_steps=1,
        output_type="latent",
        guidance_schedule=[1.0],
        latents=noise,
        progress=False,
    )
    assert torch.equal(ours.latents, again.latents)


@pytest.mark.parametrize("text_lengths", [[9], [9, 17]])
def test_dit_bf16_matches_diffusers_transformer(tiny_original, tiny_diffusers, text_lengths):
    """One DiT pass in bf16 (the dtype the model runs in): same velocities as diffusers' transformer.

    bf16 exposes table-level differences fp32 parity cannot see (e.g. RoPE frequencies computed in
    float64 instead of the reference's float32 moved cos/sin at image positions by one bf16 ulp).
    """
    from pathlib import Path

    from diffusers import Ideogram4Transformer2DModel

    from ideogram4.checkpoints import load_transformer
    from ideogram4.models.transformer import build_layout

    ours, _ = load_transformer(Path(tiny_original) / "transformer", torch.bfloat16, "cpu")
    ref = Ideogram4Transformer2DModel.from_pretrained(tiny_diffusers, subfolder="transformer", dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    B, gh, gw, width = len(text_lengths), 8, 8, max(text_lengths)
    N, F = gh * gw, ours.config.llm_features_dim
    x = torch.randn(B, N, 128, generator=g)
    t = torch.tensor([0.37] * B)
    text = torch.zeros(B, width, F)
    for b, n in enumerate(text_lengths):
        text[b, width - n :] = torch.randn(n, F, generator=g)

    v_ours = ours(x, t, build_layout(ours.config, text_lengths, gh, gw, B, "cpu", torch.bfloat16), text)

    from diffusers import Ideogram4Pipeline as DiffusersPipeline

    position_ids, segment_ids, indicator = DiffusersPipeline._prepare_ids(text_lengths, gh, gw, width, "cpu")
    packed_x = torch.cat([torch.zeros(B, width, 128), x], 1).to(torch.bfloat16)
    packed_text = torch.cat([text, torch.zeros(B, N, F)], 1).to(torch.bfloat16)
    with torch.no_grad():
        v_ref = ref(
            packed_x, t.to(torch.bfloat16), packed_text, position_ids, segment_ids, indicator, return_dict=False
        )[0]
    v_ref = v_ref[:, width:].float()
    diff = (v_ours - v_ref).abs().max().item()
    assert diff <= 2e-3 * v_ref.abs().max().item(), f"bf16 velocities differ by {diff}"


def test_rope_tables_equal_diffusers_at_full_size():
    """Full head_dim 256, image positions up to 2048^2: cos/sin identical to diffusers' MRoPE (fp32)."""
    from diffusers import Ideogram4Pipeline as DiffusersPipeline
    from diffusers.models.transformers.transformer_ideogram4 import Ideogram4MRoPE

    from ideogram4.models.transformer import mrope_tables

    position_ids, _, _ = DiffusersPipeline._prepare_ids([300], 128, 128, 300, "cpu")
    cos_ref, sin_ref = Ideogram4MRoPE(256, 5_000_000, (24, 20, 20))(position_ids)
    cos, sin = mrope_tables(position_ids, 256, 5_000_000.0, (24, 20, 20))
    assert torch.equal(cos, cos_ref) and torch.equal(sin, sin_ref)
