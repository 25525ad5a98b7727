import logging
import os
from pathlib import Path

import pytest

# The caller's shell must not change what a test sees: variables pointing at the user's W&B, Hugging
# Face or cache folders, credentials or Hydra's error mode are dropped before any module reads them
# (some are read at import). Then: never the network (hub off, W&B offline), no ~/.netrc credentials.
_CALLER_PREFIXES = ("WANDB_", "HF_", "HUGGING_FACE_", "HUGGINGFACE_", "TRANSFORMERS_", "IDEOGRAM4_", "HYDRA_")
for _key in [k for k in os.environ if k.startswith(_CALLER_PREFIXES)]:
    del os.environ[_key]
os.environ.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", WANDB_SILENT="true", NETRC=os.devnull + "-no-netrc")


def pytest_collection_modifyitems(items):
    """Every test that runs `python run.py` in a subprocess (it takes the `runner_env` fixture) is slow:
    `pytest -m "not slow"` is the quick lane for development; CI (.ci/run) runs everything."""
    for item in items:
        if "runner_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _restore_environment():
    """Each test starts from the same environment: what a test or the code under test sets (W&B's
    staging folders, determinism's cuBLAS setting) is undone after it."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """Each test starts with the root logger as it found it. A run made in-process (Hydra's job logging, a
    CLI's basicConfig) puts handlers on the root logger bound to the streams of that moment, which pytest
    closes after the test; the next test's log lines would then print "Logging error" tracebacks into what
    it reads. Handlers of other loggers bound to closed streams (a library imported during a test binds
    its handler to that test's captured stderr) are dropped too."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        for handler in list(getattr(logger, "handlers", [])):
            if getattr(getattr(handler, "stream", None), "closed", False):
                logger.removeHandler(handler)


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


@pytest.fixture(scope="session")
def tiny_root(tiny_original) -> str:
    """The folder holding the session's tiny checkpoints (built once by tiny_original)."""
    return str(Path(tiny_original).parent)


@pytest.fixture
def runner_env(tmp_path, tiny_root) -> dict:
    """A subprocess run's environment: the session's tiny checkpoint (IDEOGRAM4_CACHE), no W&B credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        IDEOGRAM4_CACHE=tiny_root,
        HF_HUB_OFFLINE="1",
        NETRC=str(tmp_path / "no-netrc"),
        WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
        WANDB_SILENT="true",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    return env
