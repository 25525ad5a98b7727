"""``hydra/launcher=ray_pool``: N long-lived Ray actors, each with its own pipeline cache, fed the sweep's
jobs as they free up (one job per idle actor, results taken with ``ray.wait``); the results go back to
Hydra in job order.

An actor that dies (killed, node lost, out of memory) takes only its running job with it: that job is
submitted to the pool again (``job_retries`` times) and resumes from its manifest on another actor; the
dead actor is not replaced. The pool lives as long as the launching process (Ray ends the actors with
it), so a search that launches many small batches loads the weights once per actor, not once per batch.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, configure_log, setup_globals

from ._common import (
    JobRunner,
    PoolJob,
    WorkerReport,
    config_error,
    log_report,
    lost_return,
    pipeline_loads,
    sweep_jobs,
    worker_identity,
)

log = logging.getLogger(__name__)

_POOL: RayPool | None = None  # one pool per launching process (a new launcher replaces the old pool)


class PoolActor:
    """One worker: a process that keeps the runner's pipeline cache between jobs."""

    def __init__(self, runner: JobRunner, index: int) -> None:
        import ray

        actor_id = ray.get_runtime_context().get_actor_id()
        self.identity = worker_identity("ray_pool", actor=index, actor_id=actor_id, gpu_ids=ray.get_gpu_ids())
        self.runner = runner
        runner.start(self.identity)

    def describe(self) -> tuple[dict, int]:
        return self.identity, pipeline_loads()

    def run(self, job: PoolJob) -> tuple[int, str, JobReturn, int]:
        ret = self.runner.run(job, job_id=f"ray_pool_actor{self.identity['actor']}_{job.idx}")
        return job.idx, self.identity["actor_id"], ret, pipeline_loads()


class RayPool:
    def __init__(self, owner: int, runner: JobRunner, options: dict) -> None:
        self.owner, self.runner, self.options = owner, runner, options
        self.reports: dict[str, WorkerReport] = {}  # actor id -> what it did in the current launch
        self.loads: dict[str, int] = {}  # actor id -> pipeline loads in its process so far
        self.handles: dict[str, Any] = {}  # actor id -> the live actor (a dead one is dropped, not replaced)

    def grow(self, n: int) -> None:
        """Start actors until there are n (waits until each has started)."""
        import ray

        remote = ray.remote(PoolActor).options(**self.options)
        new = [remote.remote(self.runner, len(self.handles) + i) for i in range(n - len(self.handles))]
        for actor, (identity, loads) in zip(new, ray.get([a.describe.remote() for a in new])):
            self.handles[identity["actor_id"]] = actor
            self.reports[identity["actor_id"]] = WorkerReport(f"actor {identity['actor']}", identity)
            self.loads[identity["actor_id"]] = loads

    def close(self) -> None:
        import ray

        for actor in self.handles.values():
            ray.kill(actor)
        self.handles = {}

    def run(self, jobs: list[PoolJob], retries: int) -> dict[int, JobReturn]:
        """Each idle actor takes the next job; results arrive as jobs finish (``ray.wait``). Every running
        job is tracked with its actor, so a job lost with its actor is known exactly and queued again."""
        import ray
        from ray.exceptions import RayActorError

        for report in self.reports.values():
            report.jobs, report.loads = [], 0
        queue, idle, running = deque(jobs), list(self.handles), {}  # running: object ref -> (actor id, job)
        tries, results = Counter(), {}
        while queue or running:
            while queue and idle:
                actor_id, job = idle.pop(0), queue.popleft()
                running[self.handles[actor_id].run.remote(job)] = (actor_id, job)
            if not running:
                break  # jobs left and no actor alive
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor_id, job = running.pop(ref)
            try:
                idx, _, ret, loads = ray.get(ref)
            except RayActorError as e:
                self.drop_dead(actor_id, job, e)
                if tries[job.idx] < retries and self.handles:
                    tries[job.idx] += 1
                    log.warning("Job %d goes to another actor (retry %d of %d)", job.idx, tries[job.idx], retries)
                    queue.appendleft(job)
                else:
                    results[job.idx] = lost_return(job, f"its actor died ({e.__class__.__name__}), no retry left")
                continue
            idle.append(actor_id)
            results[idx] = ret
            report = self.reports[actor_id]
            report.jobs.append(idx)
            report.loads += loads - self.loads[actor_id]
            self.loads[actor_id] = loads
        for job in queue:  # never started: every actor died first
            results[job.idx] = lost_return(job, "every actor of the pool died")
        return results

    def drop_dead(self, actor_id: str, job: PoolJob, error: Exception) -> None:
        """Take a dead actor out of the pool (it is not replaced)."""
        self.handles.pop(actor_id)
        name = self.reports[actor_id].name
        log.warning("%s died while running job %d: %s", name, job.idx, str(error).splitlines()[0])


def settings(params: dict) -> dict:
    """The launcher's settings, checked before Ray starts (each mistake: one line, exit 2)."""
    workers, gpus, cpus, retries = (params.get(k) for k in ("workers", "num_gpus", "num_cpus", "job_retries"))
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        config_error(
            "workers", workers, "must be a whole number >= 1", "e.g. hydra.launcher.workers=2 (or null: one per GPU)"
        )
    if not isinstance(gpus, (int, float)) or gpus < 0:
        config_error("num_gpus", gpus, "must be a number >= 0", "hydra.launcher.num_gpus=1 (0 for CPU actors)")
    if not isinstance(cpus, (int, float)) or cpus <= 0:
        config_error("num_cpus", cpus, "must be a number > 0", "e.g. hydra.launcher.num_cpus=1")
    if not isinstance(retries, int) or retries < 0:
        config_error("job_retries", retries, "must be a whole number >= 0", "e.g. hydra.launcher.job_retries=1")
    if workers is None and gpus == 0:
        config_error("workers", None, "CPU actors (num_gpus=0) need a count", "set hydra.launcher.workers=N")
    return params


def start_ray(params: dict) -> None:
    try:
        import ray
    except ImportError:
        config_error("_target_", "ray_pool", "Ray is not installed", "pip install -e '.[ray]' (or pip install ray)")
    if ray.is_initialized():
        return
    kwargs = dict(params.get("init") or {})
    # no address: a Ray of our own on this machine, never whichever cluster `ray start` left running here
    kwargs.setdefault("address", params.get("address") or "local")
    ray.init(**kwargs)


def actor_count(params: dict, n_jobs: int) -> int:
    """How many actors this sweep gets; on a local Ray, a request it cannot place is an error, not a hang."""
    import ray

    have = ray.cluster_resources()
    gpus, cpus, workers = params["num_gpus"], params["num_cpus"], params["workers"]
    if workers is None:
        workers = int(have.get("GPU", 0) // gpus)
        if workers < 1:
            fix = "hydra.launcher.num_gpus=0 hydra.launcher.workers=N for CPU actors, or a GPU cluster (address=auto)"
            config_error("num_gpus", gpus, f"each actor needs {gpus} GPU(s); Ray sees {have.get('GPU', 0)}", fix)
    local = not params.get("address")
    for key, need, field in (("GPU", gpus, "num_gpus"), ("CPU", cpus, "num_cpus")):
        if local and need and workers * need > have.get(key, 0):
            what = f"{workers} actor(s) x {need} {key} need {workers * need:g}; this machine's Ray has {have.get(key, 0):g}"
            config_error(
                field, need, what, "fewer hydra.launcher.workers, a smaller share, or a cluster (address=auto)"
            )
    return min(workers, n_jobs)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    global _POOL
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    params = settings(launcher.params)
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    jobs = sweep_jobs(job_overrides, initial_job_idx)
    start_ray(params)
    n = actor_count(params, len(jobs))
    if _POOL is not None and _POOL.owner != id(launcher):
        _POOL.close()
        _POOL = None
    if _POOL is None:
        options = dict(params.get("actor_options") or {}, num_gpus=params["num_gpus"], num_cpus=params["num_cpus"])
        _POOL = RayPool(id(launcher), JobRunner(launcher), options)
    if len(_POOL.handles) < n:
        log.info(
            "ray_pool: starting %d actor(s) (%g GPU, %g CPU each)",
            n - len(_POOL.handles),
            params["num_gpus"],
            params["num_cpus"],
        )
        _POOL.grow(n)
    results = _POOL.run(jobs, params["job_retries"])
    returns = [results[job.idx] for job in jobs]
    log_report("ray_pool", list(_POOL.reports.values()), returns)
    return returns
