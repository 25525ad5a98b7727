"""gpu_check checks through the public pipeline API, plus the full-size VAE, nf4 and offload transfer.

Pipeline-level checks (CUDA noise, peak memory and GPU name, offload modes, regional compile) run a tiny
random pipeline (`ideogram4.tiny`, fp32, 128^2) on the device: they check behaviour, not speed, and
need no full-size text encoder. Each check returns {ok: bool|None, value, detail, reason}; `ok` is None
with a `reason` where the check needs CUDA, and the CPU result then stands in under `cpu_stand_in`.
"""

from __future__ import annotations

import inspect
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import _common as C
import torch

from ideogram4 import Ideogram4Pipeline
from ideogram4.tiny import TINY_VAE, build_tiny_checkpoint

PROMPT = "a red bicycle leaning on a white wall"
SEED = 7
SAME_FP32 = 1e-5  # the same fp32 weights on the same device: only kernel order may differ


def needs_cuda(result: dict, what: str) -> dict:
    """A CPU run exercised the code path; the check itself is about CUDA."""
    return {"ok": None, "value": None, "reason": f"needs CUDA ({what})", "cpu_stand_in": result}


def max_abs(a, b) -> float:
    return (a.float().cpu() - b.float().cpu()).abs().max().item()


class TinyPipelines:
    """One tiny checkpoint on disk, pipelines loaded from it with different options, one eager reference."""

    def __init__(self, device: str, resolution: int = 128, steps: int = 2):
        self.device, self.resolution, self.steps = device, resolution, steps
        self.cuda = device.startswith("cuda")
        self._tmp = tempfile.TemporaryDirectory(prefix="gpu_check_tiny_")
        self.folder = build_tiny_checkpoint(Path(self._tmp.name) / "tiny", layout="original")
        self.eager = self.load()
        self._reference: dict[int, torch.Tensor] = {}

    def load(self, **options) -> Ideogram4Pipeline:
        return Ideogram4Pipeline.from_pretrained(
            str(self.folder), torch_dtype=torch.float32, device=self.device, **options
        )

    def generate(self, pipe, steps: int | None = None, **kw):
        r = self.resolution
        return pipe.generate(
            [PROMPT],
            [SEED],
            height=r,
            width=r,
            num_inference_steps=steps or self.steps,
            output_type="latent",
            progress=False,
            **kw,
        )

    def reference(self, steps: int | None = None) -> torch.Tensor:
        steps = steps or self.steps
        if steps not in self._reference:
            self._reference[steps] = self.generate(self.eager, steps).latents
        return self._reference[steps]

    def close(self):
        self._tmp.cleanup()


def rand_device_cuda(tp: TinyPipelines) -> dict:
    """rand_device='cuda': reproducible, and the noise is torch.randn on a seeded CUDA generator."""
    dev = "cuda" if tp.cuda else "cpu"
    a = tp.generate(tp.eager, rand_device=dev).latents
    b = tp.generate(tp.eager, rand_device=dev).latents
    n = (tp.resolution // 16) ** 2
    noise = torch.randn((1, n, 128), generator=torch.Generator(dev).manual_seed(SEED), device=dev)
    c = tp.generate(tp.eager, latents=noise).latents
    result = {
        "ok": max_abs(a, b) <= SAME_FP32 and max_abs(a, c) <= SAME_FP32,
        "value": {"repeat_max_abs": max_abs(a, b), "vs_explicit_noise_max_abs": max_abs(a, c)},
        "detail": f"rand_device={dev!r}: two calls, and a call with that generator's noise passed as latents",
        "reason": None,
    }
    if tp.cuda:
        result["value"]["vs_cpu_noise_max_abs"] = max_abs(a, tp.generate(tp.eager, rand_device="cpu").latents)
        return result
    return needs_cuda(result, "rand_device='cuda'")


def manifest_peak_memory_gpu_name(tp: TinyPipelines) -> dict:
    """What the run manifest records: GenerationOutput.peak_memory_bytes and torch.cuda.get_device_name."""
    out = tp.generate(tp.eager)
    peak = out.peak_memory_bytes
    if not tp.cuda:
        result = {"ok": peak is None, "value": peak, "detail": "peak_memory_bytes is None on the CPU, as documented"}
        return needs_cuda(result, "peak memory and GPU name are CUDA facts")
    name = torch.cuda.get_device_name()
    return {
        "ok": isinstance(peak, int) and peak > 0 and bool(name),
        "value": {"peak_memory_bytes": peak, "gpu_name": name},
        "detail": "tiny pipeline on CUDA, one generate call",
        "reason": None,
    }


def _first_param_device(module) -> str | None:
    return str(next(module.parameters()).device) if isinstance(module, torch.nn.Module) else None


def offload_text_encoder(tp: TinyPipelines) -> dict:
    pipe = tp.load(offload_text_encoder=True)
    out = tp.generate(pipe)
    diff = max_abs(out.latents, tp.reference())
    te_device = _first_param_device(getattr(pipe, "text_encoder", None))
    result = {
        "ok": diff <= SAME_FP32 and "text_encoder" in pipe.describe().get("offload", []),
        "value": {"max_abs_vs_eager": diff, "text_encoder_device_after": te_device},
        "detail": "tiny pipeline: same latents as without offload; describe()['offload'] names it",
        "reason": None,
    }
    if not tp.cuda:
        return needs_cuda(result, "on the CPU offloading moves nothing")
    result["ok"] = result["ok"] and (te_device in (None, "cpu"))
    return result


def offload_transformers(tp: TinyPipelines) -> dict:
    """One step with offload_transformers: on CUDA the blocks stream from pinned memory (models/offload.py);
    the full-size cost per step is the ours_offload_streamed variant."""
    pipe = tp.load(offload_transformers=True)
    t0 = time.perf_counter()
    out = tp.generate(pipe, steps=1)
    step_s = time.perf_counter() - t0
    diff = max_abs(out.latents, tp.reference(steps=1))
    streamer = getattr(pipe.transformer, "block_streamer", None)
    result = {
        "ok": diff <= SAME_FP32,
        "value": {"max_abs_vs_eager": diff, "tiny_step_s": step_s, "streamed": streamer is not None},
        "detail": "tiny pipeline, one step: same latents as without offload",
        "reason": None,
    }
    if not tp.cuda:
        return needs_cuda(result, "on the CPU offloading moves nothing")
    blocks_on_cpu = all(p.device.type == "cpu" and p.is_pinned() for p in pipe.transformer.layers.parameters())
    result["value"]["blocks_pinned_on_cpu"] = blocks_on_cpu
    result["ok"] = result["ok"] and streamer is not None and blocks_on_cpu
    return result


def no_host_sync_in_loop(tp: TinyPipelines) -> dict:
    """The denoising loop under torch.cuda.set_sync_debug_mode("error"): any host-device synchronisation
    inside it (an .item(), a pageable copy, a blocking transfer) raises. Resident and streamed DiTs."""
    from ideogram4 import sampling

    real = sampling.denoise

    def strict(*args, **kwargs):
        if not tp.cuda:
            return real(*args, **kwargs)
        torch.cuda.set_sync_debug_mode("error")
        try:
            return real(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    sampling.denoise = strict
    try:
        for pipe in (tp.eager, tp.load(offload_transformers=True)):
            tp.generate(pipe, steps=2)
    finally:
        sampling.denoise = real
    result = {
        "ok": True,
        "value": "no synchronisation in 2 steps, resident and streamed",
        "detail": "tiny pipeline; sampling.denoise run under torch.cuda.set_sync_debug_mode('error')",
        "reason": None,
    }
    return result if tp.cuda else needs_cuda(result, "sync debug mode is a CUDA feature")


def vae_tiling(device: str, dtype: torch.dtype, small: bool) -> dict:
    """Decode 2048^2 with tiling (full-size FLUX.2 VAE, random weights, 1024^2 tiles); --small: the tiny
    VAE at 192^2 in 128^2 tiles (2 x 2 overlapping tiles, as 2048^2 in 1024^2 tiles gives 3 x 3)."""
    from diffusers import AutoencoderKLFlux2

    from ideogram4.models.vae import Ideogram4VAE

    res, ae = (192, AutoencoderKLFlux2(**TINY_VAE, sample_size=128)) if small else (2048, AutoencoderKLFlux2())
    vae = Ideogram4VAE(ae.to(device, dtype).eval().requires_grad_(False)).to(device)
    grid = res // 16
    tokens = torch.randn((1, grid * grid, 128), generator=torch.Generator().manual_seed(0)).to(device)
    vae.decode(torch.randn((1, 16, 128)).to(device), 4, 4)  # warm-up: kernel selection out of the timings
    runs = {}
    for tiled in (True, False):
        try:
            runs[tiled] = _decode(vae, ae, tokens, grid, tiled, device.startswith("cuda"))
        except torch.cuda.OutOfMemoryError as e:  # the untiled decode may not fit: keep the tiled result
            runs[tiled] = (None, None, None, f"out of memory: {str(e)[:200]}")
            torch.cuda.empty_cache()
    image, seconds, tiles, peak = runs[True]
    ok = tuple(image.shape) == (1, 3, res, res) and bool(torch.isfinite(image).all()) and tiles > 1
    return {
        "ok": ok,
        "value": {"tiles": tiles, "decode_s": seconds, "peak_memory_bytes": peak, "untiled_decode_s": runs[False][1]},
        "untiled_peak_memory_bytes": runs[False][3],
        "detail": f"{res}^2, {'tiny VAE' if small else 'full-size FLUX.2 VAE'} (random weights, {dtype}): "
        "right shape, finite, decoded in more than one tile",
        "reason": None,
    }


def _decode(vae, ae, tokens, grid: int, tiled: bool, cuda: bool) -> tuple:
    """(image, seconds, decoder calls = tiles, peak bytes or None) of one decode."""
    vae.enable_tiling(tiled)
    calls = []
    hook = ae.decoder.register_forward_hook(lambda *_: calls.append(1))
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        image = vae.decode(tokens, grid, grid)
        if cuda:
            torch.cuda.synchronize()
    finally:
        hook.remove()
    return image, time.perf_counter() - t0, len(calls), torch.cuda.max_memory_allocated() if cuda else None


def nf4_one_step(bench, device: str) -> dict:
    """The full-size DiT quantised to nf4 by bitsandbytes, written, loaded by the loader, one guided step."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return {"ok": None, "value": None, "reason": "bitsandbytes is not importable (pip install '.[nf4]')"}
    if not device.startswith("cuda"):
        return {"ok": None, "value": None, "reason": "needs CUDA (bitsandbytes nf4 kernels)"}
    if bench is None or bench.cond is None:
        return {"ok": None, "value": None, "reason": "the full-size bf16 DiT was not built"}
    from ideogram4.checkpoints import load_transformer
    from ideogram4.models.transformer import build_layout

    with tempfile.TemporaryDirectory(prefix="gpu_check_nf4_") as tmp:
        folder = write_nf4_transformer(bench.cond, Path(tmp) / "transformer")
        nf4, info = load_transformer(folder, bench.dtype, device)
    n, dev, dt = bench.grid, device, bench.dtype
    z, t = bench.noise.to(dev), bench.times[:1].to(dev)
    cond_layout = build_layout(nf4.config, [bench.text_tokens], n, n, 1, dev, dt)
    uncond_layout = build_layout(nf4.config, None, n, n, 1, dev, dt)

    def step(net):
        return net(z, t, cond_layout, bench.text), net(z, t, uncond_layout, None)

    reference = step(bench.cond)
    step(nf4)  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    got = step(nf4)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    cos = min(C.cosine(a, b) for a, b in zip(got, reference))
    finite = all(bool(torch.isfinite(g).all()) for g in got)
    return {
        "ok": finite and cos >= 0.9,
        "value": {"velocity_cosine_vs_bf16": cos, "step_s": seconds, "format": info.get("format")},
        "tolerance": "cosine >= 0.9 (nf4 is lossy; this catches broken kernels, not quality)",
        "detail": "one guided step = cond + uncond pass of the nf4 DiT (the conditional weights serve both)",
        "reason": None,
    }


def write_nf4_transformer(model: torch.nn.Module, folder: Path) -> Path:
    """Every block Linear as bitsandbytes serialises a Linear4bit (nf4, no double quantisation)."""
    import bitsandbytes as bnb
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    linears = {
        f"{n}.weight" for n, m in model.named_modules() if n.startswith("layers.") and isinstance(m, torch.nn.Linear)
    }
    sd = {}
    for key, value in model.state_dict().items():
        if key not in linears:
            sd[key] = value.detach().cpu().contiguous()
            continue
        param = bnb.nn.Params4bit(value.detach(), requires_grad=False, quant_type="nf4", compress_statistics=False)
        param = param.to(value.device)  # quantises
        sd[key] = param.data.cpu().contiguous()
        for k, v in param.quant_state.as_dict(packed=True).items():
            sd[f"{key}.{k}"] = v.cpu().contiguous()
    save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
    config = {**asdict(model.config), "mrope_section": list(model.config.mrope_section)}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def pipeline_compile_blocks(tp: TinyPipelines, backend: str, mode: str | None) -> dict:
    """from_pretrained(compile_blocks=...) (and compile_mode where the API has it) vs the eager pipeline."""
    params = inspect.signature(Ideogram4Pipeline.from_pretrained).parameters
    options = {"compile_blocks": backend}
    if "compile_mode" in params and mode:
        options["compile_mode"] = mode
    pipe = tp.load(**options)
    t0 = time.perf_counter()
    first = tp.generate(pipe).latents
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tp.generate(pipe)
    again_s = time.perf_counter() - t0
    diff = max_abs(first, tp.reference())
    return {
        "ok": diff <= 1e-4,
        "value": {"max_abs_vs_eager": diff, "first_call_s": first_s, "second_call_s": again_s},
        "tolerance": "max abs <= 1e-4 (fp32)",
        "detail": f"tiny pipeline, from_pretrained({options}); compile_mode in API: {'compile_mode' in params}",
        "reason": None,
    }
