"""Parallel search (issue 21, item 4): several search processes on one Optuna study, each asking for
the next trial when it is free. A fake Hydra app (no model) scores each trial from its manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]

# Each trial logs its job number and process; a process's first trial waits until both workers have
# started one (so one worker cannot do everything), then each trial writes a one-image manifest.
APP = """
import json, os, time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


def pids(log):
    return {json.loads(line)["pid"] for line in log.read_text().splitlines()} if log.exists() else set()


@hydra.main(config_path=".", config_name="config", version_base="1.3")
def main(cfg):
    hc = HydraConfig.get()
    log = Path(os.environ["FAKE_APP_LOG"])
    first = os.getpid() not in pids(log)
    with open(log, "a") as f:
        f.write(json.dumps({"job": hc.job.num, "pid": os.getpid(), "cfg": cfg.cfg}) + "\\n")
    deadline = time.monotonic() + 60
    while first and len(pids(log)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    rec = {"image": "images/p__seed0.png", "prompt_id": "p", "seed": 0, "metrics": {"pixel_std": abs(cfg.cfg - 6.5)}}
    with open(Path(hc.runtime.output_dir) / "manifest.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\\n")


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: optuna
  - _self_
cfg: 7.0
metrics: [image_stats]
hydra:
  sweeper:
    study_name: shared
    n_trials: 7
    n_jobs: 1
    seed: 0
    n_startup_trials: 3
    objective: [{metric: pixel_std, direction: minimize}]
    params:
      cfg: interval(2, 9)
"""


@pytest.mark.slow
def test_two_search_workers_on_one_sqlite_study_complete_n_trials_between_them(tmp_path):
    app, sweep, log = tmp_path / "app", tmp_path / "sweep", tmp_path / "calls.jsonl"
    app.mkdir()
    (app / "app.py").write_text(APP)
    (app / "config.yaml").write_text(CONFIG)
    env = dict(os.environ, PYTHONPATH=str(REPO), FAKE_APP_LOG=str(log), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "app.py", "-m", f"hydra.sweep.dir={sweep}"]  # the same command, twice
    workers = [
        subprocess.Popen(cmd, cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    try:
        outs = [w.communicate(timeout=300)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
    for w, out in zip(workers, outs):
        assert w.returncode == 0, out[-4000:]

    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{sweep / 'study.db'}")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 7 and not study.get_trials(states=(TrialState.FAIL, TrialState.RUNNING))
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(c["job"] for c in calls) == sorted(t.number for t in complete)  # each trial ran once
    assert len({c["pid"] for c in calls}) == 2  # both workers ran trials
    assert len({t.params["cfg"] for t in complete}) == 7  # started together, they still draw different settings
    for t in complete:  # the objective came from the trial's own job folder
        assert t.value == pytest.approx(abs(t.params["cfg"] - 6.5))
        assert (sweep / str(t.number) / "manifest.jsonl").is_file()


def test_workers_that_open_the_study_together_draw_different_settings(tmp_path):
    """Two workers open the study at the same moment with the same seed: seeded per trial, their first
    trials differ; seeded once (plain TPE), they would draw the same settings."""
    from hydra_plugins.ideogram4_optuna._sampler import TrialSeededSampler

    dist = {"cfg": optuna.distributions.FloatDistribution(2, 9)}

    def first_draws(make_sampler, name: str) -> list[float]:
        storage = f"sqlite:///{tmp_path / (name + '.db')}"
        workers = [optuna.create_study(storage=storage, study_name=name, load_if_exists=True) for _ in range(2)]
        for w in workers:
            w.sampler = make_sampler()
        return [w.ask(dist).params["cfg"] for w in workers]

    plain = first_draws(lambda: optuna.samplers.TPESampler(seed=0, n_startup_trials=5), "plain")
    seeded = first_draws(lambda: TrialSeededSampler(0, n_startup_trials=5), "seeded")
    assert plain[0] == plain[1] and seeded[0] != seeded[1]
    assert seeded == first_draws(lambda: TrialSeededSampler(0, n_startup_trials=5), "again")  # trial N: seed + N
