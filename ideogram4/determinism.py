"""Deterministic mode: the same inputs on the same software and GPU give the same bits, run after run.

GPU kernels are free to reduce in an order that changes from run to run (split-K matmuls sharing a
cuBLAS workspace, atomics in some reductions, cuDNN picking convolution algorithms by timing them).
:func:`enable_determinism` turns all of that off where torch offers a switch:

- ``torch.use_deterministic_algorithms(True)``: an operation without a deterministic kernel raises
  instead of silently varying;
- ``CUBLAS_WORKSPACE_CONFIG=:4096:8``: cuBLAS needs a fixed workspace for reproducible matmuls. It is
  read when cuBLAS first runs in the process, so enable determinism before the first GPU matmul
  (the runner does it before loading weights);
- cuDNN: deterministic algorithms, no benchmarking (the VAE's convolutions);
- inductor (``compile_blocks``): no timing-based kernel choice.

Attention is left on the fused SDPA kernels: their forward pass (all inference needs) reduces in a
fixed order, and torch itself steers away from kernels it knows to be non-deterministic once
deterministic algorithms are on. The math backend would need the full L x L score matrix (tens of GB
at 2048^2). Determinism is about repeating a run on the same stack: another GPU model, CUDA, cuDNN or
torch version may still change the last bits, which is why :func:`determinism_state` records them.

On the CPU every kernel the pipeline uses is deterministic already; enabling the mode changes nothing
there but is safe to leave on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

CUBLAS_WORKSPACE_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_WORKSPACE = ":4096:8"


def determinism_state() -> dict:
    """What decides whether a run repeats bit for bit (recorded with every image)."""
    state = {
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "cublas_workspace": os.environ.get(CUBLAS_WORKSPACE_ENV),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    inductor = _inductor_config()
    if inductor is not None and hasattr(inductor, "deterministic"):
        state["inductor_deterministic"] = bool(inductor.deterministic)
    return state


def _inductor_config():
    try:
        import torch._inductor.config as inductor
    except Exception:  # pragma: no cover - builds without inductor
        return None
    return inductor


def _switches() -> dict:
    """The settings enable_determinism changes, as they are now (to restore them later)."""
    inductor = _inductor_config()
    return {
        "algorithms": (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ),
        "cublas": os.environ.get(CUBLAS_WORKSPACE_ENV),
        "cudnn": (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark),
        "inductor": getattr(inductor, "deterministic", None) if inductor is not None else None,
    }


def enable_determinism() -> dict:
    """Turn deterministic mode on (process-wide); returns the previous settings for restore_determinism."""
    previous = _switches()
    # keep a workspace setting the user chose (":16:8" is the other deterministic one)
    os.environ.setdefault(CUBLAS_WORKSPACE_ENV, CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    inductor = _inductor_config()
    if inductor is not None and hasattr(inductor, "deterministic"):
        inductor.deterministic = True
    return previous


def restore_determinism(previous: dict) -> None:
    """Put back the settings enable_determinism returned (the cuBLAS workspace stays as cuBLAS read it)."""
    on, warn_only = previous["algorithms"]
    torch.use_deterministic_algorithms(on, warn_only=warn_only)
    if previous["cublas"] is None:
        os.environ.pop(CUBLAS_WORKSPACE_ENV, None)
    else:
        os.environ[CUBLAS_WORKSPACE_ENV] = previous["cublas"]
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous["cudnn"]
    inductor = _inductor_config()
    if previous["inductor"] is not None and inductor is not None:
        inductor.deterministic = previous["inductor"]


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """``with deterministic():`` runs the block in deterministic mode, then restores the previous settings.

    ``deterministic(False)`` leaves the settings as they are (so a caller that enabled the mode for
    the whole process keeps it)."""
    if not enabled:
        yield
        return
    previous = enable_determinism()
    try:
        yield
    finally:
        restore_determinism(previous)
