"""Ideogram 4 experiments from a declarative config.

    python run.py model=tiny                      # real (tiny, random) images on a CPU
    python run.py sampler.steps=48 cfg=7          # the official model on a GPU
    python run.py -m cfg=4,7 seed=0,1,2           # a sweep, ending in a comparison grid

Configuration lives in conf/ (see README); outputs in outputs/.
"""

import sys

import hydra
from omegaconf import DictConfig

from ideogram4.experiment import register_configs
from ideogram4.experiment.config.schema import lora_overrides

register_configs()
sys.argv = lora_overrides(sys.argv)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from ideogram4.experiment.run.entry import run_job

    run_job(cfg)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # between jobs (inside a job, run_job says the same and exits 130)
        from ideogram4.experiment.run.entry import EXIT_INTERRUPTED, INTERRUPTED

        print(INTERRUPTED, file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
