"""The Hydra Sweeper class; the work happens in ``_search`` (imported only when a search runs, so Hydra's
plugin scan at every start never imports Optuna)."""

from __future__ import annotations

import sys
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from ideogram4.experiment.config.problems import ConfigError, problem
        from ideogram4.experiment.run.exits import exit_one_line

        try:
            import optuna  # noqa: F401
        except ImportError as e:  # not installed, or broken: the same fix
            fix = "pip install -e '.[search]' (or pip install 'optuna>=4')"
            exit_one_line(ConfigError([problem("hydra/sweeper", "optuna", f"needs Optuna ({e})", fix)]))
        from ._search import SearchSettings

        plain = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in settings.items()}
        try:
            self.settings = SearchSettings.from_config(plain)
        except ValueError as e:  # each names its hydra.sweeper field and the fix
            exit_one_line(e if isinstance(e, ConfigError) else ConfigError([str(e)]))
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None
        self.in_flight = None  # the trials this process runs, with their heartbeats (_study.InFlight)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from ideogram4.experiment.run.exits import EXIT_RUNTIME, exit_one_line

        from ._search import SearchFailed, run_search

        try:
            return run_search(self, arguments)
        except SearchFailed as e:  # every trial failed: the trials' own reasons, in one line (exit 5, as a job)
            print(f"Search: {e}", file=sys.stderr)
            sys.exit(EXIT_RUNTIME)
        except Exception as e:  # a setting or the study's storage: one line (exit 2 or 4); a bug: its traceback
            exit_one_line(e)
