"""Closed-form parameter and FLOP counts of the Ideogram 4 DiT (one multiply-add = 2 FLOPs).

Only matrix multiplies are counted (Linears and the two attention products), as
`torch.utils.flop_counter` does; norms, RoPE and elementwise work are left out. Notation as in
`shared/reference/performance.md`: N image tokens, T text tokens, L = packed length.

Two ways of running one pass are modelled:
- `exact_pass_flops`: ours. The packed sequence is `[text (T rows)][image (N rows)]`, the text
  projection runs on the T text rows only, the image projection and the final layer on the N image
  rows only; the unconditional pass is `[image]` alone (T = 0).
- `padded_pass_flops`: diffusers 0.42.1. Text is left-padded to `max_sequence_length` (2048), and
  the text projection, the image projection and the final layer all run on every position of the
  packed sequence (the unconditional pass projects an all-zero N x 53248 tensor).

"Useful" FLOPs for MFU are the exact-length ones (`image_flops(..., exact=True)`): padding is waste.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .models.transformer import Ideogram4Config

DIFFUSERS_MAX_SEQUENCE_LENGTH = 2048

# Dense peak rates (FLOP/s) used for MFU; the reference protocol reports bf16 MFU against 989 TF/s
# (H100 SXM, also H200) and fp8 runs against both that and the fp8 peak.
PEAK_FLOPS = {
    "h100_sxm": {"bf16": 989e12, "fp8": 1979e12},
    "h200": {"bf16": 989e12, "fp8": 1979e12},
    "h100_pcie": {"bf16": 756e12, "fp8": 1513e12},
}


def peak_flops(device_name: str, precision: str = "bf16") -> float | None:
    """Dense peak for a CUDA device name (torch.cuda.get_device_name), or None when unknown."""
    name = device_name.lower()
    if "h200" in name:
        key = "h200"
    elif "h100" in name:
        key = "h100_pcie" if "pcie" in name else "h100_sxm"
    else:
        return None
    return PEAK_FLOPS[key][precision]


def param_count(config: Ideogram4Config) -> int:
    """Number of parameters of `Ideogram4Transformer(config)` (9,279,288,448 at full size)."""
    d, i, a = config.emb_dim, config.intermediate_size, config.adaln_dim
    c, f, dh = config.in_channels, config.llm_features_dim, config.head_dim
    block = (
        d * 3 * d
        + d * d  # qkv, o (no bias)
        + 2 * dh  # norm_q, norm_k
        + 3 * d * i  # w1, w2, w3 (no bias)
        + 4 * d  # four sandwich RMSNorms
        + a * 4 * d
        + 4 * d  # adaln_modulation
    )
    top = (
        c * d
        + d  # input_proj
        + f  # llm_cond_norm
        + f * d
        + d  # llm_cond_proj
        + 2 * (d * d + d)  # t_embedding mlp_in, mlp_out
        + d * a
        + a  # adaln_proj
        + 2 * d  # embed_image_indicator
        + d * c
        + c  # final_layer.linear
        + a * d
        + d  # final_layer.adaln_modulation
    )
    return config.num_layers * block + top


def linear_flops_per_token(config: Ideogram4Config) -> int:
    """Block Linears (qkv, o, w1, w2, w3) over all layers: 17.327 GFLOP per token at full size."""
    d, i = config.emb_dim, config.intermediate_size
    return 2 * config.num_layers * (d * 3 * d + d * d + 3 * d * i)


def attention_flops(config: Ideogram4Config, length: int) -> int:
    """QK^T plus PV over all heads and layers for one unmasked sequence: layers * 4 * L^2 * D."""
    return 4 * config.num_layers * length * length * config.emb_dim


def text_proj_flops_per_token(config: Ideogram4Config) -> int:
    """`llm_cond_proj` (53248 -> 4608): 490.7 MFLOP per row it is applied to."""
    return 2 * config.llm_features_dim * config.emb_dim


def image_io_flops_per_token(config: Ideogram4Config) -> int:
    """`input_proj` (128 -> D) plus `final_layer.linear` (D -> 128) per row they run on."""
    return 2 * 2 * config.in_channels * config.emb_dim


def per_sample_flops(config: Ideogram4Config) -> int:
    """Work done once per sample, not per token: t-embedding MLP, adaln_proj, the per-block adaLN
    Linears and the final adaLN (0.74 GFLOP at full size)."""
    d, a = config.emb_dim, config.adaln_dim
    return 2 * (2 * d * d + d * a + config.num_layers * a * 4 * d + a * d)


@dataclass(frozen=True)
class PassFlops:
    """Matmul FLOPs of one transformer pass over a batch, by kind."""

    linear: int  # block Linears over every packed row
    attention: int  # QK^T + PV
    text_proj: int  # llm_cond_proj
    image_io: int  # input_proj + final_layer.linear
    per_sample: int  # t-embedding, adaLN

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    @property
    def reference(self) -> int:
        """The performance.md per-pass formula (linear + attention + text projection); it leaves out the
        image in/out projections and per-sample terms, about 1e-4 of a full-size pass."""
        return self.linear + self.attention + self.text_proj

    def __add__(self, other: PassFlops) -> PassFlops:
        return PassFlops(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def scale(self, k: int) -> PassFlops:
        return PassFlops(*(getattr(self, f.name) * k for f in fields(self)))


def exact_pass_flops(config: Ideogram4Config, text_tokens: int, image_tokens: int, batch: int = 1) -> PassFlops:
    """Our pass: L = T + N (T = 0 for the unconditional pass), projections on their own rows only.

    For a batch of equal-length prompts. A packed batch of different lengths pads to the longest
    (pass that T); its padding rows are then counted too, as they are computed.
    """
    length = text_tokens + image_tokens
    return PassFlops(
        linear=batch * length * linear_flops_per_token(config),
        attention=batch * attention_flops(config, length),
        text_proj=batch * text_tokens * text_proj_flops_per_token(config),
        image_io=batch * image_tokens * image_io_flops_per_token(config),
        per_sample=batch * per_sample_flops(config),
    )


def padded_pass_flops(
    config: Ideogram4Config,
    image_tokens: int,
    conditional: bool = True,
    max_sequence_length: int = DIFFUSERS_MAX_SEQUENCE_LENGTH,
    batch: int = 1,
) -> PassFlops:
    """diffusers' pass: text padded to `max_sequence_length` (conditional), and the text projection,
    image projection and final layer applied to every position."""
    length = (max_sequence_length if conditional else 0) + image_tokens
    return PassFlops(
        linear=batch * length * linear_flops_per_token(config),
        attention=batch * attention_flops(config, length),
        text_proj=batch * length * text_proj_flops_per_token(config),
        image_io=batch * length * image_io_flops_per_token(config),
        per_sample=batch * per_sample_flops(config),
    )


def image_tokens_for(height: int, width: int) -> int:
    """One DiT token covers 16 x 16 pixels."""
    return (height // 16) * (width // 16)


def num_passes(guidance_schedule: list[float], exact: bool = True) -> tuple[int, int]:
    """(conditional, unconditional) passes per image. Ours skips the unconditional pass on steps whose
    guidance weight is 1.0 (it would be multiplied by 0); diffusers always runs it."""
    steps = len(guidance_schedule)
    uncond = sum(1 for w in guidance_schedule if float(w) != 1.0) if exact else steps
    return steps, uncond


def image_flops(
    config: Ideogram4Config,
    text_tokens: int,
    height: int,
    width: int,
    guidance_schedule: list[float],
    exact: bool = True,
    batch: int = 1,
) -> PassFlops:
    """Matmul FLOPs of all denoising passes for one call (text encoder and VAE excluded).

    `exact=True`: our pipeline (and the useful FLOPs for MFU); `exact=False`: diffusers' padded passes.
    """
    n = image_tokens_for(height, width)
    n_cond, n_uncond = num_passes(guidance_schedule, exact)
    if exact:
        cond = exact_pass_flops(config, text_tokens, n, batch)
        uncond = exact_pass_flops(config, 0, n, batch)
    else:
        cond = padded_pass_flops(config, n, True, batch=batch)
        uncond = padded_pass_flops(config, n, False, batch=batch)
    return cond.scale(n_cond) + uncond.scale(n_uncond)


def sampled_image_flops(
    config: Ideogram4Config,
    text_tokens: int,
    image_tokens: int,
    cond_passes: int,
    uncond_passes: int,
    uncond_text_tokens: int = 0,
) -> int:
    """Matmul FLOPs of one image as it was sampled: the passes that ran, each at its exact length
    (`uncond_text_tokens`: a negative prompt's length; 0 for the unconditional transformer)."""
    cond = exact_pass_flops(config, text_tokens, image_tokens).scale(cond_passes)
    return (cond + exact_pass_flops(config, uncond_text_tokens, image_tokens).scale(uncond_passes)).total


def batch_flops(
    config: Ideogram4Config, image_tokens: int, text: list[int], uncond_text: list[int], passes: dict[str, int]
) -> list[int]:
    """`sampled_image_flops` for each image of a batch: its own text lengths, the passes the batch made."""
    cond, uncond = passes["conditional"], passes["unconditional"]
    return [sampled_image_flops(config, t, image_tokens, cond, uncond, u) for t, u in zip(text, uncond_text)]


def sampling_cost(config: Ideogram4Config, image_tokens: int, passes: dict[str, int], texts, encode) -> dict:
    """A generate call's cost record: the DiT calls per branch and each image's matmul FLOPs. `texts`:
    (captions, negative prompts); their token counts come from `encode` (the pipeline's text cache)."""
    lengths = [[encode(c)[0].shape[1] if c else 0 for c in t] for t in texts]
    return {"transformer_passes": dict(passes), "flops": batch_flops(config, image_tokens, *lengths, passes)}


def mfu(flops: float, seconds: float, peak: float) -> float:
    """Model FLOPs utilisation: useful FLOPs / (time x peak rate)."""
    return flops / (seconds * peak)
