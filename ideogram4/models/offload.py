"""Offload that streams: a DiT's blocks live in pinned CPU memory and reach the GPU one block ahead.

- Set-up, once: each block's tensors get one pinned CPU copy (per storage, so tensors sharing memory,
  like a fused w1|w3, stay one copy) and the block's parameters point at it; the pageable or GPU
  original is freed. Everything outside the blocks (embeddings, text projection, final layer: ~3 % of
  the weights) moves to the GPU for good.
- Per pass, from the DiT's block loop: `before(i)` makes the compute stream wait for block i's copy
  (an event), points the block's tensors at their GPU slot and starts copying block i + 1 into the
  other slot on a side stream (`non_blocking` from pinned memory: an asynchronous DMA that overlaps
  block i's compute); `after(i)` records on the compute stream that the slot may be overwritten and
  points the tensors back at their CPU copies. Ordering is by events only: no host synchronisation.
- Memory: the resident part plus two blocks per DiT on the GPU (bf16: 2 x 0.53 GB).

Cost per guided step (computed, not measured yet; gpu_check's `offload_streamed` section measures it):
every block crosses PCIe once per pass, 2 x 17.97 GB in bf16 per step: ~1.4 s at 25 GB/s (PCIe 4 x16),
~0.75 s at 48 GB/s (PCIe 5); fp8 weights half that. Compute hides behind the copies. Block 0 of each
pass is fetched when the pass starts (weights changed between passes, e.g. a LoRA merge, are seen).

A block's tensors are looked at again before each copy, so tensors added later (a LoRA's low-rank
buffers) are pinned and streamed too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

SLOTS = 2  # block i + 1 is copied while block i runs
# Pinned memory comes from torch's caching host allocator, which rounds every request up to a power of
# two (a 42 MB tensor takes 64 MB). Tensors are packed into chunks of this size instead: < 13 % waste
# for the DiT's tensors (the largest is 128 MB), against ~15 % tensor by tensor.
PINNED_CHUNK_BYTES = 2**30
PINNED_ALIGN = 512
RUN_GAP_BYTES = 4096  # tensors of one storage closer than this are copied as one range


@dataclass
class TensorRef:
    """Where one tensor of a block lives: module attribute, and its place inside a storage group."""

    module: nn.Module
    name: str
    is_param: bool
    group: int  # index into the block's storage groups
    dtype: torch.dtype
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int  # in elements of dtype, from the start of the group's byte range


@dataclass
class BlockHost:
    """One block's pinned CPU copy: byte buffers (one per storage) and the tensors inside them."""

    signature: tuple
    buffers: list[torch.Tensor]  # uint8, pinned on CUDA
    refs: list[TensorRef]
    host_views: list[torch.Tensor] = field(default_factory=list)


def view_of(buffer: torch.Tensor, ref: TensorRef) -> torch.Tensor:
    return torch.empty(0, dtype=ref.dtype, device=buffer.device).set_(
        buffer.untyped_storage(), ref.offset, ref.size, ref.stride
    )


def block_tensors(block: nn.Module) -> list[tuple[nn.Module, str, bool, torch.Tensor]]:
    out = []
    for module in block.modules():
        out += [(module, n, True, t) for n, t in module._parameters.items() if t is not None]
        out += [(module, n, False, t) for n, t in module._buffers.items() if t is not None]
    return out


def signature_of(tensors) -> tuple:
    return tuple((id(m), n) for m, n, _, _ in tensors)


def set_tensor(ref: TensorRef, value: torch.Tensor) -> None:
    if ref.is_param:
        ref.module._parameters[ref.name].data = value
    else:
        ref.module._buffers[ref.name] = value


class PinnedArena:
    """Copies byte tensors into chunks of PINNED_CHUNK_BYTES from `alloc` (pinned on CUDA), each copy
    starting PINNED_ALIGN-aligned; a copy larger than an eighth of a chunk gets its own allocation."""

    def __init__(self, alloc):
        self.alloc = alloc
        self.chunk: torch.Tensor | None = None  # the chunk being filled
        self.used = 0

    def copy(self, t: torch.Tensor) -> torch.Tensor:
        size = t.numel()
        if size > PINNED_CHUNK_BYTES // 8:
            return self.alloc(size).copy_(t)
        if self.chunk is None or self.used + size > PINNED_CHUNK_BYTES:
            self.chunk, self.used = self.alloc(PINNED_CHUNK_BYTES), 0
        out = self.chunk[self.used : self.used + size].copy_(t)
        self.used += -(-size // PINNED_ALIGN) * PINNED_ALIGN
        return out


class CudaStreams:
    """A side stream for the copies; events order them against the compute stream."""

    def __init__(self, device: torch.device):
        self.device = device
        self.side = torch.cuda.Stream(device)
        self.arena = PinnedArena(lambda n: torch.empty(n, dtype=torch.uint8, pin_memory=True))

    def pin(self, t: torch.Tensor) -> torch.Tensor:
        if t.device.type == "cpu" and t.is_pinned():
            return t
        return self.arena.copy(t)

    def retire(self, buffers: list[torch.Tensor]) -> None:
        """Buffers dropped while a side-stream copy may still write them: the allocator waits for it."""
        for b in buffers:
            b.record_stream(self.side)

    def event(self):
        return torch.cuda.Event()

    def copy(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], after, done, block: int) -> None:
        """On the side stream: wait for `after` (compute done with the slot), copy, record `done`."""
        with torch.cuda.stream(self.side):
            if after is not None:
                self.side.wait_event(after)
            for dst, src in pairs:
                dst.copy_(src, non_blocking=True)
            done.record(self.side)

    def wait(self, event, block: int) -> None:
        torch.cuda.current_stream(self.device).wait_event(event)

    def record(self, event, block: int) -> None:
        event.record(torch.cuda.current_stream(self.device))


class InlineStreams:
    """The CPU stand-in: copies happen at once, events are markers, every operation is logged (tests
    check the schedule with it; on a CPU the result must equal the resident model bit for bit)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.log: list[tuple] = []
        self.pinned: set[int] = set()

    def pin(self, t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() in self.pinned:
            return t
        copy = t.to("cpu", copy=True)
        self.pinned.add(copy.untyped_storage().data_ptr())
        self.log.append(("pin", copy.numel()))
        return copy

    def retire(self, buffers) -> None:
        pass

    def event(self):
        return object()

    def copy(self, pairs, after, done, block: int) -> None:
        for dst, src in pairs:
            dst.copy_(src)
        self.log.append(("copy", block))

    def wait(self, event, block: int) -> None:
        self.log.append(("wait", block))

    def record(self, event, block: int) -> None:
        self.log.append(("release", block))


class BlockStreamer:
    """Streams `net.layers` to `device` block by block (see the module docstring)."""

    def __init__(self, net: nn.Module, device: torch.device | str, streams=None):
        self.net, self.device = net, torch.device(device)
        self.streams = streams or CudaStreams(self.device)
        for name, child in net.named_children():
            if name != "layers":
                child.to(self.device)
        self.hosts: list[BlockHost | None] = [None] * len(net.layers)
        self.views: dict[tuple[int, int], list[torch.Tensor]] = {}  # (slot, block) -> GPU views
        for i in range(len(net.layers)):
            self._host(i)
        self.slots: list[list[torch.Tensor]] = [[] for _ in range(SLOTS)]
        self.slot_block: list[int | None] = [None] * SLOTS  # which block each slot holds (or is receiving)
        self.copied = [self.streams.event() for _ in range(SLOTS)]
        self.released: list = [None] * SLOTS  # compute finished with the slot's previous block
        net.block_streamer = self

    # --- host side ---------------------------------------------------------------------------------

    def _host(self, i: int) -> BlockHost:
        """Block i's pinned copy, rebuilt when its tensors changed (e.g. a LoRA was attached)."""
        tensors = block_tensors(self.net.layers[i])
        sig = signature_of(tensors)
        host = self.hosts[i]
        if host is not None and host.signature == sig:
            return host
        buffers, refs = [], []
        for g, (lo, hi, members) in enumerate(byte_ranges(tensors)):
            whole = torch.empty(0, dtype=torch.uint8, device=members[0][3].device)
            buffers.append(self.streams.pin(whole.set_(members[0][3].untyped_storage())[lo:hi]))
            for module, name, is_param, t in members:
                size = t.element_size()
                offset = (t.storage_offset() * size - lo) // size
                refs.append(TensorRef(module, name, is_param, g, t.dtype, tuple(t.shape), t.stride(), offset))
        host = BlockHost(sig, buffers, refs)
        host.host_views = [view_of(buffers[r.group], r) for r in refs]
        for ref, view in zip(refs, host.host_views):
            set_tensor(ref, view)
        self.hosts[i] = host
        self.views = {k: v for k, v in self.views.items() if k[1] != i}
        return host

    # --- device side -------------------------------------------------------------------------------

    def _slot_buffers(self, slot: int, host: BlockHost) -> list[torch.Tensor]:
        """The slot's GPU byte buffers, (re)allocated when this block's storage sizes differ."""
        have = self.slots[slot]
        if [b.numel() for b in have] != [b.numel() for b in host.buffers]:
            self.streams.retire(have)
            have = [torch.empty(b.numel(), dtype=torch.uint8, device=self.device) for b in host.buffers]
            self.slots[slot] = have
            self.views = {k: v for k, v in self.views.items() if k[0] != slot}
        return have

    def _fetch(self, i: int) -> None:
        """Start copying block i into its slot (side stream), after compute released the slot."""
        slot = i % SLOTS
        host = self._host(i)
        buffers = self._slot_buffers(slot, host)
        self.streams.copy(list(zip(buffers, host.buffers)), self.released[slot], self.copied[slot], i)
        self.slot_block[slot] = i

    def before(self, i: int) -> None:
        slot = i % SLOTS
        if i == 0 or self.slot_block[slot] != i:
            self._fetch(i)  # each pass fetches its first block afresh: weights may have changed since
        self.streams.wait(self.copied[slot], i)
        key = (slot, i)
        if key not in self.views:
            host = self.hosts[i]
            self.views[key] = [view_of(self.slots[slot][r.group], r) for r in host.refs]
        for ref, view in zip(self.hosts[i].refs, self.views[key]):
            set_tensor(ref, view)
        if i + 1 < len(self.net.layers):
            self._fetch(i + 1)

    def after(self, i: int) -> None:
        slot = i % SLOTS
        done = self.released[slot] or self.streams.event()
        self.streams.record(done, i)
        self.released[slot] = done
        host = self.hosts[i]
        for ref, view in zip(host.refs, host.host_views):
            set_tensor(ref, view)

    def detach(self) -> None:
        """Stop streaming: the blocks stay on their CPU copies (call `net.to(device)` to bring them back)."""
        self.net.block_streamer = None


def byte_ranges(tensors: list[tuple]) -> list[tuple[int, int, list]]:
    """(first byte, end byte, members) per run of tensors that lie together in one storage: tensors
    sharing memory (a fused w1|w3) stay one copy; tensors far apart in one storage (a pinned chunk
    holding other blocks in between) are separate runs, so a copy never carries another block's bytes."""
    by_storage: dict[int, list] = {}
    for entry in tensors:
        t = entry[3]
        lo = t.storage_offset() * t.element_size()
        span = (lo, lo + _extent(t) * t.element_size(), entry)
        by_storage.setdefault(t.untyped_storage().data_ptr(), []).append(span)
    runs: list[tuple[int, int, list]] = []
    for spans in by_storage.values():
        spans.sort(key=lambda span: span[0])
        start = len(runs)
        for lo, hi, entry in spans:
            if len(runs) > start and lo <= runs[-1][1] + RUN_GAP_BYTES:
                runs[-1] = (runs[-1][0], max(runs[-1][1], hi), [*runs[-1][2], entry])
            else:
                runs.append((lo, hi, [entry]))
    return runs


def _extent(t: torch.Tensor) -> int:
    """Elements from the tensor's first to one past its last (any strides)."""
    if t.numel() == 0:
        return 0
    return 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))


def stream_blocks(net: nn.Module, device: torch.device | str, streams=None) -> BlockStreamer:
    """Keep `net`'s blocks in pinned CPU memory and stream them to `device` per pass."""
    return BlockStreamer(net, device, streams)
