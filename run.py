"""Ideogram 4 experiments from a declarative config.

    python run.py model=tiny                      # real (tiny, random) images on a CPU
    python run.py sampler.steps=48 cfg=7          # the official model on a GPU
    python run.py -m cfg=4,7 seed=0,1,2           # a sweep, ending in a comparison grid

Configuration lives in conf/ (see README); outputs in outputs/.
"""

import logging
import sys

import hydra
from omegaconf import DictConfig

from ideogram4.errors import CheckpointError
from ideogram4.experiment import ConfigError, register_configs

register_configs()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from ideogram4.experiment import run

    try:
        run(cfg)
    except ConfigError as e:
        logging.getLogger("ideogram4.experiment").error("%s", e)
        sys.exit(2)
    except CheckpointError as e:  # weights missing, corrupt, gated, unreachable: the message says what to do
        logging.getLogger("ideogram4.experiment").error("Weights: %s", e)
        sys.exit(3)


if __name__ == "__main__":
    main()
