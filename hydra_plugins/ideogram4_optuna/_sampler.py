"""TPE seeded per trial: trial N's random draws come from ``seed + N``.

Several search processes on one study (README: "Searching in parallel") each hold their own sampler; seeded
once, two workers started together draw the same settings for their first trials. TPE keeps no state
between trials other than its random generator (it reads the history from the study), so a sampler
reseeded from the trial number gives each trial its own draws whichever worker asks for it and when:
no two workers repeat a draw, and a resumed search never replays one.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


class TrialSeededSampler(optuna.samplers.BaseSampler):
    def __init__(self, seed: int | None, **tpe: Any) -> None:
        self.seed, self.tpe = seed, tpe
        self.tpe_sampler = optuna.samplers.TPESampler(seed=seed, **tpe)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.seed is not None:
            self.tpe_sampler = optuna.samplers.TPESampler(seed=self.seed + trial.number, **self.tpe)
        self.tpe_sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        return self.tpe_sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict) -> dict:
        return self.tpe_sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, name: str, distribution: Any) -> Any:
        return self.tpe_sampler.sample_independent(study, trial, name, distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self.tpe_sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.tpe_sampler.reseed_rng()
