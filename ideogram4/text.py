"""Text preparation: token checks, encoding into per-caption features, the cache, packing a batch.

Features are cached per caption string in CPU memory (a 1000-token caption is ~100 MB of features):
a sweep over seeds, steps or guidance encodes each prompt once, without filling the GPU that the
offload options are trying to spare.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from .prompts import tokenize


class TextCache:
    """caption -> (1, Lt, F) features on the CPU, least recently used dropped first."""

    def __init__(self, size: int = 256):
        self.size = size
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __contains__(self, caption: str) -> bool:
        return caption in self._entries

    def get(self, caption: str) -> torch.Tensor | None:
        if caption not in self._entries:
            return None
        self._entries.move_to_end(caption)
        return self._entries[caption]

    def put(self, caption: str, features: torch.Tensor) -> None:
        self._entries[caption] = features
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)


def check_token_counts(tokenizer, captions: list[str]) -> None:
    """Raise the token-limit error for any caption before the text encoder runs on the first one."""
    for caption in dict.fromkeys(captions):
        tokenize(tokenizer, caption)


def encode_caption(text_encoder, tokenizer, caption: str, dtype: torch.dtype) -> torch.Tensor:
    """(1, Lt, 13 * hidden) features in `dtype`, on the CPU."""
    ids = torch.tensor([tokenize(tokenizer, caption)])
    device = next(text_encoder.parameters()).device
    features = text_encoder(ids.to(device), torch.ones_like(ids, device=device))
    return features.to(device="cpu", dtype=dtype)


def bucketed(length: int, bucket: int | None) -> int:
    """`length` rounded up to a multiple of `bucket` (None: unchanged)."""
    return -(-length // bucket) * bucket if bucket else length


def pack_text(
    features: list[torch.Tensor], device: torch.device, dtype: torch.dtype, bucket: int | None = None
) -> tuple[torch.Tensor, list[int]]:
    """Left-pad each caption's (1, Lt, F) features to one width: (B, width, F) on `device`, and the lengths.

    width = the longest caption, rounded up to a multiple of `bucket` when given (compiled models).
    """
    lengths = [f.shape[1] for f in features]
    width = bucketed(max(lengths), bucket)
    packed = torch.zeros(len(features), width, features[0].shape[-1], dtype=dtype, device=device)
    for b, f in enumerate(features):
        packed[b, width - f.shape[1] :] = f[0].to(device, non_blocking=True)
    return packed, lengths
