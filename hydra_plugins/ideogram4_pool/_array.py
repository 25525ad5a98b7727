"""``hydra/launcher=submitit_pool`` and ``slurm_pool``: one submitit job array of K tasks; task k runs the
k-th contiguous shard of the sweep's jobs in one process, so the runner's cache loads the weights once
per task (contiguous shards keep a model sweep's jobs of one model together).

Each job's result is saved as soon as the job ends (``SWEEP_DIR/.submitit/pool/job_<n>.pkl``): a task
killed by the scheduler loses only its unfinished jobs, and a task SLURM requeues (preemption, or a
timeout with ``max_num_timeout`` > 0) runs only the jobs of its shard without a result. With
``wait=false`` the launcher submits, prints the array's job ids and the command that collects the
results later (``python -m hydra_plugins.ideogram4_pool._collect SWEEP_DIR``), and exits.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cloudpickle
from hydra.core.utils import JobReturn, configure_log, setup_globals
from omegaconf import OmegaConf

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

RESULTS = Path(".submitit") / "pool"  # in the sweep folder
SUBMISSION = "submission.json"
COLLECT = "python -m hydra_plugins.ideogram4_pool._collect"


def result_path(results: Path, idx: int) -> Path:
    return results / f"job_{idx}.pkl"


class ShardRunner:
    """What each array task runs: its shard of jobs, one after the other, in one process."""

    def __init__(self, runner: JobRunner, results: Path, launcher: str) -> None:
        self.runner, self.results, self.launcher = runner, results, launcher

    def __call__(self, shard: list[PoolJob], task: int) -> dict:
        import submitit

        env = submitit.JobEnvironment()
        identity = worker_identity(self.launcher, task=task, job_id=env.job_id)
        self.runner.start(identity)
        at_start = pipeline_loads()
        for job in shard:
            path = result_path(self.results, job.idx)
            if path.exists():  # a requeued task: this job finished before
                continue
            ret = self.runner.run(job, job_id=str(env.job_id))
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(cloudpickle.dumps((ret, identity, at_start, pipeline_loads())))
            tmp.replace(path)
        return identity

    def checkpoint(self, shard: list[PoolJob], task: int) -> Any:
        """Preempted or timed out on SLURM: requeue the same shard (jobs with a result are skipped)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, shard, task)


def shards(jobs: list[PoolJob], k: int) -> list[list[PoolJob]]:
    """k contiguous shards whose sizes differ by at most one."""
    size, extra = divmod(len(jobs), k)
    out, start = [], 0
    for i in range(k):
        end = start + size + (i < extra)
        out.append(jobs[start:end])
        start = end
    return out


def make_executor(kind: str, params: dict) -> Any:
    """A submitit executor from hydra-submitit-launcher's settings (shared keys as they are, the rest
    prefixed with the cluster, as submitit expects)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = dict(params)
    init = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init[f"{kind}_max_num_timeout"] = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster=kind, **init)
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in shared else f"{kind}_{k}": v for k, v in params.items()})
    return executor


def wait_for(tasks: list[Any]) -> dict[int, str]:
    """Wait for every task; task index -> how it ended, for those that did not end well."""
    ended = {}
    for k, task in enumerate(tasks):
        try:
            task.results()
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            ended[k] = f"array task {k} (job {task.job_id}) ended {task.state}: {first[:300]}"
    return ended


def gather(
    jobs_by_task: list[list[PoolJob]], results: Path, ended: dict[int, str]
) -> tuple[dict[int, JobReturn], list[WorkerReport]]:
    returns: dict[int, JobReturn] = {}
    reports = []
    for k, shard in enumerate(jobs_by_task):
        report = WorkerReport(f"task {k}", {})
        loads: dict[int, tuple[int, int]] = {}  # process -> (loads at its start, loads after its last job)
        for job in shard:
            path = result_path(results, job.idx)
            if not path.exists():
                returns[job.idx] = lost_return(job, ended.get(k, f"array task {k} ended without running it"))
                continue
            ret, identity, at_start, after = cloudpickle.loads(path.read_bytes())
            returns[job.idx] = ret
            report.identity = identity
            report.jobs.append(job.idx)
            loads[identity["pid"]] = (at_start, max(after, loads.get(identity["pid"], (0, 0))[1]))
        report.loads = sum(after - start for start, after in loads.values())
        reports.append(report)
    return returns, reports


def settings(params: dict, config: Any) -> tuple[int, bool, dict]:
    params = dict(params)
    workers, wait = params.pop("workers"), params.pop("wait", True)
    if not isinstance(workers, int) or workers < 1:
        config_error("workers", workers, "must be a whole number >= 1", "e.g. hydra.launcher.workers=4")
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
    if not wait and not sweeper.endswith("BasicSweeper"):
        what = f"the sweeper ({sweeper.rsplit('.', 1)[-1]}) needs each job's result before it goes on"
        config_error("wait", False, what, "keep hydra.launcher.wait=true with this sweeper")
    return workers, wait, params


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    workers, wait, params = settings(launcher.params, launcher.config)
    kind, name = launcher.executor, launcher.name
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir)).absolute()
    results = sweep_dir / RESULTS
    results.mkdir(parents=True, exist_ok=True)
    jobs = sweep_jobs(job_overrides, initial_job_idx)
    for job in jobs:  # a result left by an earlier run of this sweep folder is not this run's
        result_path(results, job.idx).unlink(missing_ok=True)
    parts = shards(jobs, min(workers, len(jobs)))
    executor = make_executor(kind, params)
    runner = ShardRunner(JobRunner(launcher), results, name)
    tasks = executor.map_array(runner, parts, list(range(len(parts))))
    log.info("%s: array of %d task(s) for %d job(s): %s", name, len(tasks), len(jobs), tasks[0].job_id.split("_")[0])
    if not wait:
        exit_without_waiting(sweep_dir, kind, params, tasks, parts)
    returns, reports = gather(parts, results, wait_for(tasks))
    ordered = [returns[job.idx] for job in jobs]
    log_report(name, reports, ordered)
    return ordered


def exit_without_waiting(
    sweep_dir: Path, kind: str, params: dict, tasks: list[Any], parts: list[list[PoolJob]]
) -> None:
    """wait=false: record the submission for the collect command, say what to run later, end here."""
    submission = {
        "cluster": kind,
        "folder": params["submitit_folder"],
        "job_ids": [t.job_id for t in tasks],
        "shards": [[{"idx": j.idx, "overrides": j.overrides} for j in part] for part in parts],
    }
    (sweep_dir / RESULTS / SUBMISSION).write_text(json.dumps(submission, indent=1))
    print(f"Submitted {len(tasks)} array task(s): {' '.join(t.job_id for t in tasks)}")
    print(
        f"Not waiting (hydra.launcher.wait=false). When they end, build the grid and summary with:\n  {COLLECT} {sweep_dir}"
    )
    sys.exit(0)
