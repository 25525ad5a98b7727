"""The search loop: ask Optuna for settings, launch them as Hydra jobs, score each job from its manifest.

Each trial is one Hydra job, numbered as the trial (job folder ``<hydra.sweep.dir>/<trial number>``).
Its objective is the mean of a metric over the job's images (prompts x seeds), read from the job's
``manifest.jsonl``, so the task function needs no return value. The study lives in Optuna's storage
(SQLite in the sweep folder by default): running the same command with the same ``hydra.sweep.dir``
resumes it, and several processes running it at once share its trials (see _study.py for how trials
are owned, handed back on Ctrl-C and re-queued when their process dies). Finished trials never repeat.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, Trial, TrialState

from ideogram4.experiment.config.problems import ConfigError, problem
from ideogram4.experiment.summary.settings import job_metrics
from ideogram4.rules import int_problems, raise_first

from ._sampler import TrialSeededSampler
from ._space import Param, parse_space
from ._study import (
    FAIL_REASON,
    InFlight,
    fail_stale,
    finished_trials,
    make_storage,
    running_trials,
    sigint_allowed,
    sigint_deferred,
    storage_error,
    storage_url,
    surplus,
)

log = logging.getLogger("ideogram4.experiment")

BEST_YAML = "best.yaml"
DIRECTIONS = ("maximize", "minimize")
EXIT_INTERRUPTED = 130  # what a job exits with on Ctrl-C (ideogram4.experiment.run.entry)


class SearchFailed(RuntimeError):
    """No trial of the study completed: the search has no result."""


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
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 3
    lock_timeout: int = 60
    EXAMPLES: ClassVar[dict[str, int]] = dict(
        n_trials=20, n_jobs=1, heartbeat_interval=10, grace_period=30, max_retry=3, lock_timeout=60
    )

    @classmethod
    def from_config(cls, conf: dict) -> SearchSettings:
        """Checked settings; every error names the hydra.sweeper field and what to write instead."""
        conf = {k: v for k, v in conf.items() if not k.startswith("_")}
        s = cls(**conf)
        for name in cls.EXAMPLES:
            low = 0 if name in ("max_retry", "lock_timeout") else 1
            raise_first(int_problems(f"hydra.sweeper.{name}", getattr(s, name), low, None, cls.EXAMPLES[name]))
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
        if s.grace_period <= s.heartbeat_interval:
            raise ValueError(
                f"hydra.sweeper.grace_period ({s.grace_period}) must exceed heartbeat_interval "
                f"({s.heartbeat_interval}), or live trials would be taken for dead ones; e.g. grace_period=30"
            )
        return s


def check_objective(objective: list[dict[str, str]], job_metrics_list) -> None:
    """Every objective value is one the metric registry produces, and the jobs compute its metric."""
    from ideogram4.metrics import MetricError, better_direction, producing_metric

    for i, obj in enumerate(objective):
        try:
            better = better_direction(obj["metric"])
        except MetricError as e:
            raise ConfigError([f"hydra.sweeper.objective[{i}].metric: {e}"]) from None
        owner = producing_metric(obj["metric"])
        if job_metrics_list is not None and owner not in job_metrics_list:
            what = f"is made by the metric {owner!r}, which the jobs do not compute (metrics={list(job_metrics_list)})"
            raise ConfigError(
                [problem(f"hydra.sweeper.objective[{i}].metric", obj["metric"], what, f"metrics=[{owner}]")]
            )
        wanted = {"maximize": "higher", "minimize": "lower"}[obj["direction"]]
        if better not in (wanted, "neither"):
            log.warning("Objective %s is %sd, but %s is better for it", obj["metric"], obj["direction"], better)


def open_study(settings: SearchSettings, sweep_dir: Path, fixed: list[str]) -> optuna.Study:
    """Create the study, or load it to resume (or to work beside another process) when it was made for
    the same objective and fixed overrides."""
    url = storage_url(settings.storage, sweep_dir)
    storage = make_storage(url, settings, sweep_dir)
    directions = [o["direction"] for o in settings.objective]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its "Using an existing study" on stderr: ours follows
    try:
        study = optuna.create_study(
            storage=storage, study_name=settings.study_name, directions=directions, load_if_exists=True
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    made_for = {"objective": settings.objective, "fixed_overrides": sorted(fixed)}
    if not study.user_attrs:
        for key, value in made_for.items():
            study.set_user_attr(key, value)
    for key, value in made_for.items():
        if study.user_attrs.get(key) != value:
            what = (
                f"in {url} was made with {key}={study.user_attrs.get(key)}, this search has {key}={value}: "
                "its values would not compare"
            )
            fix = "use another hydra.sweeper.study_name or hydra.sweep.dir, or the study's own settings"
            raise ConfigError([problem("hydra.sweeper.study_name", settings.study_name, what, fix)])
    log.info("Study %r in %s: %d finished trial(s) so far", settings.study_name, url, finished_trials(study))
    # trial N draws from seed + N: a resumed search never replays a draw, parallel workers never share one
    study.sampler = TrialSeededSampler(settings.seed, n_startup_trials=settings.n_startup_trials)
    return study


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


def _is_interrupt(e: BaseException) -> bool:
    """Ctrl-C, raised here or turned by the job into its exit code (in-process launchers)."""
    return isinstance(e, KeyboardInterrupt) or (isinstance(e, SystemExit) and e.code == EXIT_INTERRUPTED)


def run_batch(sweeper, study, trials: list[Trial], params: list[Param], fixed: list[str]) -> None:
    sweep_dir = Path(str(sweeper.config.hydra.sweep.dir)).absolute()
    overrides = {t.number: fixed + [p.override(t.params[p.key]) for p in params] for t in trials}
    runnable = []
    for t in trials:
        t.set_user_attr("overrides", overrides[t.number])
        t.set_user_attr("output_dir", str(sweep_dir / str(t.number)))  # known before it runs: a stale one is found
        try:
            sweeper.validate_batch_is_legal([overrides[t.number]])
            runnable.append(t)
        except Exception as e:
            sweeper.in_flight.done(t)
            _fail(study, t, f"the overrides do not compose: {type(e).__name__}: {e}")
    for run in _consecutive(runnable):
        with sigint_allowed():
            results = sweeper.launcher.launch([overrides[t.number] for t in run], initial_job_idx=run[0].number)
        for t, ret in zip(run, results):
            out_dir = job_dir(ret, sweep_dir / str(t.number))
            t.set_user_attr("output_dir", str(out_dir))
            values, reason = evaluate(ret, sweeper.settings.objective, out_dir)
            sweeper.in_flight.done(t)
            if values is None:
                _fail(study, t, reason)
            else:
                study.tell(t, values)
                log.info("Trial %d: %s -> %s", t.number, " ".join(overrides[t.number][len(fixed) :]), values)


def interrupted(study: optuna.Study, in_flight: InFlight, sweep_dir: Path) -> None:
    """Ctrl-C: the trials in flight go back to the queue as they are (not failed, not counted)."""
    for number in in_flight.hand_back_all():
        log.warning("Trial %d was interrupted: it runs again (same number and folder) when the search resumes", number)
    log.warning(
        "Search interrupted with %d finished trial(s); resume it with the same command and hydra.sweep.dir=%s",
        finished_trials(study),
        sweep_dir,
    )


def ask_trials(study: optuna.Study, settings: SearchSettings, distributions, in_flight: InFlight) -> list[Trial]:
    """Up to n_jobs trials this process may run now; [] when the rest are running in other processes."""
    trials = []
    free = settings.n_trials - finished_trials(study) - len(running_trials(study))
    for _ in range(min(settings.n_jobs, max(0, free))):
        trial = study.ask(distributions)
        in_flight.start(trial)
        if surplus(study, trial, settings.n_trials):  # another worker asked at the same moment: give it back
            in_flight.hand_back_all()
            return []
        trials.append(trial)
    return trials


def search_loop(sweeper, study, params: list[Param], fixed: list[str], sweep_dir: Path) -> None:
    settings: SearchSettings = sweeper.settings
    distributions = {p.key: p.distribution for p in params}
    sweeper.in_flight = in_flight = InFlight(study)
    try:
        while True:
            fail_stale(study)  # trials of dead processes: failed, their settings queued again (Optuna's callback)
            if finished_trials(study) >= settings.n_trials:
                return
            trials = ask_trials(study, settings, distributions, in_flight)
            if trials:
                run_batch(sweeper, study, trials, params, fixed)
                continue
            log.info("Waiting for trial(s) %s, run by other processes", running_trials(study))
            with sigint_allowed():
                time.sleep(settings.heartbeat_interval)
    except BaseException as e:
        if _is_interrupt(e):
            interrupted(study, in_flight, sweep_dir)
            raise KeyboardInterrupt from e
        for t, _ in list(in_flight.trials.values()):  # anything else stopped the search: those trials failed
            in_flight.done(t)
            _fail(study, t, f"the search stopped: {type(e).__name__}: {e}")
        raise
    finally:
        in_flight.stop_all()


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


def tied_best(study: optuna.Study) -> list[int]:
    """Single objective: the completed trials sharing the best value (more than one: a tie)."""
    if len(study.directions) != 1:
        return []
    best = study.best_value
    return [t.number for t in study.get_trials(False, (TrialState.COMPLETE,)) if t.value == best]


def write_best(study, settings: SearchSettings, params, fixed, sweep_dir: Path) -> dict:
    complete = study.get_trials(False, (TrialState.COMPLETE,))
    if not complete:
        failed = study.get_trials(False, (TrialState.FAIL,))
        reasons = list(dict.fromkeys(t.user_attrs.get(FAIL_REASON, "stale") for t in failed))
        raise SearchFailed(
            f"No trial of study {settings.study_name!r} completed ({len(failed)} failed: "
            f"{'; '.join(reasons[:3])}): no {BEST_YAML}"
        )
    doc = best_document(study, settings, params, fixed)
    tied = tied_best(study)
    if len(tied) > 1:
        doc["tied"] = tied
        log.warning(
            "%d trials tie for the best value %s (trials %s): %s names the first, not a winner",
            len(tied),
            study.best_value,
            ", ".join(map(str, tied)),
            BEST_YAML,
        )
    tmp = sweep_dir / f".{BEST_YAML}.tmp"
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    tmp.replace(sweep_dir / BEST_YAML)
    log.info(
        "Best of %d trial(s): %s -> %s", doc["trials"]["complete"], doc["best"][0]["overrides"], sweep_dir / BEST_YAML
    )
    return doc


def run_search(sweeper, arguments: list[str]) -> dict:
    settings: SearchSettings = sweeper.settings
    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    texts = [f"{k}={v}" for k, v in settings.params.items()] + list(arguments)
    params, fixed = parse_space(parser.parse_overrides(texts))
    if not params:
        what = "is empty and the command line has no sweep: the Optuna sweeper has no search space"
        fix = (
            "set hydra.sweeper.params (e.g. {cfg: 'interval(2, 9)'}) or sweep on the command line ('cfg=interval(2,9)')"
        )
        raise ConfigError([problem("hydra.sweeper.params", settings.params, what, fix)])
    check_objective(settings.objective, OmegaConf.select(sweeper.config, "metrics", default=None))
    sweeper.validate_batch_is_legal([fixed + [p.override(p.first()) for p in params]])  # fail before any trial
    sweep_dir = Path(str(sweeper.config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(sweeper.config, sweep_dir / "multirun.yaml")
    from sqlalchemy.exc import DBAPIError

    try:
        study = open_study(settings, sweep_dir, fixed)
        with sigint_deferred():
            search_loop(sweeper, study, params, fixed, sweep_dir)
        return write_best(study, settings, params, fixed, sweep_dir)
    except DBAPIError as e:  # locked, damaged, not a database: the storage, not the search, is at fault
        raise storage_error(storage_url(settings.storage, sweep_dir), e, settings.lock_timeout) from None
