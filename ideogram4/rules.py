"""The value rules shared by the Python API and the runner, each defined once, here.

Each rule returns a list of findings (`ArgumentError`: argument name, value, what is wrong, fix), empty
when the value is fine; a wrong kind of value is an `ArgumentTypeError` (also a TypeError). Names are
the API's (`generate` / `from_pretrained` keywords); limits and options come from `spec`. The pipeline
raises the first finding (`ideogram4.checks`); the runner collects them all and names its config keys
through one table (`experiment/config/problems.API_TO_CONFIG`). No torch here.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from .errors import ArgumentError, ArgumentTypeError
from .spec import (
    COMPILE_AUTO,
    COMPILE_MODES,
    CUDA_GRAPH_COMPILE_MODES,
    DTYPES,
    MAX_ASPECT,
    MAX_SEED,
    MAX_STEPS,
    MAX_TEXT_TOKENS,
    TOKEN_PIXELS,
)

Findings = list[ArgumentError]

# a LoRA's name goes into file names, manifest records and W&B keys: no spaces, slashes or leading dots
_LORA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def raise_first(findings: Findings) -> None:
    if findings:
        raise findings[0]


def _kind(value: Any) -> str:
    return f"is a {type(value).__name__}"


def is_int(value: Any) -> bool:
    """An int, not a bool (a typo in a sweep must not become 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def flag_problems(name: str, value: Any) -> Findings:
    return [] if isinstance(value, bool) else [ArgumentTypeError(name, value, _kind(value), "pass True or False")]


def choice_problems(name: str, value: Any, choices: tuple[str, ...], what: str = "is not an option") -> Findings:
    return [] if value in choices else [ArgumentError(name, value, what, f"use one of {', '.join(map(repr, choices))}")]


def number_problems(name: str, value: Any, example: float, *, positive: bool = False) -> Findings:
    """A finite real number (bools and strings refused), > 0 where `positive`."""
    if not is_real(value):
        return [ArgumentTypeError(name, value, _kind(value), f"pass a number, e.g. {name}={example}")]
    value = float(value)
    if not math.isfinite(value):
        return [ArgumentError(name, value, "is not finite", f"pass a finite number, e.g. {name}={example}")]
    if positive and value <= 0:
        return [ArgumentError(name, value, "must be > 0", f"e.g. {name}={example}")]
    return []


def int_problems(name: str, value: Any, low: int, high: int | None, example: int) -> Findings:
    """An int in low..high (no upper bound where `high` is None)."""
    if not is_int(value):
        return [ArgumentTypeError(name, value, _kind(value), f"pass an int, e.g. {name}={example}")]
    if high is None and value < low:
        return [ArgumentError(name, value, f"must be at least {low}", f"e.g. {name}={example}")]
    if high is not None and not low <= value <= high:
        return [ArgumentError(name, value, f"is outside {low}..{high}", f"e.g. {name}={example}")]
    return []


def seed_problems(name: str, value: Any) -> Findings:
    """A seed in 0..MAX_SEED (torch.Generator.manual_seed takes a signed 64-bit value)."""
    if is_int(value) and not 0 <= value <= MAX_SEED:
        return [ArgumentError(name, value, "is outside 0..2**63-1 (a signed 64-bit generator seed)", f"e.g. {name}=42")]
    return int_problems(name, value, 0, MAX_SEED, 42)


def steps_problems(steps: Any) -> Findings:
    return int_problems("num_inference_steps", steps, 1, MAX_STEPS, 48)


def token_limit_problems(name: str, value: Any) -> Findings:
    """A text token budget: the model reads at most MAX_TEXT_TOKENS (chat template included)."""
    return int_problems(name, value, 1, MAX_TEXT_TOKENS, MAX_TEXT_TOKENS)


def side_problems(name: str, value: Any, low: int | None = None, high: int | None = None) -> Findings:
    """An image side: a positive multiple of TOKEN_PIXELS, within low..high where given."""
    if not is_int(value):
        fix = f"pass an int multiple of {TOKEN_PIXELS}, e.g. 1024"
        return [ArgumentTypeError(name, value, _kind(value), fix)]
    if value <= 0:
        return [ArgumentError(name, value, "must be positive", f"use a multiple of {TOKEN_PIXELS}, e.g. {name}=1024")]
    out = multiple_problems(name, value, low, high, f" (one token is {TOKEN_PIXELS}x{TOKEN_PIXELS} pixels)")
    if low is not None and high is not None and not low <= value <= high:
        out.append(ArgumentError(name, value, f"is outside {low}..{high}", f"pick a value in {low}..{high}"))
    return out


def multiple_problems(
    name: str, value: int, low: int | None = None, high: int | None = None, why: str = ""
) -> Findings:
    """A pixel count the token grid can hold: a multiple of TOKEN_PIXELS; the fix names the nearest one."""
    if not value % TOKEN_PIXELS:
        return []
    near = max(low or TOKEN_PIXELS, round(value / TOKEN_PIXELS) * TOKEN_PIXELS)
    near = min(near, high) if high is not None else near
    return [ArgumentError(name, value, f"is not a multiple of {TOKEN_PIXELS}{why}", f"use {near}")]


def aspect_problems(height: int, width: int) -> Findings:
    """At most MAX_ASPECT:1 (what the model was trained for); sides already checked elsewhere."""
    if not (is_int(height) and is_int(width) and height > 0 and width > 0):
        return []
    aspect = max(height, width) / min(height, width)
    if aspect <= MAX_ASPECT + 1e-9:
        return []
    what = f"has aspect ratio {aspect:.2f}:1, beyond {MAX_ASPECT:g}:1"
    fix = f"bring width/height within {MAX_ASPECT:g}:1 (e.g. 2016x336)"
    return [ArgumentError("width x height", f"{width}x{height}", what, fix)]


def resolution_problems(height: Any, width: Any, low: int, high: int) -> Findings:
    """An image size the model supports: each side in low..high (its DiT config's range) and a multiple of
    TOKEN_PIXELS, the aspect at most MAX_ASPECT:1."""
    sides = side_problems("height", height, low, high) + side_problems("width", width, low, high)
    return sides + aspect_problems(height, width)


def schedule_problems(steps: Any, guidance_schedule: Any, cfg_scale: Any) -> Findings:
    """Steps, cfg_scale (checked even when a schedule overrides it) and one finite weight per step."""
    out = steps_problems(steps) + number_problems("cfg_scale", cfg_scale, 7.0)
    if guidance_schedule is None:
        return out
    if not isinstance(guidance_schedule, (list, tuple)):
        fix = "pass a list of floats, one per step (or None)"
        return out + [ArgumentTypeError("guidance_schedule", guidance_schedule, "", fix)]
    if is_int(steps) and len(guidance_schedule) != steps:
        what = f"has {len(guidance_schedule)} entries for num_inference_steps={steps}"
        out.append(ArgumentError("guidance_schedule", guidance_schedule, what, "give one per step", show_value=False))
    for i, weight in enumerate(guidance_schedule):
        out += number_problems(f"guidance_schedule[{i}]", weight, 7.0)
    return out


def polish_problems(polish_steps: Any, steps: Any) -> Findings:
    """An official schedule's polish steps (the last ones, at the polish weight): 0..steps-1, so at least one
    step runs at the main weight. Steps that are not a count are the steps' own finding."""
    if not is_int(polish_steps) or not is_int(steps) or steps < 1:
        return int_problems("polish_steps", polish_steps, 0, None, 0)
    if 0 <= polish_steps < steps:
        return []
    what = f"must be in 0..{steps - 1} for num_inference_steps={steps}"
    return [ArgumentError("polish_steps", polish_steps, what, f"e.g. polish_steps={min(steps - 1, 1)} (0: none)")]


def lora_name_problems(name: str, value: Any) -> Findings:
    """A LoRA's name: letters, digits, '_', '-' and '.', not starting with a punctuation mark."""
    if not isinstance(value, str):
        return [ArgumentTypeError(name, value, _kind(value), f"pass a string, e.g. {name}='style'")]
    if _LORA_NAME.fullmatch(value):
        return []
    return [ArgumentError(name, value, "is not a usable name for a LoRA", "use letters, digits, '_', '-' or '.'")]


def strength_problems(strength: Any, img2img: bool, edit: bool = False) -> Findings:
    """denoising_strength in (0, 1]; below 1 only with an input image; 1 with one only for a masked edit."""
    out = number_problems("denoising_strength", strength, 0.6)
    if out:
        return out
    name, strength = "denoising_strength", float(strength)
    if not 0.0 < strength <= 1.0:
        out.append(ArgumentError(name, strength, "must be in (0, 1]", "1.0 = text-to-image, e.g. 0.6 with input_image"))
    if not img2img and strength != 1.0:
        out.append(ArgumentError(name, strength, "needs an input_image", "without one, leave it at 1.0"))
    if img2img and strength == 1.0 and not edit:  # an edit keeps the rest of the image at any strength
        what = "starts from pure noise and would ignore it"
        out.append(ArgumentError(name, strength, what, "lower denoising_strength (e.g. 0.6), or drop input_image"))
    return out


def dtype_problems(name: str, value: Any) -> Findings:
    """A dtype by name (the runner's form; `from_pretrained` also takes torch dtypes, checked there)."""
    return choice_problems(name, value, DTYPES, "is not a supported dtype")


def compile_problems(
    compile_blocks: Any, compile_mode: Any, device: Any = None, offload_transformers: bool = False
) -> Findings:
    """compile_blocks: "auto" (inductor on CUDA), True (inductor), False or a backend name; compile_mode
    only with inductor; a CUDA-graph mode not with offloaded (streamed) transformers. `device` None: not
    known yet (the runner's "auto"), so "auto" is taken as compiling."""
    if not isinstance(compile_blocks, (bool, str)) or compile_blocks == "":
        fix = "pass 'auto' (inductor on CUDA), True (inductor), False, or a torch.compile backend"
        return [ArgumentTypeError("compile_blocks", compile_blocks, "", fix)]
    if compile_mode is None:
        return []
    out = choice_problems("compile_mode", compile_mode, COMPILE_MODES)
    if out:
        return out
    if compile_blocks == COMPILE_AUTO and device is not None and not str(device).startswith("cuda"):
        what = f"with compile_blocks='auto' on {device}: 'auto' compiles on CUDA only"
        out.append(
            ArgumentError("compile_mode", compile_mode, what, "pass compile_blocks=True to compile here, or drop it")
        )
    elif compile_blocks not in (True, "inductor", COMPILE_AUTO):
        what = f"is an inductor mode but compile_blocks={compile_blocks!r}"
        out.append(ArgumentError("compile_mode", compile_mode, what, "pass compile_blocks=True (inductor), or drop it"))
    elif compile_mode in CUDA_GRAPH_COMPILE_MODES and offload_transformers:
        what = "replays CUDA graphs, which need the DiT weights at fixed GPU addresses, but offloaded transformers stream in"
        out.append(
            ArgumentError(
                "compile_mode", compile_mode, what, "drop one: compile_mode='default', or no transformer offload"
            )
        )
    return out
