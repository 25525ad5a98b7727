"""The compose-once sweeper: Hydra's ``BasicSweeper`` whose batch check keeps the configs it composes,
and a config loader that hands each kept config to the launcher instead of composing it again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# ~0.6 MB per composed config with the default prompt set: a bigger batch keeps the first KEEP_AT_MOST
# and composes the rest again at launch, as Hydra's basic sweeper does for all of them.
KEEP_AT_MOST = 128


class ComposedJobs:
    """A config loader that returns a job's config composed earlier (once, then forgets it)."""

    def __init__(self, loader: Any, keep_at_most: int = KEEP_AT_MOST) -> None:
        self.loader = loader
        self.keep_at_most = keep_at_most
        self._kept: dict[tuple[str, ...], list[DictConfig]] = {}  # a repeated job: one config per occurrence

    def compose_and_keep(self, master_config: DictConfig, sweep_overrides: list[str]) -> None:
        config = self.loader.load_sweep_config(master_config=master_config, sweep_overrides=sweep_overrides)
        if sum(map(len, self._kept.values())) < self.keep_at_most:
            self._kept.setdefault(tuple(sweep_overrides), []).append(config)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        if kept := self._kept.get(tuple(sweep_overrides)):
            return kept.pop(0)
        return self.loader.load_sweep_config(master_config=master_config, sweep_overrides=sweep_overrides)

    def __getattr__(self, name: str) -> Any:  # the rest of Hydra's ConfigLoader interface
        if name == "loader":  # not set yet: an instance being unpickled
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __getstate__(self) -> dict:  # a launcher that pickles itself (submitit, Ray) ships no kept configs
        return {**self.__dict__, "_kept": {}}


def keep_composed_configs(hydra_context: HydraContext) -> HydraContext:
    """The same context whose config loader keeps what a batch check composes for the launch."""
    if isinstance(hydra_context.config_loader, ComposedJobs):
        return hydra_context
    return HydraContext(config_loader=ComposedJobs(hydra_context.config_loader), callbacks=hydra_context.callbacks)


def check_and_keep(sweeper: Any, batch: Sequence[Sequence[str]]) -> None:
    """Hydra's batch check (every job composes, or the sweep stops before any starts), keeping the
    composed configs for the launcher."""
    loader = sweeper.hydra_context.config_loader
    for overrides in batch:
        loader.compose_and_keep(master_config=sweeper.config, sweep_overrides=list(overrides))


class ComposeOnceSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=keep_composed_configs(hydra_context), task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        check_and_keep(self, batch)
