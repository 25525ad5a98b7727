"""Argument checks for `from_pretrained` and `generate`, run before any file is read or model runs.

Each bad value raises TypeError (wrong kind of thing) or ValueError (right kind, bad value) whose
message names the argument, the value and a fix. The value rules themselves live once in `rules`
(problem-collecting, API names, limits from `spec`); this module raises their first finding, an
`ArgumentError` that keeps the parts so the runner can name its own config key instead of the argument
(one table, `experiment/config/problems.API_TO_CONFIG`). Importing this module loads no torch: the
runner's validation calls the same rules.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .arguments import check_choice, check_flag, check_number, check_seed, open_images
from .edit_checks import check_edit_args, open_edit
from .errors import ArgumentError, NoGpu
from .prompts import serialize_caption
from .rules import compile_problems, raise_first, resolution_problems, schedule_problems, strength_problems
from .spec import (
    COMPILE_AUTO,
    CUDA_GRAPH_COMPILE_MODES,
    DTYPES,
    FINAL_STEPS,
    FP8_MODE_OPTIONS,
    LATENT_CHANNELS,
    OUTPUT_TYPES,
    RAND_DEVICES,
    TOKEN_PIXELS,
)

if TYPE_CHECKING:
    import torch

_DEVICE_RE = re.compile(r"(cpu|cuda|auto|mps)(:\d+)?")


def check_resolution(height: Any, width: Any, sides: tuple[int, int]) -> tuple[int, int]:
    """height x width within the model's side range (`sides`: its DiT config's), multiples of the token
    size, aspect at most MAX_ASPECT: every finding collected, the first raised."""
    raise_first(resolution_problems(height, width, *sides))
    return int(height), int(width)


def cuda_visible() -> bool:
    """Whether a CUDA GPU can be used: torch's answer once torch is loaded; before that a driver check
    that imports nothing (config validation runs in well under a second, before torch loads)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if "torch" in sys.modules:
        return sys.modules["torch"].cuda.is_available()
    return os.path.exists("/proc/driver/nvidia/version") or bool(glob.glob("/dev/nvidia[0-9]*"))


def check_device(name: str, device: Any, choices: tuple[str, ...] = ("cpu", "cuda"), *, auto: bool = False) -> str:
    """'cpu', 'cuda' or 'cuda:N' (a torch.device too; 'auto' where `auto`, resolved here); CUDA only where
    a GPU is visible. The one device rule, for the API and the runner."""
    text = str(device) if type(device).__name__ == "device" else device
    match = _DEVICE_RE.fullmatch(text) if isinstance(text, str) else None
    allowed = ", ".join(map(repr, choices + (("auto",) if auto else ())))
    if match is None:
        raise ArgumentError(name, device, "is not a device", f"use one of {allowed} (or 'cuda:N')")
    kind = match.group(1)
    if kind == "mps":
        raise ArgumentError(name, device, "is an Apple GPU, not supported (no fp8/bf16 kernels)", "use 'cpu' or 'cuda'")
    if kind == "auto" and auto:
        return "cuda" if cuda_visible() else "cpu"
    if kind not in choices:
        raise ArgumentError(name, device, "is not an option here", f"use one of {allowed}")
    if kind == "cuda" and not cuda_visible():
        raise NoGpu(name, text, "but this machine has no CUDA GPU", f"use {name}='cpu' (e.g. the tiny model on CPU)")
    return text


# --- from_pretrained ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadOptions:
    """`from_pretrained`'s options once checked (field names = its keyword arguments)."""

    torch_dtype: torch.dtype
    device: str
    fp8_mode: str  # spec.FP8_MODE_OPTIONS; "auto" is resolved at load time (loading.choose_fp8_mode)
    load_unconditional: bool
    offload_text_encoder: bool
    offload_transformers: bool
    vae_tiling: bool
    compile_blocks: str | None  # the torch.compile backend, None = eager ("auto" already resolved)
    compile_mode: str | None  # an inductor mode (spec.COMPILE_MODES), None = torch's default
    fp8_fast_accum: bool = False  # cuBLAS fast accumulation in fp8 matmuls

    @property
    def cuda_graphs(self) -> bool:
        """CUDA graphs replay the compiled DiT (whole-model compile, text buckets, a step mark per step)."""
        return self.compile_blocks == "inductor" and self.compile_mode in CUDA_GRAPH_COMPILE_MODES


def check_source(source: Any, model_configs: Any, tokenizer_config: Any, revision: Any, tokenizer_source: Any):
    from .checkpoints import ModelConfig

    if source is None and model_configs is None:
        raise ValueError(
            "pass a source (folder or repo id), model_configs=[ModelConfig(...), ...], or both "
            "(each config then replaces its component of the source)"
        )
    if source is not None and not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source={source!r}: pass a folder path or a hub repo id such as 'ideogram-ai/ideogram-4-fp8'")
    configs_ok = isinstance(model_configs, (list, tuple)) and all(isinstance(m, ModelConfig) for m in model_configs)
    if model_configs is not None and not configs_ok:
        raise TypeError(f"model_configs={model_configs!r}: pass a list of ModelConfig(model_id=..., ...) or (path=...)")
    if tokenizer_config is not None and not isinstance(tokenizer_config, ModelConfig):
        raise TypeError(
            f"tokenizer_config={tokenizer_config!r}: pass ModelConfig(model_id=..., origin_file_pattern=...)"
        )
    for name, value in (("revision", revision), ("tokenizer_source", tokenizer_source)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{name}={value!r}: pass a string (or None)")


def check_load_options(
    torch_dtype: Any, device: Any, fp8_mode: Any, compile_blocks: Any, compile_mode: Any, **flags: Any
) -> LoadOptions:
    import torch

    from .models.quant import fp8_matmul_supported

    if isinstance(torch_dtype, str) and torch_dtype in DTYPES:
        torch_dtype = getattr(torch, torch_dtype)
    if not isinstance(torch_dtype, torch.dtype) or str(torch_dtype).replace("torch.", "") not in DTYPES:
        raise ValueError(f"torch_dtype={torch_dtype!r}: use one of {', '.join(f'torch.{d}' for d in DTYPES)}")
    device = check_device("device", device)
    check_choice("fp8_mode", fp8_mode, FP8_MODE_OPTIONS)
    if fp8_mode == "fp8_matmul" and not fp8_matmul_supported(device):
        raise ValueError(
            f"fp8_mode='fp8_matmul' needs fp8 tensor cores (compute capability >= 8.9: Ada, Hopper); "
            f"{device} has none: use fp8_mode='dequantize_once' (fastest) or 'dequantize_per_call'"
        )
    raise_first(compile_problems(compile_blocks, compile_mode, device, flags.get("offload_transformers", False)))
    if compile_blocks == COMPILE_AUTO:
        compile_blocks = torch.device(device).type == "cuda"
    backend = ("inductor" if compile_blocks is True else compile_blocks) or None
    flags = {name: check_flag(name, value) for name, value in flags.items()}
    return LoadOptions(torch_dtype, device, fp8_mode, compile_blocks=backend, compile_mode=compile_mode, **flags)


# --- generate -----------------------------------------------------------------------------------


@dataclass
class Request:
    """`generate`'s arguments once checked: one entry per image in every list."""

    captions: list[str]  # exactly what the text encoder reads
    negatives: list[str]  # "" = no negative prompt for that image
    seeds: list[int]
    height: int
    width: int
    guidance_schedule: list[float]  # chronological, one weight per step
    mu: float
    std: float
    final_step: str
    input_images: list | None  # PIL images of exactly width x height (outpaint: on the canvas), or None
    denoising_strength: float  # the schedule's (a strength map: its largest strength)
    rand_device: str
    latents: torch.Tensor | None  # (B, N, 128)
    output_type: str
    progress: bool
    step_callback: Callable[[int, int], None] | None
    edit: Any = None  # masks.EditPlan for a masked edit, else None

    @property
    def batch(self) -> int:
        return len(self.captions)

    @property
    def steps(self) -> int:
        return len(self.guidance_schedule)

    @property
    def grid(self) -> tuple[int, int]:
        return self.height // TOKEN_PIXELS, self.width // TOKEN_PIXELS


def check_prompts(name: str, prompts: Any, batch: int | None = None) -> list[str]:
    """Captions as the text encoder reads them: a mapping serialised, a string verbatim."""
    if isinstance(prompts, (str, Mapping)):
        raise TypeError(f"{name} is a single {type(prompts).__name__}: pass a list, e.g. {name}=[prompt]")
    if not isinstance(prompts, (list, tuple)):
        raise TypeError(f"{name}={prompts!r}: pass a list of prompts (strings or caption mappings)")
    if not prompts:
        raise ValueError(f"{name} is empty: pass at least one prompt")
    if batch is not None and len(prompts) != batch:
        raise ValueError(f"{name} has {len(prompts)} entries for {batch} prompts: give one per prompt, or one string")
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p, (str, Mapping)):
            raise TypeError(f"{name}[{i}]={p!r}: a prompt is a string or a caption mapping")
        out.append(serialize_caption(p))
    return out


def check_negatives(negative: Any, batch: int) -> list[str]:
    """One negative caption per image; "" (or None, or an empty mapping) = none for that image."""
    if negative is None or isinstance(negative, (str, Mapping)):
        negative = [negative] * batch
    if isinstance(negative, (list, tuple)):
        negative = [n if n else "" for n in negative]
    return check_prompts("negative_prompt", negative, batch)


def check_schedule(steps: Any, guidance_schedule: Any, cfg_scale: Any) -> list[float]:
    raise_first(schedule_problems(steps, guidance_schedule, cfg_scale))
    if guidance_schedule is None:
        return [float(cfg_scale)] * steps
    return [float(w) for w in guidance_schedule]


def check_latents(latents: Any, shape: tuple[int, int, int]) -> torch.Tensor | None:
    import torch

    if latents is None:
        return None
    if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
        raise TypeError(f"latents is a {type(latents).__name__}: pass a float tensor of shape {shape} (or None)")
    if tuple(latents.shape) != shape:
        raise ValueError(f"latents has shape {tuple(latents.shape)}; expected {shape} (batch, tokens, 128)")
    return latents


def check_strength(strength: Any, img2img: bool, edit: bool = False) -> float:
    raise_first(strength_problems(strength, img2img, edit))
    return float(strength)


def check_generate_args(prompts: Any, seeds: Any, sides: tuple[int, int], **kw: Any) -> Request:
    """All of `generate`'s arguments (its keyword names) -> a Request, or the first problem raised.
    `sides`: the (min, max) image side the model supports (`Ideogram4Config.side_range`)."""
    captions = check_prompts("prompts", prompts)
    batch = len(captions)
    if seeds is None:
        seeds = [None] * batch
    if not isinstance(seeds, (list, tuple)):
        raise TypeError(f"seeds={seeds!r}: pass a list with one seed (int or None) per prompt")
    if len(seeds) != batch:
        raise ValueError(f"got {len(seeds)} seeds for {batch} prompts: give one seed per prompt")
    height, width = check_resolution(kw["height"], kw["width"], sides)
    callback = kw["step_callback"]
    if callback is not None and not callable(callback):
        raise TypeError(f"step_callback={callback!r} is not callable: pass a function (step, steps) -> None")
    edit = check_edit_args(kw)
    tokens = (height // TOKEN_PIXELS) * (width // TOKEN_PIXELS)
    request = Request(
        captions=captions,
        negatives=check_negatives(kw["negative_prompt"], batch),
        seeds=[check_seed(f"seeds[{i}]", s) for i, s in enumerate(seeds)],
        height=height,
        width=width,
        guidance_schedule=check_schedule(kw["num_inference_steps"], kw["guidance_schedule"], kw["cfg_scale"]),
        mu=check_number("mu", kw["mu"], 0.0),
        std=check_number("std", kw["std"], 1.5, positive=True),
        final_step=check_choice("final_step", kw["final_step"], FINAL_STEPS),
        input_images=None,
        denoising_strength=check_strength(kw["denoising_strength"], kw["input_image"] is not None, edit is not None),
        rand_device=check_device("rand_device", kw["rand_device"], RAND_DEVICES),
        latents=check_latents(kw["latents"], (batch, tokens, LATENT_CHANNELS)),
        output_type=check_choice("output_type", kw["output_type"], OUTPUT_TYPES),
        progress=check_flag("progress", kw["progress"]),
        step_callback=callback,
    )
    if edit is None:
        request.input_images = open_images(kw["input_image"], batch, height, width)  # the only file read, last
        return request
    # the input, then the mask: the only files read, last; the request carries the input on the canvas
    request.edit = open_edit(edit, kw["input_image"], captions, height, width, request.denoising_strength)
    request.input_images = [region.reference for region in request.edit.regions]
    request.denoising_strength = request.edit.strength  # a strength map: its largest strength
    return request
