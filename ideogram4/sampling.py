"""Sampling as plain functions: schedule, guidance schedule, guidance, Euler step, img2img start.

Model time t: 0 = pure noise, 1 = clean data. The model predicts v = dz/dt = x0 - noise for
z_t = t * x0 + (1 - t) * noise. All schedules here are chronological (index 0 = first, noisiest step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOGSNR_MIN, LOGSNR_MAX = -15.0, 18.0
T_MIN = 1.0 / (1.0 + math.exp(0.5 * LOGSNR_MAX))  # 1.2339e-4, where sampling starts
T_MAX = 1.0 / (1.0 + math.exp(0.5 * LOGSNR_MIN))  # 0.999447, where the official sampler stops
FINAL_STEPS = ("official", "clean")


@dataclass(frozen=True)
class SamplerPreset:
    steps: int
    cfg: float
    polish_steps: int
    polish_cfg: float
    mu: float
    std: float

    @property
    def guidance_schedule(self) -> list[float]:
        return official_guidance_schedule(self.steps, self.cfg, self.polish_steps, self.polish_cfg)


# The official presets store guidance last-step-first; these fields describe them chronologically
# (see `from_official_order`, tested against the stored tuples).
PRESETS: dict[str, SamplerPreset] = {
    "quality_48": SamplerPreset(48, 7.0, 3, 3.0, 0.0, 1.5),
    "default_20": SamplerPreset(20, 7.0, 2, 3.0, 0.0, 1.75),
    "turbo_12": SamplerPreset(12, 7.0, 1, 3.0, 0.5, 1.75),
}


def official_guidance_schedule(steps: int, cfg: float, polish_steps: int = 0, polish_cfg: float = 3.0) -> list[float]:
    """(steps - polish_steps) x cfg, then polish_steps x polish_cfg, in chronological order."""
    if steps < 1:
        raise ValueError(f"steps={steps}: need at least 1 step")
    if not 0 <= polish_steps <= steps:
        raise ValueError(f"polish_steps={polish_steps} must be between 0 and steps={steps}")
    return [float(cfg)] * (steps - polish_steps) + [float(polish_cfg)] * polish_steps


def from_official_order(stored: tuple[float, ...] | list[float]) -> list[float]:
    """The official presets index the guidance by loop index, which counts down: index 0 is the last step."""
    return [float(w) for w in reversed(stored)]


def schedule_mean(height: int, width: int, mu: float) -> float:
    """The schedule shifts toward noise as resolution grows: mu + 0.5 ln(HW / 512^2)."""
    return mu + 0.5 * math.log(height * width / (512.0 * 512.0))


def logit_normal_times(u: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """schedule(u) = clamp(1 - expit(mean + std * ndtri(u)), t_min, t_max), float64."""
    u = u.to(torch.float64)
    t = 1.0 - torch.special.expit(mean + std * torch.special.ndtri(u))
    return t.clamp(T_MIN, T_MAX)


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
    if not 0.0 < denoising_strength <= 1.0:
        raise ValueError(f"denoising_strength={denoising_strength}: must be in (0, 1]")
    u = torch.linspace(0.0, denoising_strength, steps + 1, dtype=torch.float64).flip(0)
    t = logit_normal_times(u, schedule_mean(height, width, mu), std)
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
