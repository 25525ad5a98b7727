"""The pool launchers (issue 21): Hydra's own launcher test suites, and tiny-model sweeps that load the
pipeline once per worker, survive a killed worker and resume without re-making images.

Ray runs locally with CPU actors, submitit with its local executor (one process per array task).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from runner_helpers import REPO, TINY, read_manifest, run_cli

from hydra_plugins.ideogram4_pool import launchers

pytestmark = pytest.mark.slow

# CPU actors on a small object store (CI has 2 cores and little shared memory)
RAY = ["hydra.launcher.num_gpus=0", "hydra.launcher.workers=2", "+hydra.launcher.init.object_store_memory=78643200"]
SUBMITIT = ["hydra.launcher.workers=2", "hydra.launcher.timeout_min=5"]
POOLS = {"ray_pool": RAY, "submitit_pool": SUBMITIT}


@pytest.fixture(scope="module", autouse=True)
def _ray_ends_with_this_module():
    """The suites run Ray in this process: end it (and its actors) before other test modules run."""
    yield
    from hydra_plugins.ideogram4_pool import _ray

    if _ray._POOL is not None:
        _ray._POOL.close()
        _ray._POOL = None
    import ray

    ray.shutdown()


@pytest.fixture(autouse=True)
def _hydra_compat_version_base():
    """Hydra's launcher suites assume the version base a fresh process gets (1.1: a job runs in its own
    folder), as in Hydra's per-plugin test runs; our other tests leave 1.3 set in this process (Hydra keeps
    it in a singleton), where jobs stay in the caller's folder and the suites' log checks fail."""
    from hydra import version

    base = version.VersionBase.instance()
    before = base.getbase()
    base.setbase(version.__compat_version__)
    yield
    base.version_base = before


@pytest.fixture(autouse=True)
def _plugins_on_path(monkeypatch):
    """The integration suite's apps run in subprocesses: they find the plugins on PYTHONPATH (CI installs
    the project; a checkout run uses the repository)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


@pytest.mark.parametrize(
    "cls", [launchers.RayPoolLauncher, launchers.SubmititPoolLauncher, launchers.SlurmPoolLauncher]
)
def test_discovery(cls):
    assert cls.__name__ in [x.__name__ for x in Plugins.instance().discover(Launcher)]


@pytest.mark.parametrize("launcher_name, overrides", list(POOLS.items()))
class TestPoolLaunchers(LauncherTestSuite):
    pass


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        pytest.param(
            {},
            ["-m", "hydra/hydra_logging=disabled", "hydra/job_logging=disabled", f"hydra/launcher={name}", *o],
            id=name,
        )
        for name, o in POOLS.items()
    ],
)
class TestPoolLaunchersIntegration(IntegrationTestSuite):
    pass


def test_ray_pool_keeps_its_actors_for_the_next_batch(hydra_sweep_runner, tmpdir):
    """A sweeper that launches several batches (Optuna with n_jobs, max_batch_size) reuses the actors, so
    each keeps its loaded weights for the whole sweep."""
    sweep = hydra_sweep_runner(
        calling_file=None,
        calling_module="hydra.test_utils.a_module",
        task_function=lambda _: os.getpid(),
        config_path="configs",
        config_name="compose.yaml",
        overrides=["hydra/launcher=ray_pool", *RAY, "hydra.sweeper.max_batch_size=2", "+a=0,1,2,3"],
        temp_dir=tmpdir,
    )
    with sweep:
        assert len(sweep.returns) == 2
        pids = [r.return_value for batch in sweep.returns for r in batch]
    assert len(pids) == 4 and len(set(pids)) == 2 and os.getpid() not in pids


# ---- the runner on a pool: 12 jobs (cfg x seed), 2 images each, 2 workers ----

SWEEP = ["-m", *TINY, "prompts=smoke", "tracker=none", "progress=false", "cfg=3,5,7", "seed=0,1,2,3"]
IMAGES = 12 * 2


def sweep_cmd(name: str, sweep: Path, steps: int = 2) -> list[str]:
    sweep_args = [a if not a.startswith("sampler.steps=") else f"sampler.steps={steps}" for a in SWEEP]
    return [*sweep_args, f"hydra/launcher={name}", *POOLS[name], f"hydra.sweep.dir={sweep}"]


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((d for d in sweep.iterdir() if d.name.isdigit()), key=lambda d: int(d.name))


def loads_in_logs(sweep: Path) -> int:
    """Pipeline loads, counted from the job logs (the runner logs each load once, in the job that made it)."""
    return sum((d / "run.log").read_text().count("Loaded pipeline ") for d in job_dirs(sweep))


def manifest_lines(sweep: Path) -> list[dict]:
    return [r for d in job_dirs(sweep) if (d / "manifest.jsonl").exists() for r in read_manifest(d)]


def assert_every_image_made_once(sweep: Path) -> list[dict]:
    records = manifest_lines(sweep)
    made = [(r["job"]["num"], r["image"]) for r in records]
    assert len(made) == len(set(made)) == IMAGES  # a re-made image would add a second line
    for r in records:
        assert (sweep / str(r["job"]["num"]) / r["image"]).is_file()
    return records


@pytest.mark.parametrize("name", list(POOLS))
def test_twelve_jobs_on_two_workers_load_the_pipeline_twice(name, tmp_path, runner_env):
    sweep = tmp_path / "sweep"
    res = run_cli(sweep_cmd(name, sweep), runner_env, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert len(job_dirs(sweep)) == 12 and loads_in_logs(sweep) == 2
    assert f"{name}: 12 job(s) on 2 worker(s), 2 pipeline load(s)" in out
    records = assert_every_image_made_once(sweep)
    # each line names its worker and load: two workers, one load each, every job on one of them
    workers = {(r["pipeline"]["worker"]["launcher"], r["pipeline"]["worker"]["pid"]) for r in records}
    assert {w[0] for w in workers} == {name} and len(workers) == 2
    loads = {r["pipeline"]["load_id"]: r["pipeline"]["pid"] for r in records}
    assert len(loads) == 2 and set(loads.values()) == {pid for _, pid in workers}
    assert all(r["pipeline"]["worker"]["host"] for r in records)
    # one grid and one summary for the whole sweep, built from the job folders
    assert (sweep / "comparison_grid.png").is_file()
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 3  # header + one row per cfg


def wait_for_lines(sweep: Path, enough, proc: subprocess.Popen, timeout: float = 600) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        lines = manifest_lines(sweep) if sweep.exists() else []
        if enough(lines):
            return lines
        time.sleep(0.2)
    raise AssertionError(f"the sweep ended or stalled before the kill point: {proc.poll()}")


def start_sweep(name: str, sweep: Path, env: dict) -> subprocess.Popen:
    """A sweep slow enough per image (24 steps) that a worker is still mid-shard when the test kills it,
    also on a loaded CI machine (at 2 steps a worker could finish its shard between two polls)."""
    cmd = [sys.executable, str(REPO / "run.py"), *sweep_cmd(name, sweep, steps=24)]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_ray_pool_a_killed_actor_s_job_goes_to_the_other_and_a_rerun_makes_nothing(tmp_path, runner_env):
    sweep = tmp_path / "sweep"
    proc = start_sweep("ray_pool", sweep, runner_env)
    first = wait_for_lines(sweep, lambda lines: len(lines) >= 1, proc)
    os.kill(first[0]["pipeline"]["pid"], signal.SIGKILL)  # an actor, mid-sweep (it has made one image)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    assert "died while running job" in out and "goes to another actor" in out
    assert_every_image_made_once(sweep)
    again = run_cli(sweep_cmd("ray_pool", sweep, steps=24), runner_env, timeout=900)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "ray_pool: 12 job(s) on 2 worker(s), 0 pipeline load(s)" in again.stdout + again.stderr
    assert_every_image_made_once(sweep)


def test_submitit_pool_a_killed_task_loses_only_its_unfinished_jobs_and_a_rerun_completes(tmp_path, runner_env):
    sweep = tmp_path / "sweep"
    proc = start_sweep("submitit_pool", sweep, runner_env)
    # kill the second task (jobs 6-11) as soon as it has made its first image: partway through its shard
    lines = wait_for_lines(sweep, lambda lines: any(r["pipeline"]["worker"]["task"] == 1 for r in lines), proc)
    victim = next(r["pipeline"]["pid"] for r in lines if r["pipeline"]["worker"]["task"] == 1)
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode != 0 and "WorkerLost" in out and "run the same command again" in out, out[-4000:]
    before = {(r["job"]["num"], r["image"]) for r in manifest_lines(sweep)}
    assert {n for n, _ in before} >= set(range(6))  # task 0's whole shard is done
    assert len(before) < IMAGES

    again = run_cli(sweep_cmd("submitit_pool", sweep, steps=24), runner_env, timeout=900)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-4000:]
    assert "submitit_pool: 12 job(s) on 2 worker(s), 1 pipeline load(s)" in out  # only task 1 had work left
    records = assert_every_image_made_once(sweep)
    assert {(r["job"]["num"], r["image"]) for r in records} >= before
    assert (sweep / "comparison_grid.png").is_file() and (sweep / "summary.csv").is_file()
