"""The Ideogram 4 single-stream DiT (9.3B), with the original checkpoint key names.

One network serves both guidance branches: the conditional pass sees `[text][image]`, the
unconditional pass (a second instance with its own weights) sees `[image]` only.

Unlike the reference implementations, the forward pass takes the two regions separately instead of
a zero-padded packed sequence: the text projection (53248 -> 4608) runs on text rows only and the
image projection on image rows only, and no text region exists at all in the unconditional pass.
The per-sequence tensors that do not change across denoising steps (RoPE tables, attention mask)
live in a `SequenceLayout` built once per generation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..spec import MAX_SIDE, MIN_SIDE
from .quant import Fp8Linear, fp8_shared_input, fuse_linear_pair

IMAGE_POSITION_OFFSET = 65536


@dataclass(frozen=True)
class Ideogram4Config:
    emb_dim: int = 4608
    num_layers: int = 34
    num_heads: int = 18
    intermediate_size: int = 12288
    adaln_dim: int = 512
    in_channels: int = 128
    llm_features_dim: int = 53248
    rope_theta: float = 5_000_000.0
    mrope_section: tuple[int, int, int] = (24, 20, 20)
    norm_eps: float = 1e-5
    # image sides (pixels) this network was trained for: what the pipeline accepts (spec.side_range)
    min_side: int = MIN_SIDE
    max_side: int = MAX_SIDE

    @property
    def side_range(self) -> tuple[int, int]:
        return self.min_side, self.max_side

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.num_heads


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32, return in the input dtype, then scale (the reference order of operations).
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)
        return y * self.weight.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def mrope_tables(
    position_ids: torch.Tensor, head_dim: int, theta: float, mrope_section: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interleaved 3-axis RoPE. position_ids (B, L, 3) -> cos, sin (B, L, head_dim), fp32.

    Positions stay fp32: image positions start at 65536, which bf16 cannot count in steps of one.
    """
    # fp32 frequencies, as in the reference code: at positions >= 65536 one ulp of a float64-derived
    # table already moves bf16 cos/sin.
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=position_ids.device) / head_dim)
    )
    freqs = position_ids.to(torch.float32).unsqueeze(-1) * inv_freq  # (B, L, 3, head_dim/2)
    f = freqs[..., 0, :].clone()  # t axis everywhere, then h and w on every third slot
    for axis in (1, 2):
        idx = torch.arange(axis, 3 * mrope_section[axis], 3, device=f.device)
        f[..., idx] = freqs[..., axis, idx]
    emb = torch.cat((f, f), dim=-1)
    return emb.cos(), emb.sin()


@dataclass
class SequenceLayout:
    """Everything about one packed batch that stays fixed across denoising steps.

    Text is left-padded to the longest prompt in the batch (`text_len`); a batch of equal-length
    prompts has no padding, and then no attention mask is needed (SDPA may pick flash kernels).
    """

    text_len: int  # text rows per sequence (0 for the unconditional pass)
    num_image_tokens: int
    cos: torch.Tensor  # (B, L, head_dim), compute dtype
    sin: torch.Tensor
    attn_mask: torch.Tensor | None  # (B, 1, 1, L) bool, True = a key to attend to; None = every key

    def mark_dynamic(self, *tensors: torch.Tensor) -> None:
        """Tell torch.compile that the sequence length (dim 1 of `tensors`, of cos/sin, the last dim of
        the mask) varies between calls: one graph serves every prompt length; other dims stay static."""
        if torch.compiler.is_compiling():
            return
        for t in (*tensors, self.cos, self.sin):
            torch._dynamo.maybe_mark_dynamic(t, 1)
        if self.attn_mask is not None:
            torch._dynamo.maybe_mark_dynamic(self.attn_mask, 3)


def build_layout(
    config: Ideogram4Config,
    text_lengths: list[int] | None,
    grid_h: int,
    grid_w: int,
    batch_size: int,
    device: torch.device | str,
    dtype: torch.dtype,
    text_len: int | None = None,
) -> SequenceLayout:
    """Positions and mask for `[left-pad][text][image]` (conditional) or `[image]` (text_lengths=None).

    `text_len`: text rows per sequence, at least the longest prompt (the default); more rows are
    left padding, masked out, so a compiled model sees a few bucketed shapes instead of every length.
    """
    rows = torch.arange(grid_h, device=device).repeat_interleave(grid_w)
    cols = torch.arange(grid_w, device=device).repeat(grid_h)
    image_pos = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1) + IMAGE_POSITION_OFFSET
    num_image = grid_h * grid_w

    if not text_lengths:
        positions = image_pos.expand(batch_size, -1, -1)
        text_len, attn_mask = 0, None
    else:
        if len(text_lengths) != batch_size:
            raise ValueError(f"text_lengths has {len(text_lengths)} entries for a batch of {batch_size}")
        if text_len is not None and text_len < max(text_lengths):
            raise ValueError(f"text_len={text_len} is shorter than the longest prompt ({max(text_lengths)} tokens)")
        text_len = text_len or max(text_lengths)
        text_pos = torch.zeros(batch_size, text_len, 3, dtype=torch.long, device=device)
        valid = torch.zeros(batch_size, text_len + num_image, dtype=torch.bool, device=device)
        for b, n in enumerate(text_lengths):
            text_pos[b, text_len - n :] = torch.arange(n, device=device)[:, None]
            valid[b, text_len - n :] = True
        positions = torch.cat([text_pos, image_pos.expand(batch_size, -1, -1)], dim=1)
        # Padding rows are never keys, so they cannot change a real row; as queries they read the real
        # keys (never an all-masked, NaN row) and are dropped. One (B, 1, 1, L) mask, broadcast.
        attn_mask = None if all(n == text_len for n in text_lengths) else valid[:, None, None, :]
    cos, sin = mrope_tables(positions, config.head_dim, config.rope_theta, config.mrope_section)
    return SequenceLayout(text_len, num_image, cos.to(dtype), sin.to(dtype), attn_mask)


class Attention(nn.Module):
    def __init__(self, config: Ideogram4Config):
        super().__init__()
        d, self.num_heads, self.head_dim = config.emb_dim, config.num_heads, config.head_dim
        self.qkv = nn.Linear(d, 3 * d, bias=False)  # rows: [Q | K | V], each head-major
        self.o = nn.Linear(d, d, bias=False)
        self.norm_q = RMSNorm(self.head_dim, eps=1e-5)
        self.norm_k = RMSNorm(self.head_dim, eps=1e-5)

    def forward(self, x: torch.Tensor, layout: SequenceLayout) -> torch.Tensor:
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).unbind(2)  # (B, L, H, Dh)
        q, k = self.norm_q(q), self.norm_k(k)
        cos, sin = layout.cos[:, :, None], layout.sin[:, :, None]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=layout.attn_mask
        )  # (B, H, L, Dh)
        return self.o(out.transpose(1, 2).reshape(B, L, -1))


def _fuse_again_after_load(module: FeedForward, _incompatible_keys) -> None:
    """load_state_dict(assign=True) replaces w1's and w3's weights: lay the new ones out as one again."""
    if module.gate_up_fused:
        module.fuse_gate_up()


class FeedForward(nn.Module):
    def __init__(self, config: Ideogram4Config):
        super().__init__()
        self.w1 = nn.Linear(config.emb_dim, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.emb_dim, bias=False)
        self.w3 = nn.Linear(config.emb_dim, config.intermediate_size, bias=False)
        self.gate_up_fused = False  # w1 and w3 stored as one fp8 tensor (one GEMM); see fuse_gate_up
        self.register_load_state_dict_post_hook(_fuse_again_after_load)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp8 matmuls: w1 and w3 share one quantisation of x (and one GEMM once fused).
        shared = fp8_shared_input(self.w1, self.w3, x, self.gate_up_fused)
        gate, up = shared if shared is not None else (self.w1(x), self.w3(x))
        return self.w2(F.silu(gate) * up)

    def fuse_gate_up(self) -> bool:
        """Lay w1 and w3 out as one fp8 weight when both run fp8 matmuls; False where they do not."""
        pair = (self.w1, self.w3)
        self.gate_up_fused = all(
            isinstance(m, Fp8Linear) and m.mode == "fp8_matmul" and not m.weight.is_meta for m in pair
        )
        if self.gate_up_fused:
            fuse_linear_pair(*pair)
        return self.gate_up_fused

    def _apply(self, fn, recurse=True):
        # Module.to / .cuda / .half give w1 and w3 separate storage again: lay them out as one after it.
        out = super()._apply(fn, recurse)
        if self.gate_up_fused:
            self.fuse_gate_up()
        return out

    def __setstate__(self, state):
        # copy.deepcopy and pickle copy each parameter on its own: lay the copies out as one again.
        super().__setstate__(state)
        if self.gate_up_fused:
            self.fuse_gate_up()


class Block(nn.Module):
    """Sandwich-norm block: adaLN scales and tanh gates, no shifts."""

    def __init__(self, config: Ideogram4Config):
        super().__init__()
        d = config.emb_dim
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config)
        self.attention_norm1 = RMSNorm(d, config.norm_eps)
        self.attention_norm2 = RMSNorm(d, config.norm_eps)
        self.ffn_norm1 = RMSNorm(d, config.norm_eps)
        self.ffn_norm2 = RMSNorm(d, config.norm_eps)
        self.adaln_modulation = nn.Linear(config.adaln_dim, 4 * d, bias=True)

    def forward(self, h: torch.Tensor, c: torch.Tensor, layout: SequenceLayout) -> torch.Tensor:
        scale_msa, gate_msa, scale_mlp, gate_mlp = self.adaln_modulation(c).chunk(4, dim=-1)  # (B, 1, D) each
        a = self.attention(self.attention_norm1(h) * (1 + scale_msa), layout)
        h = h + torch.tanh(gate_msa) * self.attention_norm2(a)
        f = self.feed_forward(self.ffn_norm1(h) * (1 + scale_mlp))
        return h + torch.tanh(gate_mlp) * self.ffn_norm2(f)


class TimestepEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp_in = nn.Linear(dim, dim, bias=True)
        self.mlp_out = nn.Linear(dim, dim, bias=True)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t (B,) in the compute dtype -> (B, dim); the sinusoid is computed in fp32, then cast back."""
        half = self.dim // 2
        freq = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(1e4) / (half - 1)))
        angle = (1e4 * t.float())[:, None] * freq
        emb = torch.cat([angle.sin(), angle.cos()], dim=-1).to(t.dtype)
        return self.mlp_out(F.silu(self.mlp_in(emb)))


class FinalLayer(nn.Module):
    def __init__(self, config: Ideogram4Config):
        super().__init__()
        self.linear = nn.Linear(config.emb_dim, config.in_channels, bias=True)
        self.adaln_modulation = nn.Linear(config.adaln_dim, config.emb_dim, bias=True)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # SiLU again on c, which is already a SiLU output: that is what the checkpoint was trained with.
        scale = 1 + self.adaln_modulation(F.silu(c))
        return self.linear(F.layer_norm(h, (h.shape[-1],), eps=1e-6) * scale)


class Ideogram4Transformer(nn.Module):
    def __init__(self, config: Ideogram4Config):
        super().__init__()
        self.config = config
        d = config.emb_dim
        self.input_proj = nn.Linear(config.in_channels, d, bias=True)
        self.llm_cond_norm = RMSNorm(config.llm_features_dim, eps=1e-6)
        self.llm_cond_proj = nn.Linear(config.llm_features_dim, d, bias=True)
        self.t_embedding = TimestepEmbedding(d)
        self.adaln_proj = nn.Linear(d, config.adaln_dim, bias=True)
        self.embed_image_indicator = nn.Embedding(2, d)  # row 0: text (and padding), row 1: image
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.final_layer = FinalLayer(config)
        self.dynamic_sequence = False  # set by regional compile: the blocks' sequence length is dynamic
        self.block_streamer = None  # offload.BlockStreamer: blocks live on the CPU, streamed in per pass

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.embed_image_indicator.weight.dtype

    def forward(
        self,
        image_tokens: torch.Tensor,  # (B, Li, 128) noisy latents
        t: torch.Tensor,  # (B,) model time, 0 = noise, 1 = data
        layout: SequenceLayout,
        text_features: torch.Tensor | None = None,  # (B, Lt, 53248), left-padded with zeros
    ) -> torch.Tensor:
        """Velocity for the image tokens, (B, Li, 128) in float32."""
        cd = self.compute_dtype
        t = t.to(cd)  # the references embed the bf16-rounded time
        c = F.silu(self.adaln_proj(self.t_embedding(t)))[:, None]  # (B, 1, adaln_dim)

        h = self.input_proj(image_tokens.to(cd)) + self.embed_image_indicator.weight[1]
        num_image = h.shape[1]
        # Shapes only, no `layout.text_len`: a compiled whole DiT would specialise on that int.
        if text_features is not None:
            assert text_features.shape[1] + num_image == layout.cos.shape[1], "text_features and layout differ"
            text = self.llm_cond_proj(self.llm_cond_norm(text_features.to(cd))) + self.embed_image_indicator.weight[0]
            h = torch.cat([text, h], dim=1)  # (B, Lt + Li, D)

        if self.dynamic_sequence:
            layout.mark_dynamic(h)
        streamer = self.block_streamer
        if streamer is None:
            for block in self.layers:
                h = block(h, c, layout)
        else:
            for i, block in enumerate(self.layers):
                streamer.before(i)
                h = block(h, c, layout)
                streamer.after(i)

        return self.final_layer(h[:, h.shape[1] - num_image :], c).float()
