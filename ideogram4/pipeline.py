"""Ideogram4Pipeline: load, encode (cached), sample, decode.

The Python API mirrors DiffSynth-Studio's (`from_pretrained(model_configs=..., tokenizer_config=...)`,
`pipe(prompt=..., cfg_scale=..., seed=...)` -> PIL image); `generate` is the batch form the runner uses.
`generate` composes plain functions: checks -> text -> noise -> `sampling.denoise` -> decode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from . import loading, sampling
from .arguments import check_seed
from .captions.upsample import CaptionWriter
from .checkpoints import ModelConfig
from .checks import Request, check_generate_args, check_load_options, check_source
from .errors import memory_tips, out_of_memory_as_tips
from .flops import sampling_cost
from .lora import LoraInfo, LoraManager
from .masks import latent_tokens, paste_back
from .models.transformer import build_layout
from .models.vae import from_pil, to_uint8
from .spec import DEFAULT_STEPS, EDIT_MARGIN, MAX_SIDE, MIN_SIDE
from .text import TextCache, check_token_counts, encode_caption, pack_text
from .variants import warn_against_card

log = logging.getLogger(__name__)


@dataclass
class GenerationOutput:
    images: list | Any  # list of PIL images ("pil"), uint8 array (B, H, W, 3) ("np"), or None ("latent")
    latents: torch.Tensor  # (B, N, 128) float32, the final normalised tokens
    captions: list[str]  # exactly what the text encoder read, per image
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    text_cache_hits: list[bool] = field(default_factory=list)
    peak_memory_bytes: int | None = None
    unconditional: str = "unconditional_transformer"  # which network gave v_uncond
    edits: list | None = None  # masks.EditRegion per image for a masked edit (reference, edited pixels)
    # {"transformer_passes": this batch's DiT calls per branch, "flops": per image, its passes' matmul FLOPs}
    cost: dict = field(default_factory=dict)


class Ideogram4Pipeline:
    def __init__(
        self,
        transformer,
        text_encoder,
        vae,
        tokenizer,
        unconditional_transformer=None,
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        info: dict | None = None,
        offload_text_encoder: bool = False,
        offload_transformers: bool = False,
        text_cache_size: int = 256,
        text_bucket: int | None = None,
    ):
        self.transformer = transformer
        self.unconditional_transformer = unconditional_transformer
        self.text_encoder = text_encoder
        self.vae = vae
        self.tokenizer = tokenizer
        # the image sides the DiT was trained for (its config's; a pipeline with no DiT: the released range)
        self.side_range = transformer.config.side_range if transformer is not None else (MIN_SIDE, MAX_SIDE)
        self.device = torch.device(device)
        self.dtype = dtype
        self.info = info or {}
        self.offload_text_encoder = offload_text_encoder
        self.offload_transformers = offload_transformers
        self.text_bucket = text_bucket  # pad text rows to a multiple of this (compiled blocks + CUDA graphs)
        self.cuda_graphs = self.info.get("compile_scope") == "model"  # CUDA graphs replay: mark every step
        self.text_encoder_calls = 0
        self._text_cache = TextCache(text_cache_size)
        self.lora_manager = LoraManager(transformer, unconditional_transformer)
        self.caption_writer: CaptionWriter | None = None  # prompt upsampling: set by load_prompt_enhancer_head()

    # --- loading -------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        source: str | None = None,
        *,
        model_configs: list[ModelConfig] | None = None,
        tokenizer_config: ModelConfig | None = None,
        torch_dtype: torch.dtype = torch.bfloat16,
        device: str = "cuda",
        revision: str | None = None,
        tokenizer_source: str | None = None,
        load_unconditional: bool = True,
        fp8_mode: str = "auto",
        offload_text_encoder: bool = False,
        offload_transformers: bool = False,
        vae_tiling: bool = False,
        compile_blocks: bool | str = "auto",
        compile_mode: str | None = None,
        fp8_fast_accum: bool = False,
    ) -> Ideogram4Pipeline:
        """From a folder or hub repo id (`source`), `model_configs`, or both (each config replacing its component).

        Without an `unconditional_transformer` (not listed, or `load_unconditional=False`), the
        conditional network also serves the unconditional branch (DiffSynth's fallback; not the
        official method), and the pipeline logs that it does. `fp8_mode`, the memory modes and
        `compile_*` are described in `ideogram4.loading`. Every option is checked before any file is read.
        """
        check_source(source, model_configs, tokenizer_config, revision, tokenizer_source)
        opts = check_load_options(
            torch_dtype,
            device,
            fp8_mode,
            compile_blocks,
            compile_mode,
            load_unconditional=load_unconditional,
            offload_text_encoder=offload_text_encoder,
            offload_transformers=offload_transformers,
            vae_tiling=vae_tiling,
            fp8_fast_accum=fp8_fast_accum,
        )
        parts, info = loading.load(source, (model_configs, tokenizer_config), revision, tokenizer_source, opts)
        log.info("loaded Ideogram 4 (%s, %s, %s) in %.1f s", info["format"], info["dtype"], opts.device, info["load_s"])
        modules = (parts.transformer, parts.text_encoder, parts.vae, parts.tokenizer, parts.unconditional_transformer)
        offload = dict(offload_text_encoder=opts.offload_text_encoder, offload_transformers=opts.offload_transformers)
        bucket = loading.text_bucket(opts)
        return cls(*modules, device=opts.device, dtype=opts.torch_dtype, info=info, text_bucket=bucket, **offload)

    def describe(self) -> dict:
        return dict(self.info)

    # --- LoRA (state in self.lora_manager) ------------------------------------------------------

    @property
    def loras(self) -> dict[str, LoraInfo]:
        return self.lora_manager.loras

    def list_loras(self) -> list[dict]:
        return self.lora_manager.list_loras()

    def load_lora(self, source, *args, **kwargs) -> str:
        """`load_lora(source, scale=1.0, target="transformer", name=None, merge=False, ...)` (LoraManager.load),
        or DiffSynth's `load_lora(pipe.transformer, source, alpha=1.0)` (LoraManager.load_into)."""
        if isinstance(source, torch.nn.Module):
            return self.lora_manager.load_into(source, *args, **kwargs)
        return self.lora_manager.load(source, *args, **kwargs)

    def set_lora_scale(self, name: str, scale: float) -> None:
        self.lora_manager.set_scale(name, scale)

    def unload_lora(self, name: str | None = None) -> None:
        self.lora_manager.unload(name)

    def clear_lora(self) -> None:
        """DiffSynth's name for unload_lora()."""
        self.lora_manager.unload()

    # --- prompt upsampling (state in self.caption_writer) -------------------------------------------

    def load_prompt_enhancer_head(self, head: str | None = None, *, revision: str | None = None):
        """Read the LM head (file, folder or hub repo id; see CaptionWriter) for `upsample_prompt`."""
        if self.caption_writer is None:
            self.caption_writer = self.new_caption_writer()
        return self.caption_writer.load_prompt_enhancer_head(head, revision=revision)

    def new_caption_writer(self, head=None) -> CaptionWriter:
        """A caption writer over this pipeline's text encoder (same device and offload rule)."""
        te, offload = self.text_encoder, self.offload_text_encoder
        return CaptionWriter(te, self.tokenizer, self.info, head=head, device=self.device, offload=offload)

    def upsample_prompt(self, text, height: int = 1024, width: int = 1024, seed: int = 0, **options) -> str:
        """A plain prompt -> a structured caption (CaptionWriter.upsample_prompt, same options)."""
        writer = self.caption_writer or self.new_caption_writer()  # without a head: says how to load one
        return writer.upsample_prompt(text, height, width, seed, **options)

    # --- text ----------------------------------------------------------------------------------

    def encode_prompt(self, caption: str) -> tuple[torch.Tensor, bool]:
        """(1, Lt, 13 * hidden) features in the compute dtype, on the CPU, and whether the cache had them."""
        cached = self._text_cache.get(caption)
        if cached is not None:
            return cached, True
        features = encode_caption(self.text_encoder, self.tokenizer, caption, self.dtype)
        self.text_encoder_calls += 1
        self._text_cache.put(caption, features)
        return features, False

    def _encode_all(self, captions: list[str]) -> list[tuple[torch.Tensor, bool]]:
        """With offload_text_encoder, the encoder visits the GPU once per call, only if a caption is new."""
        new = [c for c in captions if c not in self._text_cache]
        if not (self.offload_text_encoder and self.device.type != "cpu" and new):
            return [self.encode_prompt(c) for c in captions]
        self.text_encoder.to(self.device)
        try:
            return [self.encode_prompt(c) for c in captions]
        finally:
            self.text_encoder.to("cpu")

    # --- sampling ------------------------------------------------------------------------------

    def _velocity(self, net, layout, text) -> sampling.Velocity:
        # Offloaded DiTs stream their blocks in inside the call; compiled ones get one graph per text length.
        if getattr(net, "dynamic_sequence", False):
            layout.mark_dynamic(*([text] if text is not None else []))
        return partial(net, layout=layout, text_features=text)

    def _text_branch(self, net, captions: list[str], req: Request) -> tuple[sampling.Velocity, list[bool]]:
        """`net` reading `captions`: its velocity function, and which captions came from the cache."""
        encoded = self._encode_all(captions)
        text, lengths = pack_text([f for f, _ in encoded], self.device, self.dtype, self.text_bucket)
        layout = build_layout(net.config, lengths, *req.grid, req.batch, self.device, self.dtype, text.shape[1])
        return self._velocity(net, layout, text), [hit for _, hit in encoded]

    def _guidance_branches(self, req: Request) -> tuple[sampling.Velocity, sampling.Velocity, str, list[bool]]:
        """(conditional velocity, unconditional velocity, which network is unconditional, cache hits)."""
        cond, hits = self._text_branch(self.transformer, req.captions, req)
        if any(req.negatives):
            # Classic CFG: the conditional network reads the negative prompt for the unconditional branch.
            uncond, _ = self._text_branch(self.transformer, req.negatives, req)
            return cond, uncond, "conditional transformer + negative prompt", hits
        net = self.unconditional_transformer or self.transformer
        layout = build_layout(net.config, None, *req.grid, req.batch, self.device, self.dtype)
        name = "unconditional_transformer" if self.unconditional_transformer is not None else "conditional fallback"
        return cond, self._velocity(net, layout, None), name, hits

    def _initial_latents(self, req: Request, times: torch.Tensor) -> tuple[torch.Tensor, sampling.Blend | None]:
        """(B, N, 128) float32 on the pipeline device: seeded noise, moved toward input_image for img2img;
        and for a masked edit the blend that keeps the input's latents outside the mask at every step.

        An edit at strength 1 starts from pure noise, as text-to-image does (an all-white mask gives the
        text-to-image latents bit for bit); below 1 it starts where img2img does."""
        grid_h, grid_w = req.grid
        noise = (
            req.latents if req.latents is not None else sampling.make_noise(req.seeds, grid_h * grid_w, req.rand_device)
        )
        z = noise.to(device=self.device, dtype=torch.float32)
        if req.input_images is None:
            return z, None
        x0 = self.vae.encode(from_pil(req.input_images, req.height, req.width).to(self.device))
        if req.edit is None:
            return sampling.noise_to(x0, z, float(times[0])), None
        weights = latent_tokens(req.edit.weights).to(self.device)
        edit = sampling.edit_blend(x0, z, times, weights, req.edit.per_position_strength)
        start = z if req.denoising_strength == 1.0 else sampling.noise_to(x0, z, float(times[0]))
        return edit(0, start), edit

    def _decode(self, z: torch.Tensor, req: Request):
        if req.output_type == "latent":
            return None
        pixels = to_uint8(self.vae.decode(z, *req.grid))
        if req.edit is not None and req.edit.paste_back:
            pixels = paste_back(pixels, req.edit.regions)
        if req.output_type == "np":
            return pixels.numpy()
        from PIL import Image

        return [Image.fromarray(p.numpy()) for p in pixels]

    def _sample(self, req: Request) -> GenerationOutput:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        cond, uncond, uncond_name, hits = self._guidance_branches(req)
        cond, uncond, passes = sampling.counted(cond, uncond)
        texts = (req.captions, req.negatives)  # what each image's passes read (no negative: no text)
        t1 = time.perf_counter()
        times = sampling.timesteps(
            req.steps, req.height, req.width, req.mu, req.std, req.final_step, req.denoising_strength
        )
        z, edit = self._initial_latents(req, times)
        compile_s = loading.COMPILE_CLOCK.seconds()
        t2 = time.perf_counter()
        marks = torch.compiler.cudagraph_mark_step_begin if self.cuda_graphs else None
        z = sampling.denoise(
            cond, z, times, req.guidance_schedule, uncond, req.step_callback, req.progress, edit, marks
        )
        if cuda:
            torch.cuda.synchronize(self.device)
        t3 = time.perf_counter()
        compile_s = loading.COMPILE_CLOCK.seconds() - compile_s  # torch.compile's work: not in sampling_s
        spent = {"text_encoding_s": t1 - t0, "compile_s": compile_s, "sampling_s": t3 - t2 - compile_s}
        images = self._decode(z, req)
        return GenerationOutput(
            images=images,
            latents=z.cpu(),
            captions=req.captions,
            seeds=req.seeds,
            timings=spent | {"decoding_s": time.perf_counter() - t3},
            text_cache_hits=hits,
            peak_memory_bytes=torch.cuda.max_memory_allocated(self.device) if cuda else None,
            unconditional=uncond_name,
            edits=req.edit.regions if req.edit is not None else None,
            cost=sampling_cost(self.transformer.config, z.shape[1], passes, texts, self.encode_prompt),
        )

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str | dict],
        seeds: list[int | None] | None = None,
        *,
        height: int = 1024,
        width: int = 1024,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_schedule: list[float] | None = None,
        cfg_scale: float = 7.0,
        mu: float = 0.0,
        std: float = 1.5,
        final_step: str = "official",
        negative_prompt: str | dict | list = "",
        input_image=None,
        denoising_strength: float = 1.0,
        mask_image=None,
        strength_map=None,
        outpaint: dict | tuple | None = None,
        edit_elements: list[int] | None = None,
        mask_blur: float = 0.0,
        paste_back: bool = False,
        edit_margin: int = EDIT_MARGIN,
        rand_device: str = "cpu",
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        progress: bool = True,
        step_callback: Callable[[int, int], None] | None = None,
    ) -> GenerationOutput:
        """One image per prompt; prompts[i] uses seeds[i]. All images of the call share one forward pass.

        A string prompt is read verbatim; a mapping is serialised compactly in the official key order.
        Masked editing of `input_image` (one of, see `ideogram4.masks` for the rules): `mask_image`
        (white = repaint), `strength_map` (grey = per-position strength), `outpaint` ({side: pixels}),
        `edit_elements` (caption element indexes, bbox + `edit_margin` pixels); `mask_blur` feathers,
        `paste_back` puts the input's pixels back outside the mask after decoding.
        Every argument is checked before any model runs; CUDA out of memory raises
        `errors.GpuOutOfMemory`, whose `.tips` name the options that need less.
        """
        keywords = {name: value for name, value in locals().items() if name not in ("self", "prompts", "seeds")}
        req = check_generate_args(prompts, seeds, self.side_range, **keywords)  # every keyword argument, by its name
        warn_against_card(self.info.get("variant"), req, self.unconditional_transformer is not None)
        if self.tokenizer is not None:
            check_token_counts(self.tokenizer, [c for c in req.captions + req.negatives if c not in self._text_cache])
        with out_of_memory_as_tips(lambda: memory_tips(self.describe(), req.batch, req.height, req.width)):
            return self._sample(req)

    def __call__(
        self,
        prompt: str | dict | list,
        negative_prompt: str | dict = "",
        cfg_scale: float = 7.0,
        input_image=None,
        denoising_strength: float = 1.0,
        height: int = 1024,
        width: int = 1024,
        seed: int | list[int] | None = None,
        mask_image=None,
        strength_map=None,
        outpaint: dict | tuple | None = None,
        edit_elements: list[int] | None = None,
        mask_blur: float = 0.0,
        paste_back: bool = False,
        edit_margin: int = EDIT_MARGIN,
        rand_device: str = "cpu",
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_schedule: list[float] | None = None,
        mu: float = 0.0,
        std: float = 1.5,
        final_step: str = "official",
        output_type: str = "pil",
        latents: torch.Tensor | None = None,
        progress: bool = True,
    ):
        """DiffSynth-style call: a PIL image for one prompt (a list for a list of prompts).

        `negative_prompt` non-empty: classic CFG, the conditional transformer reads the negative text
        for the unconditional branch. Empty (default): the official asymmetric guidance with the
        unconditional transformer. `guidance_schedule` (chronological, one weight per step) overrides
        the constant `cfg_scale`. `output_type="latent"` returns the (B, N, 128) tokens.
        """
        options = {k: v for k, v in locals().items() if k not in ("self", "prompt", "seed")}  # generate()'s names
        batch = isinstance(prompt, list)
        prompts = prompt if batch else [prompt]
        if isinstance(seed, list):
            seeds = [check_seed(f"seed[{i}]", s) for i, s in enumerate(seed)]
        else:  # one seed for every prompt; None: each image draws its own
            seeds = [check_seed("seed", seed) if seed is not None else None] * len(prompts)
        out = self.generate(prompts, seeds, **options)
        if output_type == "latent":
            return out.latents
        return out.images if batch else out.images[0]
