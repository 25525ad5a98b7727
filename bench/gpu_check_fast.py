"""gpu_check sections for the fast paths: fp8 with fast accumulation, the CUDA-graph mode, streamed offload.

Each times the same loop as gpu_check_dit (same noise, features, schedule) so its latents can be held
against ours_bf16's:
- ours_fp8_matmul_fast_accum: the fp8 twins of ours_fp8_matmul with cuBLAS fast accumulation on.
- ours_reduce_overhead: what from_pretrained(compile_mode="reduce-overhead") runs: the whole DiT
  compiled as one graph and replayed as CUDA graphs, text padded to the 64-token bucket (left padding,
  masked), `torch.compiler.cudagraph_mark_step_begin()` at every step. --small: the same whole-DiT
  path with the small backend (no CUDA graphs on a CPU).
- ours_offload_streamed: what from_pretrained(offload_transformers=True) runs: twins of the bf16 DiTs
  whose blocks live in pinned CPU memory and stream to the GPU one block ahead (models/offload.py);
  the non-block tensors are shared with ours_bf16. Reports the bytes streamed per step, the transfer
  rate that implies, and the GPU memory the streamed DiTs need beyond the resident ones.
"""

from __future__ import annotations

import _common as C
import gpu_check_dit as dit
import torch

from ideogram4 import loading
from ideogram4.models.offload import InlineStreams, stream_blocks
from ideogram4.models.transformer import Ideogram4Transformer
from ideogram4.spec import CUDA_GRAPH_TEXT_BUCKET


def ours_fp8_matmul_fast_accum(bench: dit.DitBench) -> dict:
    if bench.fp8 is None:
        return {"status": "skipped", "reason": "needs the fp8 twins of ours_fp8_matmul"}
    cond, uncond = bench.fp8
    for net in (cond, uncond):
        for m in net.modules():
            if hasattr(m, "fast_accum"):
                m.fast_accum = True
    try:
        name = "ours_fp8_matmul_fast_accum"
        out = dit.measure(bench, name, lambda marks: dit.ours_loop(bench, cond, uncond, marks), [cond, uncond])
    finally:
        bench.fp8 = None  # the twins go when this returns
    out["fast_accum"] = True
    return out


def ours_reduce_overhead(bench: dit.DitBench, backend: str, mode: str | None) -> dict:
    cond, uncond = bench.cond, bench.uncond
    opts = dit.compile_options(bench, backend, mode)
    scope = loading.compile_nets([cond, uncond], opts, scope="model")
    text_len = -(-bench.text_tokens // CUDA_GRAPH_TEXT_BUCKET) * CUDA_GRAPH_TEXT_BUCKET
    step_begin = torch.compiler.cudagraph_mark_step_begin

    def run(marks):
        return dit.ours_loop(bench, cond, uncond, marks, text_len=text_len, step_begin=step_begin)

    try:
        out = dit.measure(bench, "ours_reduce_overhead", run, [cond, uncond])
    finally:
        dit.uncompile(cond, uncond)
        torch._dynamo.reset()  # frees the CUDA-graph pools
    out["compile"] = {"backend": backend, "mode": mode, "scope": scope, "cuda_graphs": opts.cuda_graphs}
    out["text_rows"] = {"tokens": bench.text_tokens, "padded_to": text_len, "masked": text_len != bench.text_tokens}
    return out


def streamed_twin(net: Ideogram4Transformer, device: str, cuda: bool) -> Ideogram4Transformer:
    """A module holding `net`'s tensors whose blocks are then copied into pinned CPU memory and streamed
    (the non-block tensors stay shared with `net` on the GPU; `net` keeps its resident blocks)."""
    with torch.device("meta"):
        twin = Ideogram4Transformer(net.config)
    twin.load_state_dict(net.state_dict(), strict=True, assign=True)
    twin.eval().requires_grad_(False)
    stream_blocks(twin, device, None if cuda else InlineStreams(device))
    return twin


def ours_offload_streamed(bench: dit.DitBench) -> dict:
    cond, uncond = (streamed_twin(net, bench.device, bench.cuda) for net in (bench.cond, bench.uncond))
    out = dit.measure(
        bench, "ours_offload_streamed", lambda marks: dit.ours_loop(bench, cond, uncond, marks), [cond, uncond]
    )
    block_bytes = sum(C.tensor_bytes(net.layers) for net in (cond, uncond))
    median = out["per_step_s"]["median"]
    out["streamed_bytes_per_step"] = block_bytes  # every block of both DiTs crosses once per guided step
    out["streamed_gb_per_s"] = block_bytes / median / 1e9
    out["gpu_bytes_beyond_resident"] = out["peak_above_resident_bytes"]  # slots + activations, not the blocks
    out["gpu_bytes_needed_estimate"] = (
        sum(C.tensor_bytes(net) - C.tensor_bytes(net.layers) for net in (cond, uncond))
        + (out["peak_above_resident_bytes"] or 0)
        if bench.cuda
        else None
    )
    out["note"] = (
        "bf16 DiTs streamed block by block from pinned memory on a side stream; per step = both DiTs' "
        "blocks over PCIe once; gpu_bytes_needed_estimate = non-block weights + streaming peak"
    )
    return out
