"""The report's summary and comparison tables, read from summary.csv and comparisons.csv (so the page
shows exactly what the files hold: each cell keeps the CSV text in data-value, and shows it rounded)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..present import ARROWS, direction, finite_float, label_map, round_value
from ..summary.table import CI_FIELDS, COMPARISONS_CSV, DIFF_FIELDS, SUMMARY_CSV, SUMMARY_JSON


@dataclass
class Number:
    raw: str  # the CSV text, full precision
    text: str  # rounded for display
    marks: list[str] = field(default_factory=list)  # css classes: best, better, worse, excludes-zero

    @classmethod
    def of(cls, raw: str) -> Number:
        value = finite_float(raw)
        return cls(raw, round_value(value) if value is not None else raw)


@dataclass
class MetricColumn:
    name: str
    label: str  # with its direction
    better: str | None


@dataclass
class Table:
    keys: list[str]  # swept keys (the first columns)
    metrics: list[MetricColumn]
    rows: list[dict]  # {"keys": [(raw, label)], "n": str, "baseline": str, "cells": {metric: {field: Number}}}
    source: str  # the CSV's file name
    method: str = ""  # how the intervals were computed (summary.json)
    plain: list[str] = field(default_factory=list)  # columns of one number per row (the cost columns)


def _read(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _metric_columns(columns: list[str], rows: list[dict], suffix: str) -> list[MetricColumn]:
    """The metrics of a CSV, each with the direction its `<m>_better` column states (else the registry's)."""
    out = []
    for m in [c[: -len(suffix)] for c in columns if c.endswith(suffix)]:
        stated = rows[0].get(f"{m}_better") if rows else None
        better = stated if stated in ARROWS else None if stated else direction(m)
        label = f"{m} {ARROWS[better]}" if better else m
        out.append(MetricColumn(m, label, better))
    return out


def _method(sweep_dir: Path) -> str:
    try:
        return str(json.loads((sweep_dir / SUMMARY_JSON).read_text())["interval"]["method"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _key_cells(keys: list[str], rows: list[dict]) -> list[list[tuple[str, str]]]:
    labels = {k: label_map([r[k] for r in rows]) for k in keys}
    return [[(r[k], labels[k][r[k]]) for k in keys] for r in rows]


def _load(sweep_dir: Path, name: str, after_keys: str, fields: tuple[str, ...]) -> Table | None:
    """A summary CSV as a Table, or None without the file. The swept keys are the columns before
    `after_keys` (whose text each row keeps); a metric has one column per field (`<m>_<field>`)."""
    path = Path(sweep_dir) / name
    if not path.is_file():
        return None
    columns, rows = _read(path)
    keys = columns[: columns.index(after_keys)] if after_keys in columns else []
    metrics = _metric_columns(columns, rows, f"_{fields[2]}")  # fields: better, n, the mean, ...
    # after the metrics' field columns: plain columns, one number per row (images_per_hour, peak_memory_gb)
    of_metrics = {f"{m.name}_{f}" for m in metrics for f in fields}
    plain = [c for c in columns[len(keys) + 1 :] if c not in of_metrics]
    out = []
    for key_cells, r in zip(_key_cells(keys, rows), rows):
        cells = {m.name: {f: Number.of(r.get(f"{m.name}_{f}", "")) for f in fields} for m in metrics}
        extra = {c: Number.of(r.get(c, "")) for c in plain}
        out.append({"keys": key_cells, after_keys: r.get(after_keys, ""), "cells": cells, "plain": extra})
    return Table(keys, metrics, out, name, _method(Path(sweep_dir)), plain)


def summary_table(sweep_dir: Path) -> Table | None:
    """summary.csv with the best mean of each metric that has a direction marked."""
    table = _load(sweep_dir, SUMMARY_CSV, "n", CI_FIELDS)
    if table is None:
        return None
    out = table.rows
    for m in table.metrics:
        means = [(finite_float(row["cells"][m.name]["mean"].raw), i) for i, row in enumerate(out)]
        means = [(v, i) for v, i in means if v is not None]
        if m.better and len({v for v, _ in means}) > 1:  # all equal: nothing is best
            best = max(v for v, _ in means) if m.better == "higher" else min(v for v, _ in means)
            for v, i in means:
                if v == best:
                    out[i]["cells"][m.name]["mean"].marks.append("best")
    return table


def comparison_table(sweep_dir: Path) -> Table | None:
    """comparisons.csv with each difference whose interval excludes 0 marked (better / worse by direction)."""
    table = _load(sweep_dir, COMPARISONS_CSV, "baseline", DIFF_FIELDS)
    if table is None:
        return None
    for row in table.rows:
        for m in table.metrics:
            cell = row["cells"][m.name]
            low, high = finite_float(cell["diff_ci_low"].raw), finite_float(cell["diff_ci_high"].raw)
            if low is not None and high is not None and (low > 0 or high < 0):
                cell["diff_mean"].marks.append("excludes-zero")
                if m.better:
                    cell["diff_mean"].marks.append("better" if (low > 0) == (m.better == "higher") else "worse")
    return table
