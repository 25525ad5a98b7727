"""Streamed offload (models/offload.py), run on the CPU with the inline stand-in for the CUDA streams.

On a CPU the streamed DiT must equal the resident one bit for bit (the copies are exact and the
kernels the same); the schedule is checked from the stand-in's log: each block's copy is issued
before the previous block computes (prefetch), compute waits for its block's copy, a slot is
refilled only after compute released it, and the pinned copies are made once.
The CUDA side (side stream, events, pinned memory, the time per step) runs in bench/gpu_check.py.
"""

import pytest
import torch
import torch.nn as nn

from ideogram4 import Ideogram4Pipeline
from ideogram4.models.offload import SLOTS, InlineStreams, stream_blocks

FAST = dict(height=64, width=64, num_inference_steps=3, guidance_schedule=[7.0, 7.0, 3.0], progress=False)


def load(folder, **kw):
    return Ideogram4Pipeline.from_pretrained(folder, torch_dtype=torch.float32, device="cpu", **kw)


def streamed(pipe) -> dict:
    """Stream both DiTs of `pipe` on the CPU; a forward pre-hook logs when each block computes."""
    logs = {}
    for name in ("transformer", "unconditional_transformer"):
        net = getattr(pipe, name)
        streams = InlineStreams()
        stream_blocks(net, "cpu", streams)
        for i, block in enumerate(net.layers):
            block.register_forward_pre_hook(lambda *_, i=i, log=streams.log: log.append(("run", i)))
        logs[name] = streams
    return logs


def latents(pipe, **kw):
    return pipe.generate(["a red fox in the snow"], [3], output_type="latent", **FAST, **kw).latents


@pytest.mark.slow
@pytest.mark.parametrize("layout, options", [("original", {}), ("fp8", {"fp8_mode": "fp8_matmul"})])
def test_streamed_equals_resident_bit_for_bit(tiny_original, tiny_fp8, layout, options):
    folder = tiny_original if layout == "original" else tiny_fp8
    resident = latents(load(folder, **options))
    pipe = load(folder, **options)
    if layout == "fp8":
        assert pipe.transformer.layers[0].feed_forward.gate_up_fused  # shared storage is streamed as one
    logs = streamed(pipe)
    first, second = latents(pipe), latents(pipe)
    assert torch.equal(first, resident) and torch.equal(second, resident)
    assert resident.abs().mean() > 0.1
    for streams in logs.values():
        assert streams.log.count(("run", 0)) >= 2


@pytest.mark.slow
def test_schedule_prefetches_one_block_ahead_and_pins_once(tiny_original):
    pipe = load(tiny_original)
    net = pipe.transformer
    logs = streamed(pipe)
    pins = [e for e in logs["transformer"].log if e[0] == "pin"]
    assert pins  # made at set-up
    latents(pipe)
    log = [e for e in logs["transformer"].log if e[0] != "pin"]
    assert [e for e in logs["transformer"].log if e[0] == "pin"] == pins  # never again per pass
    n = len(net.layers)
    passes = log.count(("run", 0))
    assert passes == FAST["num_inference_steps"]
    starts = [k for k, e in enumerate(log) if e == ("copy", 0)]  # each pass fetches its first block
    assert len(starts) == passes
    for start, end in zip(starts, [*starts[1:], len(log)]):
        one = log[start:end]
        at = {e: k for k, e in enumerate(one)}
        assert len(at) == len(one) == 4 * n  # copy, wait, run, release: once per block and pass
        for i in range(n):
            assert at[("wait", i)] < at[("run", i)] < at[("release", i)]
            assert at[("copy", i)] < at[("wait", i)]
            if i + 1 < n:
                assert at[("copy", i + 1)] < at[("run", i)]  # fetched while block i computes
            if i + SLOTS < n:
                assert at[("release", i)] < at[("copy", i + SLOTS)]  # the slot is free before it is refilled


@pytest.mark.slow
def test_blocks_rest_in_their_host_copies_between_passes(tiny_original):
    pipe = load(tiny_original)
    streamer_log = streamed(pipe)["transformer"]
    net = pipe.transformer
    latents(pipe)
    streamer = net.block_streamer
    for i, block in enumerate(net.layers):
        host_storages = {b.untyped_storage().data_ptr() for b in streamer.hosts[i].buffers}
        for p in block.parameters():
            assert p.untyped_storage().data_ptr() in host_storages
    block_bytes = sum(p.numel() * p.element_size() for p in net.layers.parameters())
    pinned_bytes = sum(n for kind, n in streamer_log.log if kind == "pin") * 1  # uint8 buffers
    assert pinned_bytes == block_bytes  # one copy of every block tensor, nothing twice


@pytest.mark.slow
def test_lora_attached_after_streaming_is_streamed_too(tiny_original, tmp_path):
    """A LoRA's low-rank buffers arrive after set-up: they are pinned and streamed with their block."""
    from lora_writers import random_lora, write_diffsynth

    pipe = load(tiny_original)
    shapes = {n: (m.out_features, m.in_features) for n, m in pipe.transformer.named_modules() if type(m) is nn.Linear}
    path = tmp_path / "style.safetensors"
    write_diffsynth(path, random_lora(shapes, seed=5))
    resident = load(tiny_original)
    resident.load_lora(str(path), scale=0.8)
    # The LoRA reader may hand out tensors at any address; CPU BLAS rounds differently for unaligned
    # operands (~1e-7). The streamed copies are aligned: give the resident twin aligned ones too.
    for module in resident.transformer.modules():
        for key, buffer in module._buffers.items():
            module._buffers[key] = buffer.clone()
    streamed(pipe)
    base = latents(pipe)
    pipe.load_lora(str(path), scale=0.8)
    with_lora = latents(pipe)
    assert torch.equal(with_lora, latents(resident))
    assert (with_lora - base).abs().max() > 1e-3


def test_pinned_arena_packs_copies_into_chunks(monkeypatch):
    """Pinned memory is allocated in power-of-two sizes by torch; copies are packed into chunks instead."""
    from ideogram4.models import offload

    monkeypatch.setattr(offload, "PINNED_CHUNK_BYTES", 4096)
    allocations = []
    arena = offload.PinnedArena(lambda n: allocations.append(n) or torch.empty(n, dtype=torch.uint8))
    sizes = [500] * 9 + [3000]
    tensors = [torch.randint(0, 255, (n,), dtype=torch.uint8) for n in sizes]
    copies = [arena.copy(t) for t in tensors]
    assert all(torch.equal(c, t) for c, t in zip(copies, tensors))
    assert allocations == [4096, 4096, 3000]  # eight 512-aligned copies fill a chunk; 3000 > 4096 / 8: alone
    starts = [c.data_ptr() - c.untyped_storage().data_ptr() for c in copies]
    assert starts == [512 * k for k in range(8)] + [0, 0]


def test_byte_ranges_keep_shared_memory_together_and_skip_foreign_bytes():
    from ideogram4.models.offload import byte_ranges

    fused = torch.zeros(2, 64, 32)  # two tensors back to back in one storage (like w1|w3)
    chunk = torch.zeros(1 << 20, dtype=torch.uint8)  # a pinned chunk: this block's tensors far apart in it
    near, far = chunk[:1024], chunk[600_000:601_000]
    entries = [(None, name, True, t) for name, t in (("w1", fused[0]), ("w3", fused[1]), ("a", near), ("b", far))]
    runs = byte_ranges(entries)
    assert [(lo, hi, [e[1] for e in members]) for lo, hi, members in runs] == [
        (0, 2 * 64 * 32 * 4, ["w1", "w3"]),
        (0, 1024, ["a"]),
        (600_000, 601_000, ["b"]),
    ]
