"""The Optuna sweeper (issue 9, item 10): a fake Hydra app in a subprocess, scored from its manifests.

The fake task writes a manifest whose `ocr_word_accuracy` is a known function of cfg and polish cfg,
so the objective each trial gets can be checked exactly; the shipped `+experiment=search_cfg` drives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState
from runner_helpers import sigint_by_default

from hydra_plugins.ideogram4_optuna._search import (
    SearchSettings,
    evaluate,
    finished_trials,
    open_study,
)
from hydra_plugins.ideogram4_optuna._study import STALE_DIR, fail_stale
from ideogram4.experiment.run.exits import EXIT_RUNTIME

REPO = Path(__file__).resolve().parents[1]

APP = """
import json, os, sys, time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


def score(cfg, polish_cfg, seed):
    return 1.0 - ((cfg - 6.5) / 7) ** 2 - ((polish_cfg - 2.0) / 4) ** 2 - 0.01 * seed


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg):
    try:
        job(cfg)
    except KeyboardInterrupt:  # as ideogram4.experiment.run.entry does: Ctrl-C becomes exit 130
        sys.exit(130)


def job(cfg):
    hc = HydraConfig.get()
    with open(os.environ["FAKE_APP_LOG"], "a") as f:
        f.write(json.dumps({"job": hc.job.num, "cfg": cfg.cfg, "polish_cfg": cfg.sampler.polish_cfg}) + "\\n")
    if cfg.mode == "raise":
        raise RuntimeError("the fake job broke")
    seeds = list(cfg.seed) if not isinstance(cfg.seed, int) else [cfg.seed]
    for item in cfg.prompts["items"]:  # one image at a time, as the runner appends its manifest lines
        for seed in seeds:
            time.sleep(float(os.environ.get("FAKE_APP_SLEEP", "0")))
            metrics = {"pixel_std": 1.0}
            if "ocr" in cfg.metrics:
                metrics["ocr_word_accuracy"] = score(cfg.cfg, cfg.sampler.polish_cfg, seed)
                metrics["ocr_ned"] = None
            rec = {"image": f"images/{item.id}__seed{seed}.png", "prompt_id": item.id, "seed": seed, "metrics": metrics}
            with open(Path(hc.runtime.output_dir) / "manifest.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\\n")


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - prompts: smoke
  - _self_
cfg: 7.0
sampler:
  polish_cfg: 3.0
seed: 0
metrics: [image_stats]
mode: ok
"""


def score(cfg: float, polish_cfg: float, seed: int) -> float:
    return 1.0 - ((cfg - 6.5) / 7) ** 2 - ((polish_cfg - 2.0) / 4) ** 2 - 0.01 * seed


@pytest.fixture
def app(tmp_path) -> Path:
    root = tmp_path / "app"
    (root / "conf" / "prompts").mkdir(parents=True)
    (root / "conf" / "experiment").mkdir()
    (root / "app.py").write_text(APP)
    (root / "conf" / "config.yaml").write_text(CONFIG)
    for name, ids in (("smoke", ["red_cube"]), ("typography", ["bakery_sign", "poster_headline"])):
        items = [{"id": i, "prompt": f"prompt {i}"} for i in ids]
        (root / "conf" / "prompts" / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, "items": items}))
    shipped = REPO / "conf" / "experiment" / "search_cfg.yaml"
    (root / "conf" / "experiment" / "search_cfg.yaml").write_text(shipped.read_text())
    return root


def app_env(app: Path, **extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), FAKE_APP_LOG=str(app / "calls.jsonl"), OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def app_args(sweep: Path, *extra: str) -> list[str]:
    return [sys.executable, "app.py", "-m", "+experiment=search_cfg", f"hydra.sweep.dir={sweep}", *extra]


def try_app(app: Path, sweep: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    cmd = app_args(sweep, *extra)
    return subprocess.run(cmd, cwd=app, env=app_env(app, **env), capture_output=True, text=True, timeout=240)


def run_app(app: Path, sweep: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    res = try_app(app, sweep, *extra, **env)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


def load(sweep: Path, name: str = "search_cfg") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep / 'study.db'}")


def calls(app: Path) -> list[dict]:
    path = app / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_search_cfg_search_improves_on_its_first_trial_and_writes_best_yaml(app, tmp_path):
    sweep = tmp_path / "sweep"
    run_app(app, sweep, "hydra.sweeper.n_trials=10", "hydra.sweeper.n_startup_trials=4")
    study = load(sweep)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert [t.number for t in trials] == list(range(10))
    for t in trials:  # objective = mean over the typography prompts x seeds 0, 1, read from the job's manifest
        cfg, polish = t.params["cfg"], t.params["sampler.polish_cfg"]
        assert 2 <= cfg <= 9 and 1 <= polish <= 5
        assert t.value == pytest.approx((score(cfg, polish, 0) + score(cfg, polish, 1)) / 2, abs=1e-12)
        assert Path(t.user_attrs["output_dir"]) == sweep / str(t.number)  # job folder = trial number
        assert len((sweep / str(t.number) / "manifest.jsonl").read_text().splitlines()) == 4
    assert study.best_value > trials[0].value
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    (entry,) = best["best"]
    assert entry["trial"] == study.best_trial.number
    assert entry["values"] == {"ocr_word_accuracy": study.best_value}
    assert entry["overrides"] == [
        f"cfg={study.best_params['cfg']!r}",
        f"sampler.polish_cfg={study.best_params['sampler.polish_cfg']!r}",
    ]
    assert best["trials"] == {"complete": 10, "fail": 0}
    assert best["fixed_overrides"] == ["+experiment=search_cfg"]  # the searched keys are not fixed
    assert (sweep / "multirun.yaml").exists()
    assert len(calls(app)) == 10


FAST_HEARTBEAT = ("hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=4")


def wait_for_calls(app: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(calls(app)) < n and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)


@pytest.mark.slow
def test_search_interrupted_during_a_trial_resumes_it_once_and_counts_it_once(app, tmp_path):
    from ideogram4.experiment.summary.table import summarize

    sweep = tmp_path / "sweep"
    args = app_args(sweep, "hydra.sweeper.n_trials=6", "hydra.sweeper.n_startup_trials=4", *FAST_HEARTBEAT)
    proc = subprocess.Popen(
        args,
        cwd=app,
        env=app_env(app, FAKE_APP_SLEEP="0.5"),  # 4 images of 0.5 s per trial
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=sigint_by_default,
        text=True,
    )
    wait_for_calls(app, 3, proc)
    third = sweep / "2" / "manifest.jsonl"
    deadline = time.monotonic() + 60
    while not (third.exists() and third.read_text()) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # Ctrl-C while the 3rd trial renders, one image made
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "resume it with the same command" in out + err, (out + err)[-3000:]
    first = {t.number: t for t in load(sweep).trials}
    (stopped,) = [t for t in first.values() if t.state == TrialState.WAITING]  # handed back, not failed
    assert not [t for t in first.values() if t.state in (TrialState.FAIL, TrialState.RUNNING)]
    partial = (sweep / str(stopped.number) / "manifest.jsonl").read_text().splitlines()
    assert 1 <= len(partial) < 4  # the interrupted trial had made part of its images
    n_calls_first = len(calls(app))

    run_app(app, sweep, "hydra.sweeper.n_trials=6", "hydra.sweeper.n_startup_trials=4", *FAST_HEARTBEAT)
    study = load(sweep)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6  # no FAIL, nothing extra
    assert finished_trials(study) == 6 and study.trials[stopped.number].params == stopped.params
    all_calls = calls(app)
    stopped_runs = [c for c in all_calls if c["job"] == stopped.number]
    assert len(stopped_runs) == 2  # interrupted once, run exactly once more (same trial number and folder)
    assert stopped.number == 2 and [c["job"] for c in all_calls[n_calls_first:]] == [2, 3, 4, 5]
    summary = summarize(sweep)  # each trial one setting with all 4 images; no partial setting
    assert len(summary.settings) == 6 and {s.n_images for s in summary.settings} == {4}


@pytest.mark.slow
def test_two_search_processes_share_one_study(app, tmp_path):
    sweep = tmp_path / "sweep"
    args = app_args(sweep, "hydra.sweeper.n_trials=8", "hydra.sweeper.n_startup_trials=4", *FAST_HEARTBEAT)
    env = app_env(app, FAKE_APP_SLEEP="0.1")
    first = subprocess.Popen(args, cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_calls(app, 1, first)
    second = subprocess.Popen(args, cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=240) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], [o[1][-3000:] for o in outs]
    study = load(sweep)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 8 and not study.get_trials(states=(TrialState.FAIL, TrialState.RUNNING))
    jobs = [c["job"] for c in calls(app)]
    assert sorted(jobs) == sorted(t.number for t in complete)  # every trial ran once, in one process
    pids = {t.number: t.user_attrs["output_dir"] for t in complete}
    assert len(set(pids.values())) == 8
    for t in complete:
        lines = (sweep / str(t.number) / "manifest.jsonl").read_text().splitlines()
        assert len(lines) == 4 and t.value == pytest.approx(
            (
                score(t.params["cfg"], t.params["sampler.polish_cfg"], 0)
                + score(t.params["cfg"], t.params["sampler.polish_cfg"], 1)
            )
            / 2
        )
    assert yaml.safe_load((sweep / "best.yaml").read_text())["trials"]["complete"] == 8


@pytest.mark.slow
def test_multi_objective_search_writes_the_pareto_front(app, tmp_path):
    sweep = tmp_path / "sweep"
    objective = (
        "hydra.sweeper.objective=[{metric:ocr_word_accuracy,direction:maximize},{metric:pixel_std,direction:minimize}]"
    )
    run_app(app, sweep, "hydra.sweeper.n_trials=4", objective, "mode=choice(ok,raise)", "metrics=[ocr,image_stats]")
    study = load(sweep)
    assert len(study.directions) == 2 and {t.params["mode"] for t in study.trials} == {"ok", "raise"}
    for t in study.trials:
        if t.params["mode"] == "raise":  # a failing job: a failed trial with the reason, the search goes on
            assert t.state == TrialState.FAIL and "RuntimeError: the fake job broke" in t.user_attrs["fail_reason"]
        else:
            assert t.state == TrialState.COMPLETE and t.values[1] == 1.0
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    assert [e["trial"] for e in best["best"]] == sorted(t.number for t in study.best_trials)
    assert all(set(e["values"]) == {"ocr_word_accuracy", "pixel_std"} for e in best["best"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, message",
    [
        (
            "hydra.sweeper.objective=[{metric:ocr_word_acc,direction:maximize}]",
            "objective[0].metric: no metric produces",
        ),
        ("metrics=[image_stats]", "which the jobs do not compute"),
    ],
)
def test_an_objective_no_job_produces_is_refused_before_the_first_trial(app, tmp_path, override, message):
    res = try_app(app, tmp_path / "sweep", "hydra.sweeper.n_trials=2", override)
    assert res.returncode != 0 and message in res.stderr and calls(app) == []


@pytest.mark.slow
def test_a_search_where_every_trial_fails_exits_non_zero_and_is_resumed_only_as_the_same_study(app, tmp_path):
    sweep = tmp_path / "sweep"
    res = try_app(app, sweep, "hydra.sweeper.n_trials=2", "mode=raise")
    study = load(sweep)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert "RuntimeError: the fake job broke" in study.trials[0].user_attrs["fail_reason"]
    assert res.returncode == EXIT_RUNTIME and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("Search: No trial of study 'search_cfg' completed (2 failed")
    assert not (sweep / "best.yaml").exists()
    # a resumed study must be the same experiment: other fixed overrides are refused with the reason
    res = try_app(app, sweep, "hydra.sweeper.n_trials=3", "mode=ok")
    assert res.returncode != 0 and "fixed_overrides" in res.stderr and "hydra.sweep.dir" in res.stderr


@pytest.mark.slow
def test_ties_are_reported_as_ties(app, tmp_path):
    sweep = tmp_path / "sweep"
    objective = "hydra.sweeper.objective=[{metric:pixel_std,direction:minimize}]"
    res = run_app(app, sweep, "hydra.sweeper.n_trials=3", objective, "metrics=[ocr,image_stats]")
    best = yaml.safe_load((sweep / "best.yaml").read_text())
    assert best["tied"] == [0, 1, 2] and "3 trials tie for the best value 1.0" in res.stdout + res.stderr


@pytest.mark.slow
def test_run_py_finds_the_sweeper_from_the_repository_root():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "run.py", "hydra/sweeper=optuna", "--cfg", "hydra", "-p", "hydra.sweeper"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    node = yaml.safe_load(res.stdout)
    assert node["_target_"] == "hydra_plugins.ideogram4_optuna.sweeper.OptunaSweeper" and node["n_trials"] == 20


# ---- in-process pieces ----


def settings(**kw) -> SearchSettings:
    base = dict(study_name="s", storage=None, n_trials=3, n_jobs=1, seed=0, n_startup_trials=2, params={})
    base["objective"] = [{"metric": "ocr_ned", "direction": "maximize"}]
    return SearchSettings.from_config({**base, **kw})


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"n_trials": 0}, "hydra.sweeper.n_trials"),
        ({"n_jobs": -1}, "hydra.sweeper.n_jobs"),
        ({"objective": []}, "hydra.sweeper.objective"),
        ({"objective": [{"metric": "ocr_ned", "direction": "up"}]}, r"objective\[0\].direction is 'up'"),
        ({"objective": [{"metric": "", "direction": "maximize"}]}, r"objective\[0\].metric"),
    ],
)
def test_settings_errors_name_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        settings(**bad)


def job_return(tmp_path: Path, records: list[dict] | None, error: Exception | None = None) -> JobReturn:
    ret = JobReturn(status=JobStatus.FAILED if error else JobStatus.COMPLETED)
    ret.return_value = error
    if records is not None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return ret


def test_evaluate_averages_the_latest_line_per_image_and_explains_failures(tmp_path):
    objective = [{"metric": "ocr_ned", "direction": "maximize"}]
    recs = [
        {"image": "a.png", "metrics": {"ocr_ned": 0.0}},
        {"image": "a.png", "metrics": {"ocr_ned": 0.5}},  # supersedes the line above
        {"image": "b.png", "metrics": {"ocr_ned": 1.0}},
        {"image": "c.png", "metrics": {"ocr_ned": None}},  # nothing to score: left out
    ]
    assert evaluate(job_return(tmp_path / "ok", recs), objective, tmp_path / "ok") == ([0.75], "")
    values, reason = evaluate(job_return(tmp_path / "x", None, RuntimeError("boom")), objective, tmp_path / "x")
    assert values is None and reason == "the job failed: RuntimeError: boom"
    values, reason = evaluate(job_return(tmp_path / "empty", None), objective, tmp_path / "empty")
    assert values is None and reason.startswith("no images in")
    none = [{"image": "a.png", "metrics": {"ocr_ned": None}}]
    values, reason = evaluate(job_return(tmp_path / "none", none), objective, tmp_path / "none")
    assert values is None and "no value of ocr_ned" in reason and "(1 images)" in reason


@pytest.mark.slow
def test_a_trial_of_a_dead_process_is_failed_by_its_heartbeat_and_asked_again(tmp_path):
    fast = {"heartbeat_interval": 1, "grace_period": 2}
    study = open_study(settings(**fast), tmp_path, fixed=["prompts=typography"])
    dist = {"cfg": optuna.distributions.FloatDistribution(2, 9)}
    done = study.ask(dist)
    study.tell(done, 0.3)
    stale = study.ask(dist)  # the process dies here (SIGKILL): RUNNING in the database, no more heartbeats
    stale.set_user_attr("output_dir", str(tmp_path / str(stale.number)))
    (tmp_path / str(stale.number)).mkdir()
    study._storage.record_heartbeat(stale._trial_id)
    resumed = open_study(settings(**fast), tmp_path, fixed=["prompts=typography"])
    fail_stale(resumed)  # within the grace period: still owned by its process
    assert resumed.trials[stale.number].state == TrialState.RUNNING
    time.sleep(3.5)
    fail_stale(resumed)
    assert resumed.trials[stale.number].state == TrialState.FAIL and finished_trials(resumed) == 1
    assert (tmp_path / STALE_DIR / str(stale.number)).is_dir() and not (tmp_path / str(stale.number)).exists()
    again = resumed.ask(dist)
    assert again.params == stale.params and resumed.trials[again.number].system_attrs["failed_trial"] == stale.number
    with pytest.raises(ValueError, match="was made with objective"):
        open_study(
            settings(objective=[{"metric": "ocr_ned", "direction": "minimize"}]), tmp_path, fixed=["prompts=typography"]
        )
