"""A tiny random LM head for prompt-upsampling tests (the instruct head of the tiny text encoder).

A random head writes random strings; its bias favours tokens holding '"' or ']', so strings and lists
close within a few tokens (an untrained head almost never closes them) and a caption fits in a few
hundred new tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file


def tiny_head(tokenizer, seed: int, closing_bias: float = 6.0) -> torch.nn.Linear:
    vocab, hidden = 151936, 32
    head = torch.nn.Linear(hidden, vocab, bias=True)
    g = torch.Generator().manual_seed(seed)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    with torch.no_grad():
        head.weight.normal_(0, 0.02, generator=g)
        head.bias.zero_()
        for mark in ('"', "]"):
            head.bias[[i for i, t in enumerate(tokens) if t and mark in t]] += closing_bias
    return head.eval().requires_grad_(False)


def save_tiny_head(tiny_model: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny head for the tiny model at `tiny_model` into `folder`; returns the folder."""
    from ideogram4.captions.upsample import CaptionWriter

    writer = CaptionWriter.from_pretrained(tiny_model, device="cpu", torch_dtype=torch.float32)
    head = tiny_head(writer.tokenizer, seed=seed)
    save_file(
        {"lm_head.weight": head.weight.contiguous(), "lm_head.bias": head.bias.contiguous()}, folder / "h.safetensors"
    )
    return folder
