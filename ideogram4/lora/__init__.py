"""LoRA adapters: reading the files (`files`), placing their keys on the DiT (`layouts`) and the
pipeline's load/scale/unload methods (`manager`). The low-rank layer itself is `ideogram4.models.lora`."""

from .files import LoraError, read_lora
from .layouts import map_lora
from .manager import LoraInfo, LoraManager, linear_shapes

__all__ = ["LoraError", "LoraInfo", "LoraManager", "linear_shapes", "map_lora", "read_lora"]
