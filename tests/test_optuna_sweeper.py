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

from hydra_plugins.ideogram4_optuna._search import (
    SearchSettings,
    evaluate,
    finished_trials,
    open_study,
    requeue_interrupted,
)

REPO = Path(__file__).resolve().parents[1]

APP = """
import json, os, time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


def score(cfg, polish_cfg, seed):
    return 1.0 - ((cfg - 6.5) / 7) ** 2 - ((polish_cfg - 2.0) / 4) ** 2 - 0.01 * seed


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg):
    hc = HydraConfig.get()
    with open(os.environ["FAKE_APP_LOG"], "a") as f:
        f.write(json.dumps({"job": hc.job.num, "cfg": cfg.cfg, "polish_cfg": cfg.sampler.polish_cfg}) + "\\n")
    if cfg.mode == "raise":
        raise RuntimeError("the fake job broke")
    time.sleep(float(os.environ.get("FAKE_APP_SLEEP", "0")))
    seeds = list(cfg.seed) if not isinstance(cfg.seed, int) else [cfg.seed]
    with open(Path(hc.runtime.output_dir) / "manifest.jsonl", "a") as f:
        for item in cfg.prompts["items"]:
            for seed in seeds:
                metrics = {"pixel_std": 1.0}
                if "ocr" in cfg.metrics:
                    metrics["ocr_word_accuracy"] = score(cfg.cfg, cfg.sampler.polish_cfg, seed)
                    metrics["ocr_ned"] = None
                rec = {"image": f"images/{item.id}__seed{seed}.png", "prompt_id": item.id, "seed": seed, "metrics": metrics}
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


def run_app(app: Path, sweep: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    cmd = app_args(sweep, *extra)
    res = subprocess.run(cmd, cwd=app, env=app_env(app, **env), capture_output=True, text=True, timeout=240)
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


def sigint_by_default() -> None:
    """A child started from a background job inherits SIGINT ignored (then Python installs no
    KeyboardInterrupt handler and Ctrl-C does nothing): restore the default, as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_interrupted_search_resumes_without_repeating_finished_trials(app, tmp_path):
    sweep = tmp_path / "sweep"
    args = app_args(sweep, "hydra.sweeper.n_trials=10", "hydra.sweeper.n_startup_trials=4")
    proc = subprocess.Popen(
        args,
        cwd=app,
        env=app_env(app, FAKE_APP_SLEEP="1.0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=sigint_by_default,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(calls(app)) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C while the 4th trial renders
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "resume it with the same command" in out + err, (out + err)[-3000:]
    first = {t.number: t for t in load(sweep).trials}
    done_first = {n: t for n, t in first.items() if t.state == TrialState.COMPLETE}
    (stopped,) = [t for t in first.values() if t.state == TrialState.FAIL]
    assert len(done_first) >= 3 and stopped.user_attrs["interrupted"] and stopped.number == max(done_first) + 1
    n_calls_first = len(calls(app))

    run_app(app, sweep, "hydra.sweeper.n_trials=10", "hydra.sweeper.n_startup_trials=4")
    study = load(sweep)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 10 and finished_trials(study) == 10
    for n, t in done_first.items():  # kept as they were, not run again
        assert (study.trials[n].params, study.trials[n].value) == (t.params, t.value)
    resumed = [c["job"] for c in calls(app)[n_calls_first:]]
    assert resumed == list(range(stopped.number + 1, stopped.number + 1 + 10 - len(done_first)))
    retry = study.trials[stopped.number + 1]  # the interrupted settings run first
    assert retry.params == stopped.params and retry.user_attrs["retry_of"] == stopped.number
    params = [tuple(t.params.values()) for t in complete]
    assert len(set(params)) == 10  # a resumed TPE does not replay the first session's draws


@pytest.mark.slow
def test_multi_objective_search_writes_the_pareto_front(app, tmp_path):
    sweep = tmp_path / "sweep"
    objective = (
        "hydra.sweeper.objective=[{metric:ocr_word_accuracy,direction:maximize},{metric:pixel_std,direction:minimize}]"
    )
    run_app(app, sweep, "hydra.sweeper.n_trials=4", objective, "mode=choice(ok,raise)")
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
def test_trials_without_metric_values_fail_with_a_reason_and_no_best_yaml(app, tmp_path):
    sweep = tmp_path / "sweep"
    res = run_app(app, sweep, "hydra.sweeper.n_trials=2", "metrics=[image_stats]")
    study = load(sweep)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert "no value of ocr_word_accuracy" in study.trials[0].user_attrs["fail_reason"]
    assert "no value of ocr_word_accuracy" in res.stdout + res.stderr and not (sweep / "best.yaml").exists()
    # a resumed study must be the same experiment: other fixed overrides are refused with the reason
    res = subprocess.run(
        app_args(sweep, "hydra.sweeper.n_trials=3", "metrics=[ocr]"),
        cwd=app,
        env=app_env(app),
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0 and "fixed_overrides" in res.stderr and "hydra.sweep.dir" in res.stderr


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


def test_a_trial_left_running_by_a_killed_search_is_failed_and_asked_again(tmp_path):
    study = open_study(settings(), tmp_path, fixed=["prompts=typography"])
    dist = {"cfg": optuna.distributions.FloatDistribution(2, 9)}
    done = study.ask(dist)
    study.tell(done, 0.3)
    stale = study.ask(dist)  # the process died here (SIGKILL): the trial stays RUNNING in the database
    resumed = open_study(settings(), tmp_path, fixed=["prompts=typography"])
    requeue_interrupted(resumed)
    assert resumed.trials[stale.number].state == TrialState.FAIL and finished_trials(resumed) == 1
    again = resumed.ask(dist)
    assert again.params == stale.params and again.user_attrs["retry_of"] == stale.number
    with pytest.raises(ValueError, match="was made with objective"):
        open_study(
            settings(objective=[{"metric": "ocr_ned", "direction": "minimize"}]), tmp_path, fixed=["prompts=typography"]
        )
