"""The Hydra experiment runner (the only layer that reads a Hydra config).

- ``config/``: the typed config schema, its checks and the plan built from it (prompts included).
- ``run/``: running jobs and writing their outputs (images, manifest, tracker, provenance).
- ``summary/``: per-setting tables with prompt-clustered intervals and the summary plot of a sweep.
- ``reproduce/``: regenerating an image from its PNG and comparing the pixels.
- ``grid.py`` (the comparison grid of a sweep) and ``score.py`` (rescoring saved images).

Kept import-light: heavy libraries (torch, diffusers, transformers, wandb) load only when a job
actually generates, so a config mistake is reported in well under a second. One job runs through
``ideogram4.experiment.run.runner.run``.
"""

from .config.plan import build_plan
from .config.problems import ConfigError
from .config.schema import register_configs

__all__ = ["ConfigError", "build_plan", "register_configs"]
