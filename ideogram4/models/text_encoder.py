"""Qwen3-VL text features for Ideogram 4 (transformers' Qwen3VLTextModel, language model only).

The DiT is conditioned on 13 intermediate decoder outputs, interleaved per hidden unit:
feature index = d * 13 + k for hidden unit d and tap k. Layer 35 is tapped before the final norm,
so the layers are run by hand rather than through `output_hidden_states`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers.masking_utils import create_causal_mask

TAP_LAYERS = (0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 35)


class Ideogram4TextEncoder(nn.Module):
    def __init__(self, language_model: nn.Module):
        super().__init__()
        self.language_model = language_model  # transformers Qwen3VLTextModel
        num_layers = len(language_model.layers)
        if num_layers <= max(TAP_LAYERS):
            raise ValueError(
                f"the text encoder has {num_layers} decoder layers; Ideogram 4 taps layer {max(TAP_LAYERS)}, "
                f"so it needs at least {max(TAP_LAYERS) + 1}"
            )

    @property
    def feature_dim(self) -> int:
        return self.language_model.config.hidden_size * len(TAP_LAYERS)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: (B, Lt), left-padded. Returns (B, Lt, 13 * hidden) float32, zero at pads."""
        lm = self.language_model
        B, Lt = input_ids.shape
        # Real tokens count 0..n-1 from their first position; pads sit at 0 and are masked out.
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0) * attention_mask
        h = lm.embed_tokens(input_ids)
        # The 4th argument (no KV cache) is passed by position: transformers 5.x is renaming it.
        causal_mask = create_causal_mask(lm.config, h, attention_mask, None, position_ids=positions)
        rope = lm.rotary_emb(h, positions[None].expand(3, -1, -1))
        taps = []
        for i, layer in enumerate(lm.layers[: max(TAP_LAYERS) + 1]):
            h = layer(h, attention_mask=causal_mask, position_ids=positions, position_embeddings=rope)
            if i in TAP_LAYERS:
                taps.append(h)
        features = torch.stack(taps, dim=-1).reshape(B, Lt, -1)  # (B, Lt, hidden * 13), tap index fastest
        return (features * attention_mask[..., None].to(features.dtype)).float()
