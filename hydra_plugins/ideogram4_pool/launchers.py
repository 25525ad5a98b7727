"""The Launcher classes Hydra finds; each hands the sweep to its private module (Ray or submitit are
imported only when a sweep launches, never during Hydra's plugin scan)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class _PoolLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.params = {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in params.items()
        }
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function


class RayPoolLauncher(_PoolLauncher):
    """Long-lived Ray actors, each fed the next job of the sweep when it is idle."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from ._ray import launch

        return launch(self, job_overrides, initial_job_idx)


class SubmititPoolLauncher(_PoolLauncher):
    """A submitit job array on this machine: each task a process running a shard of the jobs."""

    executor = "local"
    name = "submitit_pool"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        try:
            from ._array import launch
        except ImportError as e:
            from ._common import config_error

            config_error("_target_", self.name, f"needs submitit ({e.name} is missing)", "pip install -e '.[slurm]'")
        return launch(self, job_overrides, initial_job_idx)


class SlurmPoolLauncher(SubmititPoolLauncher):
    """A SLURM job array through submitit: each task one allocation running a shard of the jobs."""

    executor = "slurm"
    name = "slurm_pool"
