"""Whether a file is a LoRA weights file, judged from its first bytes before it is hashed or loaded.

A .safetensors file starts with 8 bytes giving its JSON header's length; a text file renamed
``x.safetensors`` gives a nonsense length (reading it would allocate gigabytes), and hashing a 30 GB
file that is no LoRA at all takes a minute. Import-light (no torch): the runner checks at validation.
"""

from __future__ import annotations

import os

from ideogram4.sources import WEIGHT_SUFFIXES
from ideogram4.spec import MAX_SAFETENSORS_HEADER


def lora_file_problem(path: str | os.PathLike) -> str | None:
    """None when `path` has a LoRA suffix and, for .safetensors, a sane JSON header; else what is wrong."""
    name = os.fspath(path)
    if not name.endswith(WEIGHT_SUFFIXES):
        return f"is not a LoRA weights file (expected one of {', '.join(WEIGHT_SUFFIXES)})"
    if not name.endswith(".safetensors"):
        return None
    size = os.path.getsize(name)
    with open(name, "rb") as fh:
        head = fh.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= length <= min(MAX_SAFETENSORS_HEADER, size - 8):
            return f"is not a .safetensors file (its first 8 bytes give a {length}-byte header in a {size}-byte file)"
        start = fh.read(1)
    if start != b"{":
        return "is not a .safetensors file (its header is not a JSON object)"
    return None
