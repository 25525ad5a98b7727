"""Ideogram 4 inference: a faithful, fast pipeline for the open-weight release.

Imports are lazy: `import ideogram4` (and config validation in the runner) does not load torch,
so a bad config is reported in well under a second.
"""

__all__ = ["Ideogram4Pipeline", "ModelConfig", "GenerationOutput", "CheckpointError"]
__version__ = "0.1.0"

_EXPORTS = {
    "Ideogram4Pipeline": "ideogram4.pipeline",
    "GenerationOutput": "ideogram4.pipeline",
    "ModelConfig": "ideogram4.checkpoints",
    "CheckpointError": "ideogram4.errors",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ideogram4' has no attribute {name!r}")
