import os

import pytest

# Never reach the network from tests: the hub is off, W&B is offline unless a test says otherwise.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """One build of each tiny layout per test session (shared by every test that needs weights)."""
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def tiny_original(tiny_cache):
    from ideogram4.tiny import ensure_tiny_checkpoint

    return ensure_tiny_checkpoint(tiny_cache, "original")


@pytest.fixture(scope="session")
def tiny_fp8(tiny_cache):
    from ideogram4.tiny import ensure_tiny_checkpoint

    return ensure_tiny_checkpoint(tiny_cache, "fp8")


@pytest.fixture(scope="session")
def tiny_diffusers(tiny_cache):
    from ideogram4.tiny import ensure_tiny_checkpoint

    return ensure_tiny_checkpoint(tiny_cache, "diffusers")


@pytest.fixture(scope="session")
def pipe(tiny_original):
    import torch

    from ideogram4 import Ideogram4Pipeline

    return Ideogram4Pipeline.from_pretrained(tiny_original, torch_dtype=torch.float32, device="cpu")
