"""Ideogram4Pipeline: load, encode (cached), sample, decode.

The Python API mirrors DiffSynth-Studio's (`from_pretrained(model_configs=..., tokenizer_config=...)`,
`pipe(prompt=..., cfg_scale=..., seed=...)` -> PIL image); `generate` is the batch form the runner uses.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from . import sampling
from .checkpoints import (
    ModelConfig,
    load_text_encoder,
    load_transformer,
    load_vae,
    resolve_model_configs,
    resolve_source,
)
from .lora_api import LoraMixin
from .models.quant import fp8_matmul_supported, fp8_paths
from .models.transformer import build_layout
from .models.vae import from_pil, to_uint8
from .prompts import load_tokenizer, serialize_caption, tokenize
from .spec import OUTPUT_TYPES, TOKEN_PIXELS

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


def check_size(height: int, width: int) -> None:
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, int) or v % TOKEN_PIXELS:
            raise ValueError(
                f"{name}={v} is not a multiple of {TOKEN_PIXELS} (one token is 16x16 pixels): "
                f"use {max(TOKEN_PIXELS, round(v / TOKEN_PIXELS) * TOKEN_PIXELS) if isinstance(v, (int, float)) else 1024}"
            )


def check_device(device: str) -> None:
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} but this machine has no CUDA GPU: use device='cpu' (e.g. the tiny model on CPU)"
        )


class Ideogram4Pipeline(LoraMixin):
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
    ):
        self.transformer = transformer
        self.unconditional_transformer = unconditional_transformer
        self.text_encoder = text_encoder
        self.vae = vae
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self.info = info or {}
        self.offload_text_encoder = offload_text_encoder
        self.offload_transformers = offload_transformers
        self.text_encoder_calls = 0
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._text_cache_size = text_cache_size

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
        fp8_mode: str = "dequantize_per_call",
        offload_text_encoder: bool = False,
        offload_transformers: bool = False,
        vae_tiling: bool = False,
        compile_blocks: bool | str = False,
    ) -> Ideogram4Pipeline:
        """From a folder or hub repo id (`source`), or from DiffSynth-style `model_configs`.

        Without an `unconditional_transformer` (not listed, or `load_unconditional=False`), the
        conditional network also serves the unconditional branch (DiffSynth's fallback; not the
        official method), and the pipeline logs that it does.

        Memory modes (for 24 GB cards): `offload_text_encoder` keeps the text encoder on the CPU and
        moves it to the GPU only to encode a prompt not yet in the cache; `offload_transformers` keeps
        both DiTs on the CPU and moves each to the GPU for its pass (slow: PCIe-bound, ~0.4 s per step
        for fp8 at 25 GB/s); `vae_tiling` decodes 2048^2 in tiles. `compile_blocks` compiles each
        transformer block (regional torch.compile: one compiled block reused 34 times); a string
        names the torch.compile backend.
        """
        check_device(device)
        if fp8_mode == "fp8_matmul" and not fp8_matmul_supported(device):
            raise ValueError(
                f"fp8_mode='fp8_matmul' needs fp8 tensor cores (compute capability >= 8.9: Ada, Hopper); "
                f"{device} has none: use fp8_mode='dequantize_once' (fastest) or 'dequantize_per_call'"
            )
        if (source is None) == (model_configs is None):
            raise ValueError("pass either a source (folder or repo id) or model_configs=[ModelConfig(...), ...]")
        if source is not None:
            paths = resolve_source(source, revision, tokenizer_source, load_unconditional)
        else:
            paths = resolve_model_configs(model_configs, tokenizer_config)
            if not load_unconditional:
                paths.pop("unconditional_transformer", None)
        t0 = time.perf_counter()
        dit_device = "cpu" if offload_transformers else device
        transformer, t_info = load_transformer(paths["transformer"], torch_dtype, dit_device, fp8_mode)
        uncond, u_info = None, None
        if "unconditional_transformer" in paths:
            uncond, u_info = load_transformer(paths["unconditional_transformer"], torch_dtype, dit_device, fp8_mode)
        else:
            log.warning(
                "no unconditional_transformer loaded: the conditional transformer serves the unconditional "
                "branch with empty text (DiffSynth's fallback; images differ from the official method)"
            )
        text_device = "cpu" if offload_text_encoder else device
        text_encoder, te_info = load_text_encoder(paths["text_encoder"], torch_dtype, text_device)
        vae, vae_info = load_vae(paths["vae"], torch_dtype, device)
        if vae_tiling:
            vae.enable_tiling()
        tokenizer = load_tokenizer(paths["tokenizer"])
        if compile_blocks:
            backend = compile_blocks if isinstance(compile_blocks, str) else "inductor"
            for net in (transformer, uncond):
                for block in net.layers if net is not None else ():
                    block.compile(backend=backend, dynamic=True)
        info = {
            "source": source or [f"{m.model_id or m.path}:{m.origin_file_pattern or ''}" for m in model_configs],
            "revision": revision,
            "dtype": str(torch_dtype).replace("torch.", ""),
            "device": str(device),
            "format": t_info["format"],
            "layout": t_info["layout"],
            "fp8_mode": t_info["fp8_mode"],
            # which path each Linear actually takes, e.g. {"fp8_matmul": 136, "dequantize_per_call": 108}
            "fp8_paths": fp8_paths(transformer) if t_info["format"] == "fp8" else None,
            "unconditional": "unconditional_transformer" if uncond is not None else "conditional fallback",
            "offload": [
                name
                for name, on in (("text_encoder", offload_text_encoder), ("transformers", offload_transformers))
                if on
            ],
            "vae_tiling": vae_tiling,
            "compile_blocks": compile_blocks,
            "fingerprints": {
                "transformer": t_info["fingerprint"],
                "unconditional_transformer": u_info["fingerprint"] if u_info else None,
                "text_encoder": te_info["fingerprint"],
                "vae": vae_info["fingerprint"],
            },
            "paths": {k: str(v) for k, v in paths.items()},
            "load_s": round(time.perf_counter() - t0, 3),
        }
        log.info("loaded Ideogram 4 (%s, %s, %s) in %.1f s", info["format"], info["dtype"], device, info["load_s"])
        return cls(
            transformer,
            text_encoder,
            vae,
            tokenizer,
            uncond,
            device=device,
            dtype=torch_dtype,
            info=info,
            offload_text_encoder=offload_text_encoder,
            offload_transformers=offload_transformers,
        )

    def describe(self) -> dict:
        return dict(self.info)

    # --- text ----------------------------------------------------------------------------------

    def encode_prompt(self, caption: str) -> tuple[torch.Tensor, bool]:
        """(1, Lt, 13 * hidden) features in the compute dtype, on the CPU; cached per caption string.

        The cache lives in CPU memory (a 1000-token caption is ~100 MB of features): a long sweep must
        not fill the GPU that the offload options are trying to spare.
        """
        if caption in self._text_cache:
            self._text_cache.move_to_end(caption)
            return self._text_cache[caption], True
        ids = torch.tensor([tokenize(self.tokenizer, caption)])
        te_device = next(self.text_encoder.parameters()).device
        features = self.text_encoder(ids.to(te_device), torch.ones_like(ids, device=te_device))
        features = features.to(device="cpu", dtype=self.dtype)
        self.text_encoder_calls += 1
        self._text_cache[caption] = features
        if len(self._text_cache) > self._text_cache_size:
            self._text_cache.popitem(last=False)
        return features, False

    def _encode_all(self, captions: list[str]) -> list[tuple[torch.Tensor, bool]]:
        """With offload_text_encoder, the encoder visits the GPU once per call, only if a caption is new."""
        visit = (
            self.offload_text_encoder and self.device.type != "cpu" and any(c not in self._text_cache for c in captions)
        )
        if not visit:
            return [self.encode_prompt(c) for c in captions]
        self.text_encoder.to(self.device)
        try:
            return [self.encode_prompt(c) for c in captions]
        finally:
            self.text_encoder.to("cpu")

    def _pack_text(self, captions: list[str]) -> tuple[torch.Tensor, list[int], list[bool]]:
        """Left-pad each caption's features to the longest: (B, Lt_max, F) on the pipeline device."""
        encoded = self._encode_all(captions)
        lengths = [f.shape[1] for f, _ in encoded]
        width = max(lengths)
        packed = torch.zeros(len(captions), width, encoded[0][0].shape[-1], dtype=self.dtype, device=self.device)
        for b, (f, _) in enumerate(encoded):
            packed[b, width - f.shape[1] :] = f[0].to(self.device, non_blocking=True)
        return packed, lengths, [hit for _, hit in encoded]

    # --- sampling ------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str | dict],
        seeds: list[int | None] | None = None,
        *,
        height: int = 1024,
        width: int = 1024,
        num_inference_steps: int = 48,
        guidance_schedule: list[float] | None = None,
        cfg_scale: float = 7.0,
        mu: float = 0.0,
        std: float = 1.5,
        final_step: str = "official",
        negative_prompt: str | dict | list = "",
        input_image=None,
        denoising_strength: float = 1.0,
        rand_device: str = "cpu",
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        progress: bool = True,
        step_callback: Callable[[int, int], None] | None = None,
    ) -> GenerationOutput:
        """One image per prompt; prompts[i] uses seeds[i]. All images of the call share one forward pass."""
        B = len(prompts)
        if B == 0:
            raise ValueError("prompts is empty")
        seeds = list(seeds) if seeds is not None else [None] * B
        if len(seeds) != B:
            raise ValueError(f"got {len(seeds)} seeds for {B} prompts: give one seed per prompt")
        check_size(height, width)
        steps = num_inference_steps
        if guidance_schedule is None:
            guidance_schedule = [float(cfg_scale)] * steps
        guidance_schedule = [float(w) for w in guidance_schedule]
        if len(guidance_schedule) != steps:
            raise ValueError(
                f"guidance_schedule has {len(guidance_schedule)} entries for num_inference_steps={steps}: give one per step"
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r}: use one of {OUTPUT_TYPES}")
        if input_image is None and denoising_strength != 1.0:
            raise ValueError(
                f"denoising_strength={denoising_strength} needs an input_image (without one, leave it at 1.0)"
            )
        times = sampling.timesteps(steps, height, width, mu, std, final_step, denoising_strength)
        gh, gw = height // TOKEN_PIXELS, width // TOKEN_PIXELS
        captions = [serialize_caption(p) for p in prompts]
        negatives = negative_prompt if isinstance(negative_prompt, list) else [negative_prompt] * B
        negatives = [serialize_caption(n) if n else "" for n in negatives]
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

        # Text (cached per caption; a sweep over seeds/cfg/steps encodes each prompt once).
        t0 = time.perf_counter()
        text, text_lengths, hits = self._pack_text(captions)
        cond_layout = build_layout(self.transformer.config, text_lengths, gh, gw, B, self.device, self.dtype)
        use_negative = any(negatives)
        if use_negative:
            # Classic CFG: the conditional network reads the negative prompt for the unconditional branch.
            neg_text, neg_lengths, _ = self._pack_text([n or "" for n in negatives])
            uncond_net, uncond_text = self.transformer, neg_text
            uncond_layout = build_layout(self.transformer.config, neg_lengths, gh, gw, B, self.device, self.dtype)
            uncond_name = "conditional transformer + negative prompt"
        else:
            uncond_net = self.unconditional_transformer or self.transformer
            uncond_text = None
            uncond_layout = build_layout(uncond_net.config, None, gh, gw, B, self.device, self.dtype)
            uncond_name = (
                "unconditional_transformer" if self.unconditional_transformer is not None else "conditional fallback"
            )
        t_text = time.perf_counter() - t0

        # Noise: drawn per seed on rand_device in fp32, so a seed gives the same image on any GPU.
        seeds = [s if s is not None else random.randrange(2**31) for s in seeds]
        if latents is None:
            noise = torch.cat(
                [
                    torch.randn(
                        (1, gh * gw, 128),
                        generator=torch.Generator(rand_device).manual_seed(s),
                        device=rand_device,
                        dtype=torch.float32,
                    )
                    for s in seeds
                ]
            )
        else:
            if tuple(latents.shape) != (B, gh * gw, 128):
                raise ValueError(f"latents has shape {tuple(latents.shape)}; expected {(B, gh * gw, 128)}")
            noise = latents
        z = noise.to(device=self.device, dtype=torch.float32)
        if input_image is not None and denoising_strength < 1.0:
            # At strength 1 sampling starts from (numerically) pure noise: exactly text-to-image.
            images = input_image if isinstance(input_image, (list, tuple)) else [input_image] * B
            x0 = self.vae.encode(from_pil(images, height, width).to(self.device))
            z = sampling.noise_to(x0, z, float(times[0]))

        t1 = time.perf_counter()
        from tqdm.auto import tqdm

        try:
            for i in tqdm(range(steps), desc="sampling", disable=not progress, leave=False):
                t, t_next = times[i], times[i + 1]
                t_batch = t.expand(B).to(self.device)
                v = self._run(self.transformer, z, t_batch, cond_layout, text)
                w = guidance_schedule[i]
                if w != 1.0:  # w = 1 means conditional only: the unconditional pass would be multiplied by 0
                    v = sampling.guide(v, self._run(uncond_net, z, t_batch, uncond_layout, uncond_text), w)
                z = sampling.euler_step(z, v, float(t), float(t_next))
                if step_callback is not None:
                    step_callback(i, steps)
        except torch.OutOfMemoryError as e:
            raise torch.OutOfMemoryError(f"{e}\n{self.memory_advice(B, height, width)}") from e
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t_sample = time.perf_counter() - t1

        t2 = time.perf_counter()
        images = None
        if output_type != "latent":
            pixels = to_uint8(self.vae.decode(z, gh, gw))
            if output_type == "np":
                images = pixels.numpy()
            else:
                from PIL import Image

                images = [Image.fromarray(p.numpy()) for p in pixels]
        t_decode = time.perf_counter() - t2
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
        return GenerationOutput(
            images=images,
            latents=z.cpu(),
            captions=captions,
            seeds=seeds,
            timings={"text_encoding_s": t_text, "sampling_s": t_sample, "decoding_s": t_decode},
            text_cache_hits=hits,
            peak_memory_bytes=peak,
            unconditional=uncond_name,
        )

    def _run(self, net, z, t, layout, text):
        if not self.offload_transformers or self.device.type == "cpu":
            return net(z, t, layout, text)
        net.to(self.device)
        try:
            return net(z, t, layout, text)
        finally:
            net.to("cpu")

    def memory_advice(self, batch: int, height: int, width: int) -> str:
        """What would fit, in the order that costs least speed."""
        tips = []
        if batch > 1:
            tips.append(f"generate fewer images per call (batch of {batch} now; the runner's batch_size=1)")
        if self.info.get("fp8_mode") == "dequantize_once":
            tips.append("keep fp8 weights in 1 byte: fp8_mode='dequantize_per_call' (model.fp8_mode)")
        if not self.offload_text_encoder:
            tips.append("offload_text_encoder=True (model.offload=text_encoder): frees the ~8-15 GB text encoder")
        if height * width >= 2048 * 2048 and not getattr(self.vae.autoencoder, "use_tiling", False):
            tips.append("vae_tiling=True (model.vae_tiling=true) for 2048^2 decoding")
        if self.unconditional_transformer is not None:
            tips.append(
                "load_unconditional=False (model.load_unconditional=false) halves DiT memory, at a quality cost"
            )
        if not self.offload_transformers:
            tips.append("offload_transformers=True (model.offload=transformers): slow, but fits small GPUs")
        return "Out of GPU memory. Options: " + "; ".join(tips)

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
        rand_device: str = "cpu",
        num_inference_steps: int = 50,
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
        batch = isinstance(prompt, list)
        prompts = prompt if batch else [prompt]
        seeds = seed if isinstance(seed, list) else [seed] * len(prompts)
        out = self.generate(
            prompts,
            seeds,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_schedule=guidance_schedule,
            cfg_scale=cfg_scale,
            mu=mu,
            std=std,
            final_step=final_step,
            negative_prompt=negative_prompt,
            input_image=input_image,
            denoising_strength=denoising_strength,
            rand_device=rand_device,
            latents=latents,
            output_type=output_type,
            progress=progress,
        )
        if output_type == "latent":
            return out.latents
        return out.images if batch else out.images[0]
