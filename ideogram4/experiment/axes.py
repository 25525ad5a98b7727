"""The X/Y/Z layout of a sweep's images, shared by the grid PNG and the HTML report.

Every image has coordinates: the value of each swept key, its prompt and its seed. X and Y name one
coordinate each (a swept key, or "prompt" / "seed"), Z splits the images into sheets, and whatever is on
no axis (by default prompt x seed) makes sections of rows. An Optuna search has no grid of values: its
X axis is the trials themselves, best objective first, each labelled with its number and parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .present import label_map, round_value, search_objective, value_order

PSEUDO_KEYS = ("prompt", "seed")
TRIAL_KEY = "trial"


@dataclass
class Axis:
    key: str | None  # None: a single unnamed position
    values: list[str] = field(default_factory=lambda: [""])
    labels: list[str] = field(default_factory=lambda: [""])

    def title(self, i: int) -> str:
        return f"{self.key}={self.labels[i]}" if self.key and self.key != TRIAL_KEY else self.labels[i]


@dataclass
class Layout:
    x: Axis
    y: Axis
    z: Axis
    section_keys: list[str]
    sections: list[tuple[str, ...]]  # the values of section_keys, one tuple per section
    cells: dict[tuple[int, int, int, int], dict]  # (z, section, y, x) -> {"record", "path", "coords"}
    objective: tuple[str, str] | None = None  # (metric, direction) of a search

    def section_title(self, s: int) -> str:
        parts = []
        for key, value in zip(self.section_keys, self.sections[s]):
            parts.append(value if key == "prompt" else f"{key} {value}" if key == "seed" else f"{key}={value}")
        return " \u00b7 ".join(parts)


def _order(key: str, values: set[str], first_seen: list[str]) -> list[str]:
    if key == "prompt":
        return [v for v in first_seen if v in values]
    return sorted(values, key=value_order)


def check_axes(available: list[str], x: str | None, y: str | None, z: str | None, prefix: str = "grid") -> None:
    """ValueError naming the field when an axis is not a swept key (or prompt/seed) or is used twice."""
    chosen = {"x": x, "y": y, "z": z}
    for name, key in chosen.items():
        if key is not None and key not in available:
            raise ValueError(
                f"{prefix}.{name}={key}: not a swept key of this sweep; choose one of {', '.join(available)}"
            )
    named = [k for k in chosen.values() if k]
    if len(set(named)) < len(named):
        raise ValueError(f"{prefix}: x, y and z must be different keys, got x={x} y={y} z={z}")


def _objective_value(record: dict, metric: str) -> float | None:
    value = (record.get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _trial_axis(entries: list[dict], swept: list[str], objective: tuple[str, str]) -> Axis:
    """One position per trial (job folder), best mean objective first, labelled '#N: objective' and a line
    per parameter."""
    metric, goal = objective
    by_trial: dict[str, list[float]] = {}
    for e in entries:
        value = _objective_value(e["record"], metric)
        by_trial.setdefault(e["coords"][TRIAL_KEY], []).extend([] if value is None else [value])
    means = {t: (sum(v) / len(v) if v else None) for t, v in by_trial.items()}
    sign = -1.0 if goal == "maximize" else 1.0
    order = sorted(means, key=lambda t: (means[t] is None, sign * (means[t] or 0.0), int(t)))
    swept_labels = {k: label_map([e["coords"][k] for e in entries]) for k in swept}
    short = _short_names(swept)
    params = {
        e["coords"][TRIAL_KEY]: "".join(f"\n{short[k]}={swept_labels[k][e['coords'][k]]}" for k in swept)
        for e in entries
    }
    labels = [f"#{t}: {round_value(means[t]) or '-'}{params[t]}" for t in order]  # the title names the metric
    return Axis(TRIAL_KEY, order, labels)


def _short_names(keys: list[str]) -> dict[str, str]:
    """'sampler.polish_cfg' -> 'polish_cfg' where the last part names one key only (narrow columns)."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _axis(key: str | None, entries: list[dict], first_seen: dict[str, list[str]]) -> Axis:
    if key is None:
        return Axis(None)
    values = _order(key, {e["coords"][key] for e in entries}, first_seen.get(key, []))
    labels = label_map(values) if key not in PSEUDO_KEYS else {v: v for v in values}
    return Axis(key, values, [labels[v] for v in values])


def _coords(grid, row: int, col: int, entry: dict) -> dict[str, str]:
    prompt, seed = grid.rows[row]
    return {**grid.column_values[col], "prompt": prompt, "seed": str(seed), TRIAL_KEY: str(entry["job_num"])}


def _position(axis: Axis, entry: dict) -> int:
    return axis.values.index(entry["coords"][axis.key]) if axis.key else 0


def build_layout(grid, x=None, y=None, z=None, sweep_dir=None, prefix: str = "grid") -> Layout:
    """Lay the grid's cells out on X/Y/Z (defaults: the first swept key on X, the second on Y)."""
    swept = list(grid.swept_keys)
    objective = search_objective(Path(sweep_dir)) if sweep_dir is not None else None
    entries = [{**entry, "coords": _coords(grid, r, c, entry)} for (r, c), entry in grid.cells.items()]
    first_seen = {"prompt": list(dict.fromkeys(p for p, _ in grid.rows))}
    if objective is not None and x is None and y is None and z is None:
        x_axis, y_axis, z_axis = _trial_axis(entries, swept, objective), Axis(None), Axis(None)
        rest = list(PSEUDO_KEYS)
    else:
        check_axes(swept + list(PSEUDO_KEYS), x, y, z, prefix)
        x = x or next((k for k in swept if k not in (y, z)), None)
        y = y or next((k for k in swept if k not in (x, z)), None)
        x_axis, y_axis, z_axis = (_axis(k, entries, first_seen) for k in (x, y, z))
        rest = [k for k in swept + list(PSEUDO_KEYS) if k not in (x, y, z)]
        objective = None
    section_of = {tuple(e["coords"][k] for k in rest) for e in entries}
    ordered = [_axis(k, entries, first_seen).values for k in rest]
    sections = sorted(section_of, key=lambda t: tuple(ordered[i].index(v) for i, v in enumerate(t)))
    cells = {}
    for e in entries:
        section = sections.index(tuple(e["coords"][k] for k in rest))
        cells[(_position(z_axis, e), section, _position(y_axis, e), _position(x_axis, e))] = e
    return Layout(x_axis, y_axis, z_axis, rest, sections, cells, objective)
