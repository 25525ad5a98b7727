"""The Hydra experiment runner (the only layer that reads a Hydra config).

Kept import-light: heavy libraries (torch, diffusers, transformers, wandb) load only when a job
actually generates, so a config mistake is reported in well under a second.
"""

from .checks import ConfigError
from .config import register_configs
from .plan import build_plan


def run(cfg, out_dir=None):
    """Run one job from a composed config (see ideogram4.experiment.runner.run)."""
    from .runner import run as _run

    return _run(cfg, out_dir=out_dir)


__all__ = ["ConfigError", "build_plan", "register_configs", "run"]
