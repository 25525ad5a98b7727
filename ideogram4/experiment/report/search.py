"""An Optuna search in the report: each trial's objective and the best so far (a small inline SVG), the
parameter importances from Optuna's own analysis, and the trials sorted by objective. Read from the
study the sweeper kept (SWEEP_DIR/study.db unless hydra.sweeper.storage named another)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..present import round_value, search_objective

log = logging.getLogger("ideogram4.experiment")

STUDY_DB = "study.db"  # hydra_plugins.ideogram4_optuna keeps the study here by default
CHART_W, CHART_H, MARGIN = 560, 200, 36


@dataclass
class Search:
    metric: str
    goal: str  # maximize | minimize
    trials: list[dict]  # {"number", "value", "best", "params": {k: text}, "output_dir"} in trial order
    importances: list[tuple[str, float]] = field(default_factory=list)
    importance_note: str = ""
    chart: dict = field(default_factory=dict)

    @property
    def ranked(self) -> list[dict]:
        sign = -1.0 if self.goal == "maximize" else 1.0
        return sorted(self.trials, key=lambda t: (t["value"] is None, sign * (t["value"] or 0.0), t["number"]))


def _study(sweep_dir: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{Path(sweep_dir).resolve() / STUDY_DB}"
    names = optuna.get_all_study_names(storage=storage)
    return optuna.load_study(study_name=names[0], storage=storage) if len(names) == 1 else None


def read_search(sweep_dir: Path) -> Search | None:
    """The sweep's search, or None when it is not one (no objective in multirun.yaml or no study.db)."""
    objective = search_objective(Path(sweep_dir))
    if objective is None or not (Path(sweep_dir) / STUDY_DB).is_file():
        return None
    import optuna

    study = _study(sweep_dir)
    if study is None:
        return None
    goal = objective[1]
    trials, best = [], None
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        value = t.values[0] if t.values else None
        if value is not None and (best is None or (value > best if goal == "maximize" else value < best)):
            best = value
        params = {k: round_value(v, 4) if isinstance(v, float) else str(v) for k, v in t.params.items()}
        trials.append(
            {
                "number": t.number,
                "value": value,
                "best": best,
                "params": params,
                "output_dir": t.user_attrs.get("output_dir"),
            }
        )
    search = Search(objective[0], goal, trials)
    search.importances, search.importance_note = _importances(study, len(trials))
    search.chart = history_chart(trials)
    return search


def _importances(study, n_trials: int) -> tuple[list[tuple[str, float]], str]:
    import optuna

    if n_trials < 2 or len(study.best_trial.params) < 2:
        return [], "importances need at least 2 finished trials and 2 parameters"
    try:
        found = optuna.importance.get_param_importances(study)
    except Exception as e:  # too few distinct values, ... : the page says so instead of failing
        return [], f"Optuna could not estimate importances ({type(e).__name__}: {e})"
    return list(found.items()), "Optuna's PED-ANOVA (optuna.importance.get_param_importances), normalised to sum 1"


def history_chart(trials: list[dict]) -> dict:
    """Points (objective per trial) and a polyline (best so far), scaled into a CHART_W x CHART_H box."""
    points = [(t["number"], t["value"]) for t in trials if t["value"] is not None]
    if not points:
        return {}
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(ys)
    if math.isclose(y0, y1):
        y0, y1 = y0 - 0.5, y1 + 0.5

    def at(x: float, y: float) -> tuple[float, float]:
        px = MARGIN + (x - x0) / (x1 - x0) * (CHART_W - 2 * MARGIN)
        py = CHART_H - MARGIN - (y - y0) / (y1 - y0) * (CHART_H - 2 * MARGIN)
        return round(px, 1), round(py, 1)

    dots = [(*at(x, y), x, round_value(y)) for x, y in points]
    best = " ".join("{},{}".format(*at(t["number"], t["best"])) for t in trials if t["best"] is not None)
    return {
        "w": CHART_W,
        "h": CHART_H,
        "m": MARGIN,
        "dots": dots,
        "best": best,
        "y_low": round_value(y0),
        "y_high": round_value(y1),
        "x_low": x0,
        "x_high": x1,
    }
