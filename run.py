"""Ideogram 4 experiments from a declarative config.

    python run.py model=tiny                      # real (tiny, random) images on a CPU
    python run.py sampler.steps=48 cfg=7          # the official model on a GPU
    python run.py -m cfg=4,7 seed=0,1,2           # a sweep, ending in a comparison grid

Configuration lives in conf/ (see README); outputs in outputs/.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ideogram4.experiment import register_configs

register_configs()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from ideogram4.experiment.run.entry import run_job

    run_job(cfg)


def check_command_line() -> None:
    """Unknown keys and group options: one line, exit 2, before Hydra composes (and before any weights)."""
    from ideogram4.experiment.config.overrides import check_overrides, overrides_from_argv
    from ideogram4.experiment.config.problems import ConfigError
    from ideogram4.experiment.run.exits import exit_one_line

    overrides = overrides_from_argv(sys.argv[1:])
    try:
        if overrides:
            check_overrides(overrides, Path(__file__).resolve().parent / "conf")
    except ConfigError as e:
        exit_one_line(e)


if __name__ == "__main__":
    check_command_line()
    from ideogram4.experiment.run.exits import catch_interrupts

    catch_interrupts()
    try:
        main()
    except KeyboardInterrupt:  # between jobs (inside a job, run_job says the same and exits 130)
        from ideogram4.experiment.run.exits import EXIT_INTERRUPTED, INTERRUPTED

        print(INTERRUPTED, file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
