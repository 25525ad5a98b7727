"""Facts about Ideogram 4 that both the core and the runner need, without importing torch.

The runner validates a config against these before any weights load; the core raises on the same
names at call time. One definition here, imported by both, so the two layers cannot drift apart.
The time convention (t = 0 noise, t = 1 clean) and the sampling maths live in ``sampling.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# --- sizes ------------------------------------------------------------------------------------------
TOKEN_PIXELS = 16  # one DiT token = 2 x 2 latent pixels = 16 x 16 image pixels
LATENT_CHANNELS = 128  # per token: 32 VAE channels x 2 x 2
DEFAULT_STEPS = 50  # `pipe(...)` and `generate(...)` without num_inference_steps: DiffSynth's default (seed page)
MIN_SIDE, MAX_SIDE = 256, 2048  # the resolutions the released model was trained for
# The tiny random model (ideogram4.tiny) renders small images in tests; its DiT config carries this range
# the way every DiT config carries its own (`min_side`/`max_side`, the released range when a file has none)
TINY_MIN_SIDE = TOKEN_PIXELS
GRID_CELL_SIZE = 256  # a comparison grid's cell side in pixels (runner output, `experiment.grid --cell`)
TRACKER_MODES = ("auto", "online", "offline", "disabled")  # W&B: auto = online with credentials, else offline
MAX_ASPECT = 6.0
MAX_TEXT_TOKENS = 2048  # the model's text context, chat template included
MAX_STEPS = 1000  # far beyond any useful schedule; caps memory for a mistyped 10^9
MAX_SEED = 2**63 - 1  # seeds are 0 .. MAX_SEED (torch.Generator.manual_seed takes a signed 64-bit value)

# --- options ----------------------------------------------------------------------------------------
COMPONENTS = ("transformer", "unconditional_transformer", "text_encoder", "vae", "tokenizer")  # one source each
DTYPES = ("bfloat16", "float16", "float32")
FP8_MODES = ("dequantize_per_call", "dequantize_once", "fp8_matmul")
# "auto": dequantize_once where the device holds both DiTs in the compute dtype, else dequantize_per_call
# (the rule: `loading.choose_fp8_mode`)
FP8_MODE_OPTIONS = ("auto", *FP8_MODES)
CHECKPOINT_LAYOUTS = ("original", "fp8", "diffusers")  # the tiny model's folder layouts
OFFLOAD_MODES = ("none", "text_encoder", "transformers", "all")
FINAL_STEPS = ("official", "clean")
SOLVERS = ("euler",)
RAND_DEVICES = ("cpu", "cuda")
OUTPUT_TYPES = ("pil", "np", "latent")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# The inductor modes that replay CUDA graphs: the whole DiT is compiled as one graph (a graph's outputs
# are overwritten by its next replay, so blocks must not feed each other replayed outputs) and text is
# padded to buckets (each shape records its own graph).
CUDA_GRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")
CUDA_GRAPH_TEXT_BUCKET = 64  # text rows padded to a multiple of this: 2048 / 64 = 32 shapes per resolution
COMPILE_AUTO = "auto"  # compile_blocks="auto": inductor on CUDA, eager elsewhere
LORA_TARGETS = ("transformer", "unconditional_transformer", "both")  # "transformer": as diffusers
# which way a metric value is better; "neither" for a plain statistic (pixel_std, sharpness, ...)
METRIC_DIRECTIONS = ("higher", "lower", "neither")

# --- editing (ideogram4.masks) ---------------------------------------------------------------------
LATENT_PIXELS = 8  # one VAE latent pixel = 8 x 8 image pixels: masks act on this grid
MASK_WHITE = 128  # a mask pixel at or above this grey level (0..255) is white: repaint it
MASK_ASPECT_TOLERANCE = 0.01  # a mask or strength map of another size is stretched only within 1 % of the aspect
MASK_MODES = ("1", "L", "RGB")  # RGB only when grey (R = G = B): colour has no meaning in a mask
EDIT_KINDS = ("mask_image", "strength_map", "outpaint", "edit_elements")  # generate()'s names; one per call
OUTPAINT_SIDES = ("left", "right", "top", "bottom")
EDIT_MARGIN = 32  # pixels added around each element's bbox by edit_elements
MAX_MASK_BLUR = 256  # pixels (the width of the inward feathering); far beyond any useful value

# --- outputs ----------------------------------------------------------------------------------------
# PNG text chunks: the exact caption an image was made from; the job's full resolved config (JSON);
# the manifest record's settings subset (JSON); versions, revision, GPU, weight fingerprints,
# determinism (experiment.run.provenance); the A1111-style summary that image viewers show
PNG_CAPTION_KEY = "ideogram4:caption"
PNG_CONFIG_KEY = "ideogram4:config"
PNG_SETTINGS_KEY = "ideogram4:settings"
PNG_PROVENANCE_KEY = "ideogram4:provenance"
PNG_PARAMETERS_KEY = "parameters"
UNIFORM_STD_THRESHOLD = 2.0  # largest per-channel pixel std (0..255) below which an image is near-uniform

# --- files from elsewhere (bounds on what a small hostile file may cost) ----------------------------
MAX_IMAGE_PIXELS = 8 * 2048 * 2048  # an image file read for scoring, img2img or reproduction: 8x the largest output
MAX_NESTING = 64  # JSON/YAML depth of a caption or prompt file (real captions nest about 5 deep)
MAX_YAML_NODES = 200_000  # a YAML prompt file's values with every alias expanded (anchor bombs stop here)
MAX_SAFETENSORS_HEADER = 100 * 2**20  # bytes of a .safetensors JSON header (as the safetensors library)

# --- schedule ---------------------------------------------------------------------------------------
LOGSNR_MIN, LOGSNR_MAX = -15.0, 18.0
T_MIN = 1.0 / (1.0 + math.exp(0.5 * LOGSNR_MAX))  # 1.2339e-4, where sampling starts
T_MAX = 1.0 / (1.0 + math.exp(0.5 * LOGSNR_MIN))  # 0.999447, where the official sampler stops


def side_range(dit_config: Mapping[str, Any]) -> tuple[int, int]:
    """The image sides a DiT config (its config.json, as a mapping) supports: its `min_side`/`max_side`,
    else the released range. The one reading, for the loader and for the runner's check before loading."""
    return int(dit_config.get("min_side", MIN_SIDE)), int(dit_config.get("max_side", MAX_SIDE))


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


@dataclass(frozen=True)
class SamplerPreset:
    """A named schedule. `final_step="official"` ends at t_max; "clean" at t = 1 (diffusers, DiffSynth)."""

    steps: int
    cfg: float
    polish_steps: int
    polish_cfg: float
    mu: float
    std: float
    final_step: str = "official"
    description: str = ""

    @property
    def guidance_schedule(self) -> list[float]:
        return official_guidance_schedule(self.steps, self.cfg, self.polish_steps, self.polish_cfg)


# The official presets store guidance last-step-first; these fields describe them chronologically
# (see `from_official_order`, tested against the stored tuples). The runner's `sampler` config group
# is registered from this table: there is no second copy in YAML.
PRESETS: dict[str, SamplerPreset] = {
    "quality_48": SamplerPreset(
        48, 7.0, 3, 3.0, 0.0, 1.5, description="Official V4_QUALITY_48: 45 steps at cfg, 3 polish steps at 3.0"
    ),
    "default_20": SamplerPreset(
        20, 7.0, 2, 3.0, 0.0, 1.75, description="Official V4_DEFAULT_20: 18 steps at cfg, 2 polish steps at 3.0"
    ),
    "turbo_12": SamplerPreset(
        12, 7.0, 1, 3.0, 0.5, 1.75, description="Official V4_TURBO_12: 11 steps at cfg, 1 polish step at 3.0"
    ),
    "constant": SamplerPreset(
        48,
        7.0,
        0,
        3.0,
        0.0,
        1.5,
        final_step="clean",
        description="DiffSynth-style: constant cfg on every step, ends at t = 1",
    ),
    # The distilled variants (VARIANTS below) run without CFG: guidance 1 on every step, so the
    # unconditional pass is skipped. Steps, mu and std as sglang's presets (docs/variants.md).
    "fast_20": SamplerPreset(20, 1.0, 0, 1.0, 0.0, 1.75, description="fal Fast: 20 steps, no CFG (sglang V4_FAST_20)"),
    "instant_8": SamplerPreset(
        8, 1.0, 0, 1.0, 0.0, 1.75, description="fal Instant: 8 steps, no CFG (sglang V4_INSTANT_8)"
    ),
    **{
        f"turbotime_{n}": SamplerPreset(
            n, 1.0, 0, 1.0, 0.5, 1.75, description=f"TurboTime LoRA: {n} steps, no CFG (sglang V4_TURBOTIME_LORA_{n})"
        )
        for n in (2, 4, 8)
    },
}

# Reproduce samples a batch-made image as this many copies of itself at most (the batch shape changes the
# CPU kernels' rounding); a larger recorded batch size in a PNG (data) is not taken
MAX_REPRODUCE_COPIES = 64


@dataclass(frozen=True)
class DistilledVariant:
    """A faster, distilled Ideogram 4 and what its card says to run it with (sources: docs/variants.md).

    Every variant here is single-branch: guidance 1 (no CFG), no unconditional transformer."""

    repo: str  # the hub repo of its weights
    kind: str  # "transformer": a transformer-only repo over a base release's other components; "lora"
    presets: tuple[str, ...]  # PRESETS for it, one per step count its card gives
    card: str
    weight_name: str = ""  # a LoRA's file in its repo
    note: str = ""  # a caveat from its card or loader, logged when it is used

    @property
    def steps(self) -> tuple[int, ...]:
        return tuple(PRESETS[p].steps for p in self.presets)


VARIANTS: dict[str, DistilledVariant] = {
    "fal_fast": DistilledVariant(
        "fal/ideogram-v4-fast",
        "transformer",
        ("fast_20",),
        "https://huggingface.co/fal/ideogram-v4-fast",
        note="its weights were trained (QAD) for fal's NVFP4 serving path; sglang's cookbook warns that "
        "running them in floating point may degrade quality",
    ),
    "fal_instant": DistilledVariant(
        "fal/ideogram-v4-instant", "transformer", ("instant_8",), "https://huggingface.co/fal/ideogram-v4-instant"
    ),
    "turbotime": DistilledVariant(
        "ostris/ideogram_4_turbotime_lora",
        "lora",
        ("turbotime_2", "turbotime_4", "turbotime_8"),
        "https://huggingface.co/ostris/ideogram_4_turbotime_lora",
        weight_name="ideogram_4_turbotime_v1.safetensors",
    ),
}


def variant_for(source: str | None) -> str | None:
    """The VARIANTS name whose repo `source` names (a repo id, or "owner/repo/file" for a LoRA), else None."""
    text = (source or "").strip("/")
    return next((name for name, v in VARIANTS.items() if text == v.repo or text.startswith(v.repo + "/")), None)
