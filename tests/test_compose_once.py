"""The compose-once sweeper (hydra/sweeper=compose_once, the default): every job's config is composed
once, checked before any job starts, and each job still runs with its own config."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ComposedJobs(*args, **kwargs):
    # looked up at call time: Hydra's plugin scan (run by other tests in this process) re-executes the
    # plugin module, and pickle wants the class that the module holds now
    from hydra_plugins.ideogram4_sweeper import sweeper

    return sweeper.ComposedJobs(*args, **kwargs)


class CountingLoader:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def load_sweep_config(self, master_config, sweep_overrides):
        self.calls.append(list(sweep_overrides))
        return {"overrides": list(sweep_overrides), "n": len(self.calls)}

    def other_method(self) -> str:
        return "delegated"


def test_a_checked_job_is_launched_with_the_config_composed_by_the_check():
    loader = CountingLoader()
    jobs = ComposedJobs(loader)
    batch = [["seed=0"], ["seed=1"], ["seed=0"]]  # a repeated job keeps one config per occurrence
    for overrides in batch:
        jobs.compose_and_keep(master_config=None, sweep_overrides=overrides)
    launched = [jobs.load_sweep_config(None, overrides) for overrides in batch]
    assert len(loader.calls) == 3
    assert [c["overrides"] for c in launched] == batch
    assert len({id(c) for c in launched}) == 3  # never the same object for two jobs
    assert jobs.load_sweep_config(None, ["seed=0"])["n"] == 4  # nothing left kept: composed afresh
    assert jobs.other_method() == "delegated"


def test_kept_configs_are_bounded_and_never_pickled():
    loader = CountingLoader()
    jobs = ComposedJobs(loader, keep_at_most=2)
    for s in range(4):
        jobs.compose_and_keep(master_config=None, sweep_overrides=[f"seed={s}"])
    shipped = pickle.loads(pickle.dumps(jobs))  # what a submitit/Ray launcher sends to its workers
    shipped.load_sweep_config(None, ["seed=0"])
    assert len(shipped.loader.calls) == 4 + 1  # the copy kept nothing: it composed the job afresh
    for s in range(4):
        jobs.load_sweep_config(None, [f"seed={s}"])
    assert len(loader.calls) == 4 + 2  # 4 checks; jobs 2 and 3 were over the bound


APP = """
import json, sys
from pathlib import Path

import hydra
import hydra._internal.config_loader_impl as loader_impl
from hydra.core.hydra_config import HydraConfig

from ideogram4.experiment import register_configs

register_configs()
OUT = Path(sys.argv.pop(1))
composed = []
compose = loader_impl.ConfigLoaderImpl.load_sweep_config


def counting(self, master_config, sweep_overrides):
    composed.append(list(sweep_overrides))
    return compose(self, master_config, sweep_overrides)


loader_impl.ConfigLoaderImpl.load_sweep_config = counting


@hydra.main(config_path=%r, config_name="config", version_base="1.3")
def main(cfg):
    job = {"num": HydraConfig.get().job.num, "overrides": list(HydraConfig.get().overrides.task),
           "seed": cfg.seed, "cfg": cfg.cfg, "composed_so_far": len(composed)}
    with open(OUT / "jobs.jsonl", "a") as f:
        f.write(json.dumps(job) + "\\n")


main()
(OUT / "composed.json").write_text(json.dumps(composed))
"""


def _sweep(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, list[dict], list]:
    app = tmp_path / "app.py"
    app.write_text(APP % str(REPO / "conf"))
    args = ["-m", "model=tiny", "tracker=none", "+hydra.callbacks.comparison_grid.enabled=false"]
    args += [f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides]
    res = subprocess.run(
        [sys.executable, str(app), str(tmp_path), *args],
        cwd=str(REPO), env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    jobs_file, composed_file = tmp_path / "jobs.jsonl", tmp_path / "composed.json"
    jobs = [json.loads(x) for x in jobs_file.read_text().splitlines()] if jobs_file.exists() else []
    return res, jobs, json.loads(composed_file.read_text()) if composed_file.exists() else None


def test_each_job_is_composed_once_all_before_the_first_starts_and_gets_its_own_settings(tmp_path):
    res, jobs, composed = _sweep(tmp_path, "cfg=3,7", "seed=0,1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(composed) == 4  # Hydra's basic sweeper composes each job twice (8)
    assert all(j["composed_so_far"] == 4 for j in jobs)  # every job checked before the first ran
    assert [j["num"] for j in jobs] == [0, 1, 2, 3]
    for j in jobs:
        assert {f"cfg={j['cfg']:g}", f"seed={j['seed']}"} <= set(j["overrides"])
    assert {(j["cfg"], j["seed"]) for j in jobs} == {(3.0, 0), (3.0, 1), (7.0, 0), (7.0, 1)}


def test_hydras_basic_sweeper_is_still_selectable(tmp_path):
    res, jobs, composed = _sweep(tmp_path, "hydra/sweeper=basic", "seed=0,1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert [j["seed"] for j in jobs] == [0, 1] and len(composed) == 4


def test_a_job_that_does_not_compose_stops_the_sweep_before_any_job_runs(tmp_path):
    res, jobs, _ = _sweep(tmp_path, "cfg=3,seven")
    assert res.returncode != 0
    assert "cfg" in res.stderr and "seven" in res.stderr
    assert jobs == []
