"""The search loop: ask Optuna for settings, launch them as Hydra jobs, score each job from its manifest.

Each trial is one Hydra job, numbered as the trial (job folder ``<hydra.sweep.dir>/<trial number>``).
Its objective is the mean of a metric over the job's images (prompts x seeds), read from the job's
``manifest.jsonl``, so the task function needs no return value. The study lives in Optuna's storage
(SQLite in the sweep folder by default): running the same command with the same ``hydra.sweep.dir``
resumes it. Trials left running by an interruption are marked failed and their settings are tried
again; finished trials are never repeated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, Trial, TrialState

from ideogram4.experiment.summary.settings import job_metrics

from ._space import Param, parse_space

log = logging.getLogger("ideogram4.experiment")

STUDY_DB = "study.db"
BEST_YAML = "best.yaml"
DIRECTIONS = ("maximize", "minimize")
FAIL_REASON = "fail_reason"  # set on trials that ran and failed; a failed trial without it was interrupted


@dataclass
class SearchSettings:
    study_name: str
    storage: str | None
    n_trials: int
    n_jobs: int
    seed: int | None
    n_startup_trials: int
    objective: list[dict[str, str]]
    params: dict[str, str]

    @classmethod
    def from_config(cls, conf: dict) -> SearchSettings:
        """Checked settings; every error names the hydra.sweeper field and what to write instead."""
        conf = {k: v for k, v in conf.items() if not k.startswith("_")}
        s = cls(**conf)
        for name in ("n_trials", "n_jobs"):
            if not isinstance(getattr(s, name), int) or getattr(s, name) < 1:
                raise ValueError(f"hydra.sweeper.{name} must be a whole number >= 1, got {getattr(s, name)!r}")
        if not s.study_name:
            raise ValueError("hydra.sweeper.study_name is empty; name the study, e.g. hydra.sweeper.study_name=search")
        if not s.objective:
            raise ValueError(
                "hydra.sweeper.objective is empty; e.g. [{metric: ocr_word_accuracy, direction: maximize}]"
            )
        for i, obj in enumerate(s.objective):
            if not obj.get("metric"):
                raise ValueError(f"hydra.sweeper.objective[{i}].metric is empty; name a metric, e.g. ocr_word_accuracy")
            if obj.get("direction") not in DIRECTIONS:
                raise ValueError(
                    f"hydra.sweeper.objective[{i}].direction is {obj.get('direction')!r}; use maximize or minimize"
                )
        return s


def open_study(settings: SearchSettings, sweep_dir: Path, fixed: list[str]) -> optuna.Study:
    """Create the study, or load it to resume when it was made for the same objective and fixed overrides."""
    storage = settings.storage or f"sqlite:///{sweep_dir / STUDY_DB}"
    directions = [o["direction"] for o in settings.objective]
    study = optuna.create_study(
        storage=storage, study_name=settings.study_name, directions=directions, load_if_exists=True
    )
    made_for = {"objective": settings.objective, "fixed_overrides": sorted(fixed)}
    if not study.user_attrs:
        for key, value in made_for.items():
            study.set_user_attr(key, value)
    for key, value in made_for.items():
        if study.user_attrs.get(key) != value:
            raise ValueError(
                f"study {settings.study_name!r} in {storage} was made with {key}={study.user_attrs.get(key)}, this "
                f"search has {key}={value}: its values would not compare; use another hydra.sweeper.study_name "
                "or hydra.sweep.dir"
            )
    # a resumed search must not replay the random draws of the first session: derive the seed from the history
    seed = None if settings.seed is None else settings.seed + len(study.trials)
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.n_startup_trials)
    return study


def requeue_interrupted(study: optuna.Study) -> None:
    """Trials another session left RUNNING (killed, Ctrl-C during a write): failed, settings asked again."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.warning(
            "Trial %d was left running by an interrupted search: marked failed, its settings run again", t.number
        )
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def finished_trials(study: optuna.Study) -> int:
    """Trials that count towards n_trials: complete, pruned, or failed after running (not interrupted)."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(t.state != TrialState.FAIL or FAIL_REASON in t.user_attrs for t in study.get_trials(False, states))


def job_dir(ret: JobReturn, fallback: Path) -> Path:
    out_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg is not None else None
    return Path(out_dir or fallback)


def evaluate(ret: JobReturn, objective: list[dict[str, str]], out_dir: Path) -> tuple[list[float] | None, str]:
    """(objective values, "") or (None, why the trial failed)."""
    try:
        ret.return_value  # noqa: B018 (re-raises the job's exception)
    except Exception as e:
        return None, f"the job failed: {type(e).__name__}: {e}"
    images = job_metrics(out_dir)
    if not images:
        return None, f"no images in {out_dir / 'manifest.jsonl'}"
    values = []
    for obj in objective:
        found = [m[obj["metric"]] for m in images if obj["metric"] in m]
        if not found:
            return None, (
                f"no value of {obj['metric']} in {out_dir / 'manifest.jsonl'} ({len(images)} images): "
                f"is the metric computed (metrics=[...]) and does the prompt set give it something to score?"
            )
        values.append(sum(found) / len(found))
    return values, ""


def _consecutive(trials: list[Trial]) -> list[list[Trial]]:
    """Runs of consecutive trial numbers: each run is one launch, so job number == trial number."""
    runs: list[list[Trial]] = []
    for t in trials:
        if runs and t.number == runs[-1][-1].number + 1:
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs


def _fail(study: optuna.Study, trial: Trial, reason: str) -> None:
    log.warning("Trial %d failed: %s", trial.number, reason)
    trial.set_user_attr(FAIL_REASON, reason)
    study.tell(trial, state=TrialState.FAIL)


def run_batch(sweeper, study, trials: list[Trial], params: list[Param], fixed: list[str], pending: set[int]) -> None:
    sweep_dir = Path(str(sweeper.config.hydra.sweep.dir))
    overrides = {t.number: fixed + [p.override(t.params[p.key]) for p in params] for t in trials}
    runnable = []
    for t in trials:
        t.set_user_attr("overrides", overrides[t.number])
        try:
            sweeper.validate_batch_is_legal([overrides[t.number]])
            runnable.append(t)
        except Exception as e:
            _fail(study, t, f"the overrides do not compose: {type(e).__name__}: {e}")
            pending.discard(t.number)
    for run in _consecutive(runnable):
        results = sweeper.launcher.launch([overrides[t.number] for t in run], initial_job_idx=run[0].number)
        for t, ret in zip(run, results):
            out_dir = job_dir(ret, sweep_dir / str(t.number))
            t.set_user_attr("output_dir", str(out_dir))
            values, reason = evaluate(ret, sweeper.settings.objective, out_dir)
            if values is None:
                _fail(study, t, reason)
            else:
                study.tell(t, values)
                log.info("Trial %d: %s -> %s", t.number, " ".join(overrides[t.number][len(fixed) :]), values)
            pending.discard(t.number)


def interrupted(study: optuna.Study, trials: list[Trial], pending: set[int], sweep_dir: Path) -> None:
    """Ctrl-C: the trials in flight are marked failed (not counted) and queued to run first on resume."""
    for t in trials:
        if t.number in pending:
            t.set_user_attr("interrupted", True)
            study.tell(t, state=TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    log.warning(
        "Search interrupted with %d finished trial(s); resume it with the same command and hydra.sweep.dir=%s",
        finished_trials(study),
        sweep_dir,
    )


def best_document(study: optuna.Study, settings: SearchSettings, params: list[Param], fixed: list[str]) -> dict:
    by_key = {p.key: p for p in params}
    metrics = [o["metric"] for o in settings.objective]

    def entry(t: FrozenTrial) -> dict[str, Any]:
        texts = [by_key[k].override(v) if k in by_key else f"{k}={v}" for k, v in t.params.items()]
        return {
            "trial": t.number,
            "values": dict(zip(metrics, t.values)),
            "params": dict(t.params),
            "overrides": texts,
            "output_dir": t.user_attrs.get("output_dir"),
        }

    best = [study.best_trial] if len(metrics) == 1 else sorted(study.best_trials, key=lambda t: t.number)
    counts = {s.name.lower(): len(study.get_trials(False, (s,))) for s in (TrialState.COMPLETE, TrialState.FAIL)}
    return {
        "study_name": settings.study_name,
        "objective": settings.objective,
        "trials": counts,
        "fixed_overrides": fixed,
        "best": [entry(t) for t in best],  # one trial, or the Pareto front with several objectives
    }


def write_best(study, settings: SearchSettings, params, fixed, sweep_dir: Path) -> dict | None:
    if not study.get_trials(False, (TrialState.COMPLETE,)):
        log.warning("No trial of study %r completed: no %s", settings.study_name, BEST_YAML)
        return None
    doc = best_document(study, settings, params, fixed)
    tmp = sweep_dir / f".{BEST_YAML}.tmp"
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    tmp.replace(sweep_dir / BEST_YAML)
    log.info(
        "Best of %d trial(s): %s -> %s", doc["trials"]["complete"], doc["best"][0]["overrides"], sweep_dir / BEST_YAML
    )
    return doc


def run_search(sweeper, arguments: list[str]) -> dict | None:
    settings: SearchSettings = sweeper.settings
    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    texts = [f"{k}={v}" for k, v in settings.params.items()] + list(arguments)
    params, fixed = parse_space(parser.parse_overrides(texts))
    if not params:
        raise ValueError(
            "the Optuna sweeper has no search space: set hydra.sweeper.params (e.g. {cfg: 'interval(2, 9)'}) "
            "or give a sweep on the command line (e.g. 'cfg=interval(2,9)')"
        )
    sweeper.validate_batch_is_legal([fixed + [p.override(p.first()) for p in params]])  # fail before any trial
    sweep_dir = Path(str(sweeper.config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(sweeper.config, sweep_dir / "multirun.yaml")
    study = open_study(settings, sweep_dir, fixed)
    requeue_interrupted(study)
    distributions = {p.key: p.distribution for p in params}
    while (done := finished_trials(study)) < settings.n_trials:
        trials = [study.ask(distributions) for _ in range(min(settings.n_jobs, settings.n_trials - done))]
        pending = {t.number for t in trials}
        try:
            run_batch(sweeper, study, trials, params, fixed, pending)
        except KeyboardInterrupt:
            interrupted(study, trials, pending, sweep_dir)
            raise
        except BaseException as e:  # e.g. a job calling sys.exit (in-process launcher): that trial failed
            for t in trials:
                if t.number in pending:
                    _fail(study, t, f"the search stopped: {type(e).__name__}: {e}")
            raise
    return write_best(study, settings, params, fixed, sweep_dir)
