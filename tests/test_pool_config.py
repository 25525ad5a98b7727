"""Pool launcher pieces that need no worker: settings checked before anything starts, the SLURM
executor's parameters, ``wait=false`` and the collect command (submitit replaced by fakes: no SLURM here)."""

from __future__ import annotations

import json
from pathlib import Path
from unittest.mock import MagicMock

import cloudpickle
import pytest
import submitit
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hydra_plugins.ideogram4_pool import _array, _collect, _ray
from hydra_plugins.ideogram4_pool._common import PoolJob, spans


def test_shards_are_contiguous_and_differ_by_at_most_one_job():
    jobs = [PoolJob(i, [f"cfg={i}"]) for i in range(11)]
    parts = _array.shards(jobs, 4)
    assert [[j.idx for j in p] for p in parts] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10]]
    assert spans([9, 0, 2, 3, 4, 7, 8]) == "0, 2-4, 7-9" and spans([]) == "none"


@pytest.mark.parametrize(
    "params, key",
    [
        ({"workers": 0}, "hydra.launcher.workers = 0"),
        ({"num_gpus": -1}, "hydra.launcher.num_gpus = -1"),
        ({"num_cpus": 0}, "hydra.launcher.num_cpus = 0"),
        ({"job_retries": -2}, "hydra.launcher.job_retries = -2"),
        ({"num_gpus": 0, "workers": None}, "hydra.launcher.workers = null"),
    ],
)
def test_ray_pool_settings_errors_are_one_line_and_exit_2(params, key, capsys):
    base = {"workers": 2, "num_gpus": 0, "num_cpus": 1, "job_retries": 1}
    with pytest.raises(SystemExit) as e:
        _ray.settings({**base, **params})
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith(key) and "Fix:" in err and "\n" not in err


@pytest.mark.parametrize(
    "params, resources, key",
    [
        ({"workers": None, "num_gpus": 1}, {"CPU": 2.0}, "hydra.launcher.num_gpus = 1"),  # a CPU machine
        ({"workers": 3, "num_gpus": 0}, {"CPU": 2.0}, "hydra.launcher.num_cpus = 1"),  # more than it can place
        ({"workers": 4, "num_gpus": 1}, {"CPU": 16.0, "GPU": 2.0}, "hydra.launcher.num_gpus = 1"),
    ],
)
def test_ray_pool_refuses_actors_a_local_ray_cannot_place(params, resources, key, monkeypatch, capsys):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: resources)
    with pytest.raises(SystemExit) as e:
        _ray.actor_count({"num_cpus": 1, "address": None, **params}, n_jobs=12)
    assert e.value.code == 2 and capsys.readouterr().err.startswith(key)


def test_ray_pool_sizes_the_pool_from_the_gpus_and_the_jobs(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 8.0})
    params = {"workers": None, "num_gpus": 1, "num_cpus": 4, "address": None}
    assert _ray.actor_count(params, n_jobs=100) == 8 and _ray.actor_count(params, n_jobs=3) == 3
    assert _ray.actor_count({**params, "num_gpus": 0.5}, n_jobs=100) == 16


class FakeTask:
    def __init__(self, job_id: str, error: Exception | None = None) -> None:
        self.job_id, self.error, self.state = job_id, error, "FAILED" if error else "COMPLETED"

    def results(self):
        if self.error:
            raise self.error
        return [None]


@pytest.fixture
def slurm_launcher(tmp_path):
    def make(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize(version_base="1.3", config_path=None):
            cfg = compose(
                overrides=["hydra/launcher=slurm_pool", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides],
                return_hydra_config=True,
            )
        launcher = instantiate(cfg.hydra.launcher)
        launcher.config, launcher.hydra_context, launcher.task_function = cfg, None, None
        return launcher

    yield make
    GlobalHydra.instance().clear()


def fake_executor(monkeypatch, job_ids: list[str]) -> tuple[MagicMock, MagicMock]:
    executor = MagicMock()
    executor.map_array.return_value = [FakeTask(j) for j in job_ids]
    auto = MagicMock(return_value=executor)
    monkeypatch.setattr(submitit, "AutoExecutor", auto)
    return auto, executor


def test_slurm_pool_builds_one_array_with_hydra_submitit_launcher_s_settings(slurm_launcher, monkeypatch, tmp_path):
    launcher = slurm_launcher(
        "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1", "hydra.launcher.workers=2"
    )
    auto, executor = fake_executor(monkeypatch, ["77_0", "77_1"])
    launcher.launch([[f"cfg={c}"] for c in range(5)], initial_job_idx=0)  # no result saved: every job is lost
    assert auto.call_args.kwargs == {
        "cluster": "slurm",
        "folder": str(tmp_path / "sweep" / ".submitit" / "%j"),
        "slurm_max_num_timeout": 0,
    }
    given = executor.update_parameters.call_args.kwargs
    assert given["slurm_partition"] == "gpu" and given["gpus_per_node"] == 1 and given["timeout_min"] == 60
    assert given["slurm_array_parallelism"] == 256 and not {"workers", "wait", "slurm_workers", "slurm_wait"} & set(
        given
    )
    runner, shards, tasks = executor.map_array.call_args.args
    assert [[j.idx for j in s] for s in shards] == [[0, 1, 2], [3, 4]] and tasks == [0, 1]
    assert runner.launcher == "slurm_pool"


def test_slurm_pool_without_waiting_prints_the_job_ids_and_the_collect_command(slurm_launcher, monkeypatch, capsys):
    launcher = slurm_launcher("hydra.launcher.wait=false", "hydra.launcher.workers=2")
    fake_executor(monkeypatch, ["91_0", "91_1"])
    with pytest.raises(SystemExit) as e:
        launcher.launch([["cfg=3"], ["cfg=7"], ["cfg=9"]], initial_job_idx=0)
    sweep = Path(launcher.config.hydra.sweep.dir)
    out = capsys.readouterr().out
    assert e.value.code == 0 and "91_0 91_1" in out and f"{_array.COLLECT} {sweep}" in out
    submission = (sweep / _array.RESULTS / _array.SUBMISSION).read_text()
    assert '"job_ids": [\n  "91_0",\n  "91_1"\n ]' in submission and '"cfg=9"' in submission


def test_slurm_pool_wait_false_is_refused_with_a_sweeper_that_needs_results(slurm_launcher, capsys):
    launcher = slurm_launcher("hydra.launcher.wait=false", "hydra/sweeper=optuna")
    with pytest.raises(SystemExit) as e:
        launcher.launch([["cfg=3"]], initial_job_idx=0)
    assert e.value.code == 2 and capsys.readouterr().err.startswith("hydra.launcher.wait = false")


class RecordingCallback:
    calls: list[str] = []

    def on_multirun_end(self, config, **kwargs) -> None:
        RecordingCallback.calls.append(str(config.hydra.sweep.dir))


def test_collect_reports_unfinished_jobs_and_runs_the_end_of_sweep_callbacks(tmp_path, monkeypatch, caplog):
    sweep = tmp_path / "sweep"
    results = sweep / _array.RESULTS
    results.mkdir(parents=True)
    shards = [
        [{"idx": 0, "overrides": ["cfg=3"]}, {"idx": 1, "overrides": ["cfg=5"]}],
        [{"idx": 2, "overrides": ["cfg=7"]}],
    ]
    submission = {
        "cluster": "slurm",
        "folder": str(sweep / ".submitit/%j"),
        "job_ids": ["5_0", "5_1"],
        "shards": shards,
    }
    (results / _array.SUBMISSION).write_text(json.dumps(submission))
    for idx in (0, 1):  # task 0 finished its shard; task 1 was killed before job 2 ended
        ret = JobReturn(overrides=shards[0][idx]["overrides"], status=JobStatus.COMPLETED)
        identity = {"launcher": "slurm_pool", "task": 0, "host": "node1", "pid": 42}
        _array.result_path(results, idx).write_bytes(cloudpickle.dumps((ret, identity, 0, 1)))
    config = {
        "hydra": {
            "sweep": {"dir": "elsewhere/${now:%H}"},
            "callbacks": {"rec": {"_target_": f"{__name__}.RecordingCallback"}},
        }
    }
    OmegaConf.save(OmegaConf.create(config), sweep / "multirun.yaml")
    tasks = [FakeTask("5_0"), FakeTask("5_1", RuntimeError("killed by the scheduler"))]
    monkeypatch.setattr(_collect, "submitted_tasks", lambda submission: tasks)
    RecordingCallback.calls = []
    with caplog.at_level("INFO"):
        code = _collect.main([str(sweep)])
    assert code == 1 and RecordingCallback.calls == [str(sweep)]
    text = caplog.text
    assert "slurm_pool: 3 job(s) on 2 worker(s), 1 pipeline load(s), 1 failed" in text
    assert "job 2 (cfg=7) did not finish: array task 1 (job 5_1) ended FAILED: killed by the scheduler" in text
    assert _collect.main([str(tmp_path / "nothing")]) == 2


def test_the_slurm_presets_share_one_gpu_sizing_and_pick_their_launchers():
    from runner_helpers import compose

    pool = compose(["hydra/launcher=slurm_pool_1gpu", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    per_job = compose(["hydra/launcher=slurm_1gpu"], return_hydra_config=True)
    pool, per_job = pool.hydra.launcher, per_job.hydra.launcher
    assert pool._target_.endswith("ideogram4_pool.launchers.SlurmPoolLauncher") and pool.workers == 8 and pool.wait
    assert per_job._target_.endswith("hydra_submitit_launcher.submitit_launcher.SlurmLauncher")
    sizing = ("gpus_per_node", "tasks_per_node", "nodes", "cpus_per_task", "mem_gb", "timeout_min", "array_parallelism")
    assert [pool[k] for k in sizing] == [per_job[k] for k in sizing] == [1, 1, 1, 8, 64, 240, 16]
    assert pool.partition == "gpu" and pool.name == per_job.name == "ideogram4"
