"""Errors a user can fix, importable without torch (run.py catches them to print one clear line).

Out-of-memory advice is data (`MemoryTip`s naming Python-API options), so each caller words it in
its own terms: the pipeline lists `offload_text_encoder=True`, the runner translates the option
names to its config keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


class CheckpointError(RuntimeError):
    """A weights problem the user can fix: the message says what and how."""


class ArgumentError(ValueError):
    """A bad value, its parts kept: `name` (the API argument), `value`, `what` is wrong, `fix`."""

    def __init__(self, name: str, value: Any, what: str, fix: str, *, show_value: bool = True):
        self.name, self.value, self.what, self.fix = name, value, what, fix
        shown = f"{name}={value!r}" if show_value else name
        super().__init__(f"{shown}{' ' + what if what else ''}: {fix}")


class ArgumentTypeError(ArgumentError, TypeError):
    """A value of the wrong kind (a str where an int goes): a TypeError too, as Python's own checks raise."""


class NoGpu(ArgumentError, RuntimeError):
    """CUDA asked for on a machine without a usable CUDA GPU."""


class UpsampleError(RuntimeError):
    """Prompt upsampling cannot run or gave no valid caption: the message says why and what to do."""


class PromptFileError(ValueError):
    """A prompt or caption file that cannot be read; one line, `file:line:col: what is wrong`.

    `exit_code` 2: the file cannot be opened at all; 1: it opens but does not parse."""

    def __init__(self, file: str, message: str, line: int | None = None, col: int | None = None, exit_code: int = 1):
        super().__init__(message)
        self.file, self.message, self.line, self.col, self.exit_code = file, message, line, col, exit_code

    def __str__(self) -> str:
        where = ":".join(str(x) for x in (self.file, self.line, self.col) if x is not None)
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class MemoryTip:
    """One way to need less GPU memory.

    `option` is a `from_pretrained` / `generate` keyword ("offload_text_encoder", "vae_tiling",
    "load_unconditional", "fp8_mode", "offload_transformers", "source"), or "batch" (fewer images per
    call) or "resolution" (a smaller image, `value` = (height, width)).
    """

    option: str
    value: Any
    why: str

    def __str__(self) -> str:
        if self.option == "batch":
            setting = f"a batch of {self.value}"
        elif self.option == "resolution":
            setting = f"height={self.value[0]}, width={self.value[1]}"
        else:
            setting = f"{self.option}={self.value!r}"
        return f"{setting} ({self.why})"


class GpuOutOfMemory(RuntimeError):
    """CUDA ran out of memory; `.tips` are the options that need less, cheapest in speed first."""

    def __init__(self, tips: list[MemoryTip], detail: str = ""):
        self.tips = list(tips)
        self.detail = detail
        options = "; ".join(str(t) for t in self.tips) or "none left: use a GPU with more memory"
        first_line = detail.strip().splitlines()[0] if detail.strip() else ""
        super().__init__(
            f"GPU out of memory{f' ({first_line})' if first_line else ''}. "
            f"Options that need less memory, cheapest in speed first: {options}"
        )


def memory_tips(info: dict, batch: int = 1, height: int = 0, width: int = 0) -> list[MemoryTip]:
    """What would need less memory, in the order that costs least speed.

    `info` is what `Ideogram4Pipeline.describe()` returns, or the `from_pretrained` keyword arguments
    of a load that failed (the same option names; absent ones take `from_pretrained`'s defaults).
    `height`/`width` = 0: size unknown (a failed load).
    """
    tips = []
    if batch > 1:
        tips.append(MemoryTip("batch", 1, f"generate fewer images per call: {batch} now"))
    if info.get("fp8_mode") == "dequantize_once":
        tips.append(MemoryTip("fp8_mode", "dequantize_per_call", "keeps the fp8 weights in 1 byte per parameter"))
    if not info.get("offload_text_encoder", False):
        tips.append(MemoryTip("offload_text_encoder", True, "the ~8-15 GB text encoder visits the GPU only to encode"))
    if height * width >= 2048 * 2048 and not info.get("vae_tiling", False):
        tips.append(MemoryTip("vae_tiling", True, f"decodes {width}x{height} in tiles"))
    if info.get("load_unconditional", True):
        tips.append(MemoryTip("load_unconditional", False, "one DiT resident instead of two, at a quality cost"))
    if info.get("format") != "nf4" and "nf4" not in str(info.get("source", "")):
        tips.append(MemoryTip("source", "ideogram-ai/ideogram-4-nf4", "4-bit weights fit a 24 GB card; CUDA only"))
    if not info.get("offload_transformers", False):
        tips.append(MemoryTip("offload_transformers", True, "the DiTs stream to the GPU block by block: PCIe-bound"))
    if height * width > 1024 * 1024:
        tips.append(MemoryTip("resolution", (1024, 1024), f"{width}x{height} now; memory grows with the pixels"))
    return tips


def is_out_of_memory(e: BaseException) -> bool:
    """torch.OutOfMemoryError, or a RuntimeError from a kernel that says so (cuBLAS, cuDNN, NCCL)."""
    return type(e).__name__ == "OutOfMemoryError" or (isinstance(e, RuntimeError) and "out of memory" in str(e))


@contextmanager
def out_of_memory_as_tips(tips: Callable[[], list[MemoryTip]]) -> Iterator[None]:
    """Re-raise a CUDA out-of-memory error as GpuOutOfMemory carrying `tips()`."""
    try:
        yield
    except GpuOutOfMemory:
        raise
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        raise GpuOutOfMemory(tips(), str(e)) from e
