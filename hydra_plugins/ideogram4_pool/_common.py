"""What both pools share: the sweep's jobs, the runner that executes them inside a worker process (as
Hydra's own launchers do: compose the job's config, ``run_job``), lost jobs, and the closing report.

A worker composes each job's config itself from the overrides (as hydra-submitit-launcher does), so a
sweep of 10,000 jobs ships 10,000 override lists, not 10,000 composed configs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from omegaconf import OmegaConf, open_dict

from ideogram4.experiment.run.jobs import WORKER_ENV

log = logging.getLogger(__name__)


@dataclass
class PoolJob:
    idx: int  # Hydra's job number (the job folder's name with the default hydra.sweep.subdir)
    overrides: list[str]


def sweep_jobs(job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[PoolJob]:
    jobs = [PoolJob(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
    for job in jobs:
        log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
    return jobs


def config_error(key: str, value: Any, what: str, fix: str) -> NoReturn:
    """A launcher setting the sweep cannot run with: one line naming it, before any worker starts (exit 2)."""
    from ideogram4.experiment.config.problems import problem
    from ideogram4.experiment.run.exits import EXIT_CONFIG

    print(problem(f"hydra.launcher.{key}", value, what, fix), file=sys.stderr)
    sys.exit(EXIT_CONFIG)


class WorkerLost(RuntimeError):
    """The worker running a job died (killed, preempted, out of memory) before the job finished."""


def lost_return(job: PoolJob, why: str) -> JobReturn:
    message = (
        f"job {job.idx} ({' '.join(job.overrides)}) did not finish: {why}. Its finished images are kept; "
        "run the same command again to make the rest"
    )
    return failed_return(job, WorkerLost(message))


def failed_return(job: PoolJob, error: BaseException) -> JobReturn:
    ret = JobReturn(overrides=job.overrides, status=JobStatus.FAILED)
    ret.return_value = error
    return ret


def pipeline_loads() -> int:
    """Pipelines the runner's cache has loaded in this process so far."""
    from ideogram4.experiment.run import cache

    return cache.LOADS_IN_PROCESS


class JobRunner:
    """Runs the sweep's jobs in a worker process; pickled once per worker with the launcher's context."""

    def __init__(self, launcher: Any) -> None:
        self.hydra_context = launcher.hydra_context
        self.task_function = launcher.task_function
        self.config = launcher.config
        self.singletons = Singleton.get_state()

    def start(self, identity: dict) -> None:
        """Once per worker process: Hydra's global state, and the worker's name for the manifests."""
        Singleton.set_state(self.singletons)
        setup_globals()
        os.environ[WORKER_ENV] = json.dumps(identity, default=str)
        cwd = OmegaConf.select(self.config, "hydra.runtime.cwd")
        if cwd and Path(cwd).is_dir():  # relative sweep folders mean the same folder as in the launching process
            os.chdir(cwd)

    def run(self, job: PoolJob, job_id: str) -> JobReturn:
        try:
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(job.overrides))
            with open_dict(config.hydra.job):
                config.hydra.job.id = job_id
                config.hydra.job.num = job.idx
            return run_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        except Exception as e:  # composing failed: this job fails, the worker goes on with the next
            return failed_return(job, e)


def worker_identity(launcher: str, **ids: Any) -> dict:
    """What a worker says about itself (the runner adds the visible GPUs to each manifest line)."""
    return {"launcher": launcher, **ids, "host": socket.gethostname(), "pid": os.getpid()}


@dataclass
class WorkerReport:
    name: str  # "actor 0", "task 1"
    identity: dict
    jobs: list[int] = field(default_factory=list)
    loads: int = 0  # pipeline loads during this launch

    def line(self) -> str:
        where = ", ".join(
            f"{k} {self.identity[k]}" for k in ("host", "pid", "gpu_ids") if self.identity.get(k) is not None
        )
        return f"  {self.name} ({where}): job(s) {spans(self.jobs)}; {self.loads} pipeline load(s)"


def log_report(kind: str, reports: list[WorkerReport], returns: list[JobReturn]) -> None:
    failed = sum(r.status != JobStatus.COMPLETED for r in returns)
    loads = sum(r.loads for r in reports)
    tail = f", {failed} failed" if failed else ""
    log.info("%s: %d job(s) on %d worker(s), %d pipeline load(s)%s", kind, len(returns), len(reports), loads, tail)
    for r in reports:
        log.info(r.line())


def spans(numbers: list[int]) -> str:
    """0, 2-5, 9: job numbers as runs."""
    out: list[list[int]] = []
    for n in sorted(numbers):
        if out and out[-1][1] == n - 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out) or "none"
