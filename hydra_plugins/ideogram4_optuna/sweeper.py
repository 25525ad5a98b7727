"""The Hydra Sweeper class; the work happens in ``_search`` (imported only when a search runs, so Hydra's
plugin scan at every start never imports Optuna)."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        import importlib.util

        if importlib.util.find_spec("optuna") is None:
            raise ImportError("hydra/sweeper=optuna needs Optuna, in the [search] extra: pip install -e '.[search]'")
        from ._search import SearchSettings

        plain = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in settings.items()}
        self.settings = SearchSettings.from_config(plain)
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
        from ._search import run_search

        return run_search(self, arguments)
