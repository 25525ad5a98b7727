"""The study in its storage, shared by every search process working on it.

Trials are owned through Optuna's heartbeat: the process running a trial records a heartbeat every
``heartbeat_interval`` seconds; a RUNNING trial whose heartbeat is older than ``grace_period`` belongs
to a process that died, and any worker fails it (``optuna.storages.fail_stale_trials``) and re-queues
its parameters (``RetryHeartbeatStaleTrialCallback``). A trial interrupted by Ctrl-C is handed back to
the queue as it is (RUNNING -> WAITING): the next ask, in this process or another, runs the same trial
number, in the same job folder, so its finished images are kept and it is counted once.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import Trial, TrialState

from ideogram4.experiment.config.problems import ConfigError, problem
from ideogram4.experiment.run.manifest import OutputWriteError

log = logging.getLogger("ideogram4.experiment")

STUDY_DB = "study.db"
FAIL_REASON = "fail_reason"  # set on trials that ran and failed; a failed trial without it was stale
STALE_DIR = "stale_trials"  # job folders of trials whose process died, moved out of the sweep's summary

# ask/tell with heartbeats: this module records them itself (InFlight), which Optuna cannot see
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def _sigint_mask(how) -> contextlib.AbstractContextManager:
    @contextlib.contextmanager
    def masked():
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
            yield
            return
        old = signal.pthread_sigmask(how, {signal.SIGINT})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    return masked()


def sigint_deferred() -> contextlib.AbstractContextManager:
    """The search's own bookkeeping (ask, tell, hand back): a Ctrl-C arriving during a storage write takes
    effect when the write is done, so no trial is left RUNNING without an owner."""
    return _sigint_mask(signal.SIG_BLOCK if hasattr(signal, "SIG_BLOCK") else None)


def sigint_allowed() -> contextlib.AbstractContextManager:
    """Inside sigint_deferred: where Ctrl-C stops at once (the jobs, waiting for other workers)."""
    return _sigint_mask(signal.SIG_UNBLOCK if hasattr(signal, "SIG_UNBLOCK") else None)


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    return storage or f"sqlite:///{sweep_dir / STUDY_DB}"


class StudyStorageError(OutputWriteError):
    """The study's storage cannot be opened or used (locked, damaged, missing folder): one line, exit 4."""


def make_storage(url: str, settings, sweep_dir: Path):
    """An RDB storage with heartbeats; SQLite waits up to settings.lock_timeout seconds for a lock held by
    another worker instead of failing."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, DBAPIError

    try:
        database = make_url(url).database if url.startswith("sqlite") else None
    except ArgumentError as e:
        raise _bad_url(url, e) from None
    if database and database != ":memory:" and not Path(database).parent.is_dir():
        raise StudyStorageError(
            f"hydra.sweeper.storage={url}: the folder {Path(database).parent} does not exist. Fix: create it, or "
            "leave hydra.sweeper.storage unset (the study goes in hydra.sweep.dir)"
        )
    engine_kwargs = {"connect_args": {"timeout": settings.lock_timeout}} if url.startswith("sqlite") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry)

    def on_stale(study: optuna.Study, trial) -> None:
        log.warning(
            "Trial %d stopped sending heartbeats (its process died): failed, its settings queued again", trial.number
        )
        retry(study, trial)
        move_aside(trial.user_attrs.get("output_dir"), sweep_dir)

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=settings.heartbeat_interval,
                    grace_period=settings.grace_period,
                    heartbeat_stale_trial_callback=on_stale,
                )
        except ArgumentError as e:  # no such dialect or driver
            raise _bad_url(url, e) from None
        except DBAPIError as e:  # workers started together on a new database: another one is creating its tables
            if attempt == 4 or _sqlite_error(e) in _FINAL:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


# SQLite errors a retry cannot mend: the lock was already waited for (timeout), the file is not a database
_FINAL = ("SQLITE_BUSY", "SQLITE_NOTADB", "SQLITE_CORRUPT", "SQLITE_CANTOPEN", "SQLITE_READONLY")


def _sqlite_error(e: BaseException) -> str | None:
    return getattr(getattr(e, "orig", None), "sqlite_errorname", None)


def _bad_url(url: str, e: Exception) -> ConfigError:
    what = f"is not a database URL this Python can open ({str(e).splitlines()[0]})"
    fix = "e.g. sqlite:////abs/path/study.db, or leave it unset (study.db in hydra.sweep.dir)"
    return ConfigError([problem("hydra.sweeper.storage", url, what, fix)])


def storage_error(url: str, e: Exception, lock_timeout: int) -> StudyStorageError:
    """A database error from the study's storage as one line: what it is and what to do."""
    name, detail = _sqlite_error(e), str(getattr(e, "orig", e)).splitlines()[0]
    if name == "SQLITE_BUSY":
        fix = (
            f"another process holds its lock (waited {lock_timeout} s): let it finish, or raise "
            "hydra.sweeper.lock_timeout"
        )
    elif name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        fix = "it is damaged or not a study database: move it aside to start a new study, or restore a copy"
    else:
        fix = "check that the database exists and can be written"
    return StudyStorageError(f"hydra.sweeper.storage={url} cannot be used ({detail}). Fix: {fix}")


def move_aside(output_dir: str | None, sweep_dir: Path) -> None:
    """A dead trial's partial job folder leaves the sweep (its retry runs in a new one)."""
    if not output_dir or not Path(output_dir).is_dir() or Path(output_dir).parent != sweep_dir:
        return
    target = sweep_dir / STALE_DIR / Path(output_dir).name
    target.parent.mkdir(exist_ok=True)
    shutil.move(output_dir, target)
    log.warning("Moved the stale trial's partial job folder to %s", target)


def fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def finished_trials(study: optuna.Study) -> int:
    """Trials that count towards n_trials: complete, pruned, or failed after running (not stale)."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(t.state != TrialState.FAIL or FAIL_REASON in t.user_attrs for t in study.get_trials(False, states))


def running_trials(study: optuna.Study) -> list[int]:
    return [t.number for t in study.get_trials(False, (TrialState.RUNNING,))]


class InFlight:
    """The trials this process runs and has not told yet, each with its Optuna heartbeat thread."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self.trials: dict[int, tuple[Trial, object]] = {}

    def start(self, trial: Trial) -> None:
        thread = get_heartbeat_thread(trial._trial_id, self.study._storage)
        thread.start()
        self.trials[trial.number] = (trial, thread)

    def done(self, trial: Trial) -> None:
        """Stop its heartbeat: the trial is about to be told (or handed back)."""
        entry = self.trials.pop(trial.number, None)
        if entry is not None:
            entry[1].join()

    def hand_back_all(self) -> list[int]:
        """Ctrl-C: every unfinished trial goes back to the queue as it is (not failed, not counted); it runs
        again with the same number, in the same job folder. Returns their numbers."""
        back = []
        for trial, _ in list(self.trials.values()):
            self.done(trial)
            if self.study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                self.study._storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
                back.append(trial.number)
        return back

    def stop_all(self) -> None:
        for trial, _ in list(self.trials.values()):
            self.done(trial)


def surplus(study: optuna.Study, trial: Trial, n_trials: int) -> bool:
    """Another worker asked at the same moment and the study would exceed n_trials with this trial."""
    ahead = finished_trials(study) + sum(n < trial.number for n in running_trials(study))
    return ahead >= n_trials
