"""Ideogram 4 inference: a faithful, fast pipeline for the open-weight release."""

from .checkpoints import CheckpointError, ModelConfig
from .pipeline import GenerationOutput, Ideogram4Pipeline

__all__ = ["Ideogram4Pipeline", "ModelConfig", "GenerationOutput", "CheckpointError"]
__version__ = "0.1.0"
