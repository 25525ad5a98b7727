"""Weights: source -> local files (sources), files -> tensors (readers), tensors -> modules (loaders)."""

from ..errors import CheckpointError
from .loaders import dit_config_from, load_text_encoder, load_transformer, load_vae, read_dit_state_dict
from .readers import WEIGHT_FILES, SafetensorsReader, detect_format, fill_module, fingerprint, weight_files
from .sources import (
    COMPONENTS,
    DEFAULT_TOKENIZER_REPO,
    REQUIRED,
    ModelConfig,
    resolve_model_configs,
    resolve_source,
    resolve_tokenizer,
)

__all__ = [
    "COMPONENTS",
    "DEFAULT_TOKENIZER_REPO",
    "REQUIRED",
    "WEIGHT_FILES",
    "CheckpointError",
    "ModelConfig",
    "SafetensorsReader",
    "detect_format",
    "dit_config_from",
    "fill_module",
    "fingerprint",
    "load_text_encoder",
    "load_transformer",
    "load_vae",
    "read_dit_state_dict",
    "resolve_model_configs",
    "resolve_source",
    "resolve_tokenizer",
    "weight_files",
]
