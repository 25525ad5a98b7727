"""Structured configs for the Hydra runner.

The dataclasses here are the schema behind ``conf/``: every YAML file merges into one of these typed
nodes, so a misspelt key or a wrong type is a composition error instead of a silently ignored value.
They are registered with Hydra's ConfigStore by :func:`register_configs` (``run.py`` calls it before
``@hydra.main`` composes anything).

This module must stay cheap to import (no torch, no wandb): a config error has to surface in
seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from ideogram4.spec import EDIT_MARGIN, GRID_CELL_SIZE, UNIFORM_STD_THRESHOLD


@dataclass
class ComponentConf:
    """Where one component comes from when not from `model.source` (e.g. a distilled transformer)."""

    # null: model.source. A hub repo id (its <component>/ folder is fetched), a local checkpoint
    # folder (its <component>/ is used), the component's own folder, or one .safetensors file
    source: Optional[str] = None
    revision: Optional[str] = None  # of `source` (a hub branch, tag or commit)


@dataclass
class ModelConf:
    """Where the weights come from and how they are placed."""

    name: str = "fp8"
    # hub repo id ("ideogram-ai/ideogram-4-fp8"), a local folder in the official layout, or "tiny"
    source: str = "ideogram-ai/ideogram-4-fp8"
    # local folder for model=local (takes precedence over `source` when set)
    path: Optional[str] = None
    revision: Optional[str] = None
    # repos without a tokenizer/ of their own (the bf16 repackage) borrow one
    tokenizer_source: Optional[str] = None
    dtype: str = "bfloat16"  # bfloat16 | float16 | float32
    device: str = "cuda"  # used unless the top-level `device` is set
    load_unconditional: bool = True
    # auto (dequantize_once where memory allows, else dequantize_per_call) | dequantize_per_call |
    # dequantize_once | fp8_matmul
    fp8_mode: str = "auto"
    fp8_fast_accum: bool = False  # fp8_matmul: cuBLAS's faster, less exact fp8 accumulation
    # none | text_encoder (text encoder on the CPU between prompts) | transformers (both DiTs on the
    # CPU, moved in per pass: slow) | all
    offload: str = "none"
    vae_tiling: bool = False  # decode in tiles (2048^2 on 24 GB cards)
    compile_blocks: Any = "auto"  # auto (inductor on CUDA) | true | false | a torch.compile backend name
    compile_mode: Optional[str] = None  # torch.compile mode (ideogram4.spec.COMPILE_MODES); null: default
    # tiny only: which checkpoint layout to build and where to cache it
    layout: str = "original"
    cache_dir: Optional[str] = None
    # per component, a source other than `source`: model.transformer.source=fal/ideogram-v4-instant
    transformer: ComponentConf = field(default_factory=ComponentConf)
    unconditional_transformer: ComponentConf = field(default_factory=ComponentConf)
    text_encoder: ComponentConf = field(default_factory=ComponentConf)
    vae: ComponentConf = field(default_factory=ComponentConf)
    tokenizer: ComponentConf = field(default_factory=ComponentConf)
    # true: every hub source (base release, distilled transformer, LoRA) is replaced by a tiny random
    # stand-in in the same layout, built locally (ideogram4.tiny); runs on the CPU in float32
    tiny_variants: bool = False


@dataclass
class SamplerConf:
    """Schedule and guidance. The main guidance weight is the top-level ``cfg``."""

    name: str = "quality_48"
    steps: int = 48
    polish_steps: int = 3
    polish_cfg: float = 3.0
    mu: float = 0.0
    std: float = 1.5
    final_step: str = "official"  # official (ends at t_max) | clean (ends at t = 1)
    solver: str = "euler"
    # a full per-step list (chronological, index 0 = first/noisiest step) overrides cfg/polish_*
    guidance_schedule: Optional[List[float]] = None
    rand_device: str = "cpu"


@dataclass
class ResolutionConf:
    name: str = "square_1024"
    height: int = 1024
    width: int = 1024


@dataclass
class PromptItem:
    id: str = MISSING
    # a plain string, or a structured caption as a mapping (serialised compactly in official order)
    prompt: Any = MISSING


@dataclass
class PromptsConf:
    name: str = "seed_example"
    items: List[PromptItem] = field(default_factory=list)
    # a user's own prompt file (.jsonl, .json, .yaml, .yml); replaces `items`
    file: Optional[str] = None
    # caption findings (as `captions check` reports them): warnings by default, its errors stop the run when strict
    strict: bool = False
    negative_prompt: str = ""
    max_tokens: int = 2048
    # plain prompts -> structured captions with the text encoder + instruct LM head (prompt enhancer)
    upsample: bool = False
    upsample_head: Optional[str] = None  # null: diffusers/qwen3-vl-8b-instruct-lm-head; or a file/folder
    upsample_seed: int = 0  # one caption per prompt for every image seed of a sweep
    upsample_max_new_tokens: int = 1024


@dataclass
class TrackerConf:
    name: str = "wandb"  # wandb | none
    # auto: online when credentials exist, else offline (never prompts for a login)
    mode: str = "auto"  # auto | online | offline | disabled
    project: str = "ideogram4"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    # where wandb writes its run folders; default: inside the job's output folder
    dir: Optional[str] = None
    init_timeout: float = 60.0
    log_images: bool = True


@dataclass
class OutputConf:
    # regenerate images even if the manifest already has them with identical settings
    overwrite: bool = False
    save_latents: bool = False
    # flag images whose pixel standard deviation (0..255) is below this as near-uniform
    uniform_std_threshold: float = UNIFORM_STD_THRESHOLD
    grid_cell_size: int = GRID_CELL_SIZE
    # also save <image>__layout.png: the image with the caption's boxes drawn over it
    layout_overlay: bool = False


@dataclass
class GridConf:
    """The end-of-sweep grid PNG: swept keys (or prompt / seed) on its axes, metric values under each image."""

    x: Optional[str] = None  # null: the first swept key
    y: Optional[str] = None  # null: the second swept key (if any)
    z: Optional[str] = None  # one sheet per value
    scores: List[str] = field(default_factory=list)  # e.g. [ocr_word_accuracy]


@dataclass
class ReportConf:
    """The end-of-sweep HTML report (report/index.html): the grid's axes, and whether to write it."""

    enabled: bool = True
    x: Optional[str] = None
    y: Optional[str] = None


@dataclass
class LoraConf:
    """One LoRA: `python run.py 'lora=[{path:style.safetensors,scale:0.8}]'`."""

    path: str = MISSING  # a local .safetensors file, or "owner/repo/file.safetensors" on the hub
    name: Optional[str] = None  # how records name it; null: the file's stem (names must differ)
    scale: float = 1.0
    target: str = "transformer"  # transformer (as diffusers) | unconditional_transformer | both
    merge: bool = False  # fold into bf16/fp32 weights (faster steps; not on fp8/nf4 weights)
    weight_name: Optional[str] = None  # with path = "owner/repo": the file in the repo
    revision: Optional[str] = None


@dataclass
class OutpaintConf:
    """Pixels added on each side of input_image (multiples of 16); all 0 = no outpainting."""

    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0


@dataclass
class RunConf:
    model: ModelConf = field(default_factory=ModelConf)
    sampler: SamplerConf = field(default_factory=SamplerConf)
    resolution: ResolutionConf = field(default_factory=ResolutionConf)
    prompts: PromptsConf = field(default_factory=PromptsConf)
    tracker: TrackerConf = field(default_factory=TrackerConf)
    output: OutputConf = field(default_factory=OutputConf)
    grid: GridConf = field(default_factory=GridConf)
    report: ReportConf = field(default_factory=ReportConf)
    # main guidance weight (the non-polish steps of the schedule)
    cfg: float = 7.0
    # an int, a list of ints, or null (a random seed, recorded in the manifest)
    seed: Any = 0
    images_per_prompt: int = 1
    # overrides model.device when set: cpu | cuda | cuda:N | auto
    device: Optional[str] = None
    # a single prompt (string; JSON captions as a quoted string); replaces the prompt set
    prompt: Optional[str] = None
    negative_prompt: Optional[str] = None
    batch_size: int = 1
    input_image: Optional[str] = None
    denoising_strength: float = 1.0
    # masked editing of input_image (ideogram4.masks; at most one of the four; README "Editing")
    mask_image: Optional[str] = None  # white = repaint
    strength_map: Optional[str] = None  # grey level = per-position strength (Differential Diffusion)
    outpaint: OutpaintConf = field(default_factory=OutpaintConf)
    edit_elements: Optional[List[int]] = None  # caption element indexes whose bbox is repainted
    mask_blur: float = 0.0  # pixels: the width of the inward feathering
    paste_back: bool = False  # the input's pixels outside the mask after decoding
    edit_margin: int = EDIT_MARGIN  # pixels around each edit_elements bbox
    progress: bool = True
    # per-image metrics (ideogram4.metrics): image_stats is cheap; ocr, palette, clip_score on demand
    metrics: List[str] = field(default_factory=lambda: ["image_stats"])
    # per-metric options, e.g. metric_options.ocr.margin=30 or metric_options.clip_score.model=/path
    metric_options: Dict[str, Any] = field(default_factory=dict)
    # LoRAs, in load order: `lora=[{path:a.safetensors,scale:0.8}]`, swept as `lora.0.scale=0,0.5,1`
    # (the loaded base weights and the read files are reused). A typed list because it is the form
    # OmegaConf validates when added from the command line: a new key in a Dict[str, LoraConf] cannot
    # be created by a dotted override, and a config group would need `+lora@lora.NAME=entry` per LoRA.
    lora: List[LoraConf] = field(default_factory=list)
    # the sweep summary's baseline setting (e.g. "cfg=3"); null: the first setting in sort order
    summary_baseline: Optional[str] = None
    # deterministic GPU kernels (ideogram4.determinism): repeatable bits on the same stack, some speed cost
    deterministic: bool = False
    # a PNG made by this runner: regenerate it from its embedded settings and compare (+reproduce=IMAGE.png)
    reproduce: Optional[str] = None
    # with `reproduce`: refuse to sample when anything recorded (versions, weights, GPU, ...) differs
    reproduce_strict: bool = False


_REGISTERED = False


def sampler_node(name: str) -> dict:
    """The `sampler` group entry for a core preset (ideogram4.spec.PRESETS is the only copy): the
    sampler node and the preset's guidance weight as the top-level `cfg` (7 for the official presets,
    1 for the distilled ones), so `sampler=instant_8` runs without CFG; `cfg=...` still overrides."""
    from ideogram4.spec import PRESETS

    p = PRESETS[name]
    node = SamplerConf(
        name=name,
        steps=p.steps,
        polish_steps=p.polish_steps,
        polish_cfg=p.polish_cfg,
        mu=p.mu,
        std=p.std,
        final_step=p.final_step,
    )
    return {"sampler": node, "cfg": p.cfg}


def register_configs() -> None:
    """Register the schema and the sampler presets with Hydra's ConfigStore (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from hydra.core.config_store import ConfigStore

    from ideogram4.spec import PRESETS

    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConf)
    for name in PRESETS:
        cs.store(group="sampler", name=name, node=sampler_node(name), package="_global_")
    _REGISTERED = True
