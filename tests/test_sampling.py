"""Schedule, guidance presets, Euler update: checked against the closed form (spec E), not our own code."""

import math
from statistics import NormalDist

import pytest
import torch

from ideogram4 import sampling

# The official presets as stored upstream: loop-index order, index 0 = LAST step.
OFFICIAL_STORED = {
    "quality_48": (3.0,) * 3 + (7.0,) * 45,
    "default_20": (3.0,) * 2 + (7.0,) * 18,
    "turbo_12": (3.0,) * 1 + (7.0,) * 11,
}


def closed_form(steps, height, width, mu, std):
    mean = mu + 0.5 * math.log(height * width / 512**2)
    t_min, t_max = 1 / (1 + math.exp(9.0)), 1 / (1 + math.exp(-7.5))
    out = []
    for i in range(steps, -1, -1):  # u = 1 (noise) ... 0 (data)
        u = i / steps
        if u == 1.0:
            t = 0.0
        elif u == 0.0:
            t = 1.0
        else:
            t = 1 - 1 / (1 + math.exp(-(mean + std * NormalDist().inv_cdf(u))))
        out.append(min(max(t, t_min), t_max))
    return out


@pytest.mark.parametrize(
    "size, first, last_two",
    [
        (1024, [0.000123, 0.023013, 0.035894, 0.047683], [0.870383, 0.913892]),
        (2048, [0.000123, 0.011641, 0.018275], [0.770512, 0.841437]),
    ],
)
def test_schedule_equals_closed_form(size, first, last_two):
    t = sampling.timesteps(48, size, size, mu=0.0, std=1.5, final_step="official")
    expected = closed_form(48, size, size, 0.0, 1.5)
    assert t.dtype == torch.float32 and t.shape == (49,)
    assert torch.allclose(t.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)
    # the reference values quoted in the spec (E.1)
    assert t[: len(first)].tolist() == pytest.approx(first, abs=1e-6)
    assert t[-3:-1].tolist() == pytest.approx(last_two, abs=1e-6)
    assert t[-1].item() == pytest.approx(0.999447221, abs=1e-7)
    assert bool((t[1:] > t[:-1]).all()), "time must increase monotonically from noise to data"


def test_final_step_clean_lands_on_one_and_changes_nothing_else():
    official = sampling.timesteps(20, 1024, 768, final_step="official")
    clean = sampling.timesteps(20, 1024, 768, final_step="clean")
    assert clean[-1].item() == 1.0
    assert torch.equal(official[:-1], clean[:-1])


@pytest.mark.parametrize("name", sorted(OFFICIAL_STORED))
def test_presets_are_the_official_tuples_reversed(name):
    preset = sampling.PRESETS[name]
    stored = OFFICIAL_STORED[name]
    assert len(stored) == preset.steps
    assert preset.guidance_schedule == sampling.from_official_order(stored)
    assert preset.guidance_schedule[0] == 7.0 and preset.guidance_schedule[-1] == 3.0  # chronological: polish last


def test_quality_48_is_45_at_7_then_3_at_3():
    assert sampling.official_guidance_schedule(48, 7.0, 3, 3.0) == [7.0] * 45 + [3.0] * 3


def test_guidance_and_euler_step():
    v_c, v_u = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 1.0])
    assert torch.equal(sampling.guide(v_c, v_u, 7.0), v_u + 7.0 * (v_c - v_u))
    z = torch.tensor([0.5, 0.5])
    assert torch.allclose(sampling.euler_step(z, v_c, 0.25, 0.5), z + 0.25 * v_c)


def test_img2img_respaces_inside_strength():
    t = sampling.timesteps(8, 512, 512, denoising_strength=0.5)
    full = sampling.logit_normal_times(torch.tensor([0.5]), sampling.schedule_mean(512, 512, 0.0), 1.5)
    assert t.shape == (9,) and t[0].item() == pytest.approx(full.item(), abs=1e-6)
    assert t[-1].item() == pytest.approx(sampling.T_MAX, abs=1e-7)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(steps=0), "steps"),
        (dict(steps=4, final_step="end"), "final_step"),
        (dict(steps=4, denoising_strength=0.0), "denoising_strength"),
    ],
)
def test_bad_sampler_settings_name_the_field(kwargs, field):
    steps = kwargs.pop("steps")
    with pytest.raises(ValueError, match=field):
        sampling.timesteps(steps, 512, 512, **kwargs)


def test_img2img_at_strength_one_starts_from_the_noise():
    """At strength 1 the first time is t_min: z = t_min * x0 + (1 - t_min) * noise, the input image weighs 1e-4."""
    t = sampling.timesteps(4, 512, 512, denoising_strength=1.0)
    assert t[0].item() == pytest.approx(sampling.T_MIN, rel=1e-6)
    g = torch.Generator().manual_seed(0)
    x0, noise = 3 * torch.randn(2, 16, 128, generator=g), torch.randn(2, 16, 128, generator=g)
    start = sampling.noise_to(x0, noise, t[0])
    assert (start - noise).abs().max().item() <= 2 * sampling.T_MIN * (x0 - noise).abs().max().item()


def test_make_noise_is_per_seed_and_matches_a_seeded_generator():
    batch = sampling.make_noise([5, 7], 16)
    assert batch.shape == (2, 16, 128) and batch.dtype == torch.float32
    assert torch.equal(batch[1:], sampling.make_noise([7], 16))  # an image's noise ignores its batch place
    assert torch.equal(batch[0], torch.randn(16, 128, generator=torch.Generator().manual_seed(5)))


def test_denoise_follows_a_straight_path_exactly():
    """v = x0 - noise is the exact velocity of z_t = t x0 + (1 - t) noise: Euler lands on x0 at t = 1."""
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 16, 128, generator=g), torch.randn(2, 16, 128, generator=g)
    times = sampling.timesteps(6, 512, 512, final_step="clean")
    seen = []

    def velocity(z, t):
        assert t.shape == (2,)
        return x0 - noise

    z = sampling.denoise(
        velocity,
        sampling.noise_to(x0, noise, times[0]),
        times,
        [1.0] * 6,
        step_callback=lambda i, n: seen.append((i, n)),
    )
    torch.testing.assert_close(z, x0, atol=1e-5, rtol=0)
    assert seen == [(i, 6) for i in range(6)]


def test_denoise_guides_and_skips_the_unconditional_pass_at_weight_one():
    times = torch.tensor([0.25, 0.5, 0.75])
    a, b = torch.full((1, 4, 128), 2.0), torch.full((1, 4, 128), -1.0)
    calls = []

    def uncond(z, t):
        calls.append(float(t[0]))
        return b

    z = sampling.denoise(lambda z, t: a, torch.zeros(1, 4, 128), times, [7.0, 1.0], uncond)
    assert calls == [0.25]  # step 2 has weight 1: v_uncond would be multiplied by 0
    torch.testing.assert_close(z, 0.25 * (7 * a - 6 * b) + 0.25 * a)
    with pytest.raises(ValueError, match=r"times has shape \(3,\) for 3 steps: expected \(4,\)"):
        sampling.denoise(lambda z, t: a, torch.zeros(1, 4, 128), times, [7.0] * 3)


def test_denoise_moves_the_times_to_the_device_once_and_marks_each_step(monkeypatch):
    """No step waits on a host-to-device copy: the timesteps cross once, before the loop (every step's
    t is a view of that one tensor); `step_begin` (CUDA graphs' step mark) runs at the top of each step."""
    times = sampling.timesteps(4, 64, 64)
    seen, events = [], []
    copies = []
    real_to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        copies.append(self.shape)
        return real_to(self, *args, **kwargs)

    def velocity(z, t):
        events.append("pass")
        seen.append(t)
        return torch.zeros_like(z)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    z = torch.randn(2, 4, 128)
    sampling.denoise(velocity, z, times, [7.0] * 4, velocity, step_begin=lambda: events.append("mark"))
    monkeypatch.undo()
    assert copies == [times.shape]
    assert len({t.untyped_storage().data_ptr() for t in seen}) == 1
    assert [float(t[0]) for t in seen[::2]] == times[:-1].tolist() and all(t.shape == (2,) for t in seen)
    assert events == ["mark", "pass", "pass"] * 4
