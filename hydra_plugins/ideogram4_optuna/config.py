"""The sweeper's config node, registered as ``hydra/sweeper=optuna`` (Hydra imports this module while
scanning plugins, so it stays free of Optuna imports)."""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class ObjectiveConf:
    metric: str = "ocr_word_accuracy"  # a key of the manifest records' "metrics"
    direction: str = "maximize"  # maximize | minimize


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.ideogram4_optuna.sweeper.OptunaSweeper"
    # the study is kept in this storage under this name; rerunning with the same sweep folder resumes it
    study_name: str = "search"
    storage: Optional[str] = None  # None: sqlite:///<hydra.sweep.dir>/study.db
    n_trials: int = 20  # finished trials (complete or failed) the study should hold
    n_jobs: int = 1  # trials launched together through the configured Hydra launcher
    # a trial's process records a heartbeat every heartbeat_interval seconds; a running trial without one
    # for grace_period seconds belongs to a dead process: failed and queued again (at most max_retry times)
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 3
    lock_timeout: int = 60  # seconds SQLite waits for another worker's lock on the study before giving up
    seed: Optional[int] = None  # TPE sampler seed: trial N draws from seed + N (resumed or parallel: no repeats)
    n_startup_trials: int = 10  # random trials before TPE models the results
    # one entry: single objective; several: multi-objective (Pareto front in best.yaml)
    objective: List[ObjectiveConf] = field(default_factory=lambda: [ObjectiveConf()])
    # search space in Hydra's sweep syntax: interval(2, 9), int(interval(1, 8)), tag(log, interval(...)),
    # range(12, 49, 4), choice(a, b) or a,b; a plain value is a fixed override
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="ideogram4")
