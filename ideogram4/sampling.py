"""Sampling as plain functions: schedule, noise, guidance, Euler step, img2img start, masked and
per-position blending, the denoising loop.

Model time t: 0 = pure noise, 1 = clean data. The model predicts v = dz/dt = x0 - noise for
z_t = t * x0 + (1 - t) * noise. All schedules here are chronological (index 0 = first, noisiest step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .spec import (  # noqa: F401  (re-exported: the sampling API users know)
    FINAL_STEPS,
    LATENT_CHANNELS,
    PRESETS,
    T_MAX,
    T_MIN,
    SamplerPreset,
    from_official_order,
    official_guidance_schedule,
)


def schedule_mean(height: int, width: int, mu: float) -> float:
    """The schedule shifts toward noise as resolution grows: mu + 0.5 ln(HW / 512^2)."""
    return mu + 0.5 * math.log(height * width / (512.0 * 512.0))


def logit_normal_times(u: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """schedule(u) = clamp(1 - expit(mean + std * ndtri(u)), t_min, t_max), float64."""
    u = u.to(torch.float64)
    t = 1.0 - torch.special.expit(mean + std * torch.special.ndtri(u))
    return t.clamp(T_MIN, T_MAX)


def schedule_positions(steps: int, denoising_strength: float = 1.0) -> torch.Tensor:
    """u of each of the steps + 1 times, float64, from `denoising_strength` down to 0 (t = schedule(u)).

    u is also each time's strength: img2img at strength s starts at u = s, and a position of a strength
    map with strength s joins the denoising at the first time whose u is at most s.
    """
    if not 0.0 < denoising_strength <= 1.0:
        raise ValueError(f"denoising_strength={denoising_strength}: must be in (0, 1]")
    return torch.linspace(0.0, denoising_strength, steps + 1, dtype=torch.float64).flip(0)


def timesteps(
    steps: int,
    height: int,
    width: int,
    mu: float = 0.0,
    std: float = 1.5,
    final_step: str = "official",
    denoising_strength: float = 1.0,
) -> torch.Tensor:
    """The steps + 1 model times visited, chronological, float32.

    `final_step="official"` ends at t_max (the official sampler); "clean" ends at t = 1 (diffusers,
    DiffSynth). With `denoising_strength` < 1 the steps are re-spaced inside u in [0, strength] (DiffSynth
    img2img), so the first time is schedule(strength) rather than a truncated full schedule.
    """
    if steps < 1:
        raise ValueError(f"steps={steps}: need at least 1 step")
    if final_step not in FINAL_STEPS:
        raise ValueError(f"final_step={final_step!r}: use one of {FINAL_STEPS}")
    t = logit_normal_times(schedule_positions(steps, denoising_strength), schedule_mean(height, width, mu), std)
    if final_step == "clean":
        t[-1] = 1.0
    return t.to(torch.float32)


def guide(v_cond: torch.Tensor, v_uncond: torch.Tensor | None, weight: float) -> torch.Tensor:
    """v = w * v_cond + (1 - w) * v_uncond, in fp32. Without an unconditional branch: v_cond."""
    if v_uncond is None:
        return v_cond.float()
    return weight * v_cond.float() + (1.0 - weight) * v_uncond.float()


def euler_step(z: torch.Tensor, v: torch.Tensor, t: float | torch.Tensor, t_next: float | torch.Tensor) -> torch.Tensor:
    return z + (t_next - t) * v


def noise_to(x0: torch.Tensor, noise: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """z_t for img2img: (1 - sigma) x0 + sigma noise with sigma = 1 - t."""
    return t * x0 + (1.0 - t) * noise


def input_at(x0: torch.Tensor, noise: torch.Tensor, times: torch.Tensor, index: int) -> torch.Tensor:
    """The input's latents at times[index], where an edit keeps them: noised exactly as img2img noises
    its start (`noise_to`, the same noise), and the clean x0 after the last step, so that the kept
    region ends on the input's latents bit for bit (diffusers' inpainting pipelines do the same)."""
    return x0 if index == len(times) - 1 else noise_to(x0, noise, float(times[index]))


def blend(z: torch.Tensor, known: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """free * z + (1 - free) * known: free = 1 keeps the sample, 0 takes `known`; exact at 0 and 1."""
    return z * free + known * (1.0 - free)


def join_weights(strengths: torch.Tensor, position: float) -> torch.Tensor:
    """Differential Diffusion: 1 where a position takes part at schedule position u (its strength s >= u,
    and s > 0: strength 0 never changes), else 0; float32."""
    return ((strengths >= position) & (strengths > 0)).to(torch.float32)


Blend = Callable[[int, torch.Tensor], torch.Tensor]  # (index into times, z at that time) -> z with the edit imposed


def edit_blend(
    x0: torch.Tensor, noise: torch.Tensor, times: torch.Tensor, weights: torch.Tensor, per_position_strength: bool
) -> Blend:
    """The masked-editing step: z at times[index] -> z with the input's latents (`input_at`) where kept.

    `weights` (B, N, 128) are repaint weights in [0, 1] (a mask, feathered: a fixed blend), or with
    `per_position_strength` each position's strength, turned into 0/1 per time by `join_weights` against
    the schedule positions of these times (`schedule_positions` at the largest strength).
    """
    positions = schedule_positions(len(times) - 1, float(weights.max())) if per_position_strength else None
    fixed = None if per_position_strength else weights.to(torch.float32)

    def apply(index: int, z: torch.Tensor) -> torch.Tensor:
        free = join_weights(weights, float(positions[index])) if per_position_strength else fixed
        return blend(z, input_at(x0, noise, times, index), free)

    return apply


def make_noise(seeds: Sequence[int], num_tokens: int, rand_device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, num_tokens, 128) standard normal float32 on `rand_device`, one generator per seed.

    Each image's noise depends on its seed alone (not on its place in the batch), and CPU noise is
    the same on every machine: a seed names one image wherever it runs.
    """
    return torch.cat(
        [
            torch.randn(
                (1, num_tokens, LATENT_CHANNELS),
                generator=torch.Generator(rand_device).manual_seed(seed),
                device=rand_device,
                dtype=torch.float32,
            )
            for seed in seeds
        ]
    )


Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z (B, N, 128), t (B,)) -> v (B, N, 128) fp32


def denoise(
    velocity: Velocity,
    z: torch.Tensor,
    times: torch.Tensor,
    guidance_schedule: Sequence[float],
    uncond_velocity: Velocity | None = None,
    step_callback: Callable[[int, int], None] | None = None,
    progress: bool = False,
    edit: Blend | None = None,
    step_begin: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Euler from times[0] to times[-1]: z (B, N, 128) float32 -> the sample, float32.

    Step i uses guidance weight guidance_schedule[i]; a weight of 1 skips the unconditional pass
    (its velocity would be multiplied by 0), as does `uncond_velocity=None`. With `edit` (see
    `edit_blend`), the z reached by step i is passed through edit(i + 1, z). `step_begin` runs first
    in every step (CUDA graphs: `torch.compiler.cudagraph_mark_step_begin`). The times reach the
    device once, before the loop: no step waits on a host-to-device copy.
    """
    from tqdm.auto import tqdm

    steps = len(guidance_schedule)
    if times.shape != (steps + 1,):
        raise ValueError(f"times has shape {tuple(times.shape)} for {steps} steps: expected ({steps + 1},)")
    batch = z.shape[0]
    times_on_device = times.to(z.device, non_blocking=True)  # `times` outlives the copy
    for i in tqdm(range(steps), desc="sampling", disable=not progress, leave=False):
        if step_begin is not None:
            step_begin()
        t, t_next = times[i], times[i + 1]  # CPU values: float() reads them without a device sync
        t_batch = times_on_device[i].expand(batch)
        v = velocity(z, t_batch)
        w = guidance_schedule[i]
        if w != 1.0 and uncond_velocity is not None:
            v = guide(v, uncond_velocity(z, t_batch), w)
        z = euler_step(z, v, float(t), float(t_next))
        if edit is not None:
            z = edit(i + 1, z)
        if step_callback is not None:
            step_callback(i, steps)
    return z


def counted(cond: Velocity, uncond: Velocity) -> tuple[Velocity, Velocity, dict[str, int]]:
    """The two branches, each counting its calls in the returned {"conditional": n, "unconditional": m}
    (a call serves the whole batch): what a sampling run cost, as the cost record and tests read it."""
    passes = {"conditional": 0, "unconditional": 0}

    def counting(velocity: Velocity, branch: str) -> Velocity:
        def call(z, t):
            passes[branch] += 1
            return velocity(z, t)

        return call

    return counting(cond, "conditional"), counting(uncond, "unconditional"), passes
