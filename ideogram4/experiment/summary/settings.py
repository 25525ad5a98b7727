"""A sweep's job folders grouped into settings: one per combination of swept values, holding the metric
values of its images per (prompt, seed) unit. Read by the summary table and the summary plot."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..grid import JobFolder, swept_keys
from ..present import value_order
from ..run import outputs as out_mod
from ..run.cost import record_costs

log = logging.getLogger("ideogram4.experiment")

Unit = tuple[str, int]  # (prompt_id, seed): the thing resampled and paired


@dataclass
class Setting:
    """One combination of swept values and the metric values of its images."""

    values: dict[str, str]  # swept key -> override text ("" where the job left the key at its default)
    scores: dict[Unit, dict[str, list[float]]] = field(default_factory=dict)  # metrics and run.cost.COST_VALUES
    n_images: int = 0
    peak_memory_bytes: list[int] = field(default_factory=list)

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items()) or "all"

    def metric_values(self, metric: str) -> dict[Unit, float]:
        """Per unit value (the mean if a unit appears in two job folders of the same setting)."""
        return {u: sum(v[metric]) / len(v[metric]) for u, v in self.scores.items() if v.get(metric)}


def record_metrics(record: dict) -> dict[str, float]:
    """A manifest record's metric values that can be averaged (None, NaN and non-numbers left out)."""
    out = {}
    for name, value in (record.get("metrics") or {}).items():
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = float(value)
    return out


def job_metrics(job_dir: str | Path) -> list[dict[str, float]]:
    """The metric values of each image of one job folder (the latest manifest line per image)."""
    records = out_mod.latest_records(out_mod.read_manifest(Path(job_dir))).values()
    return [record_metrics(r) for r in records]


def is_number(text: str) -> bool:
    return value_order(text)[0] == 1


def load_settings(jobs: list[JobFolder]) -> tuple[list[str], list[Setting], list[str]]:
    """(swept keys, settings in sort order, metric names in order of first appearance)."""
    swept = swept_keys(jobs)
    by_values: dict[tuple[str, ...], Setting] = {}
    metrics: list[str] = []
    versions: dict[str, set[str]] = {}
    for job in jobs:
        values = {k: job.overrides.get(k, "") for k in swept}
        setting = by_values.setdefault(tuple(values.values()), Setting(values))
        for rec in job.records:
            setting.n_images += 1
            unit = (str(rec.get("prompt_id")), int(rec.get("seed") or 0))
            cell = setting.scores.setdefault(unit, {})
            for name, value in record_metrics(rec).items():
                if name not in metrics:
                    metrics.append(name)
                cell.setdefault(name, []).append(value)
            for name, value in record_costs(rec).items():
                cell.setdefault(name, []).append(value)
            if isinstance(rec.get("peak_memory_bytes"), int):
                setting.peak_memory_bytes.append(rec["peak_memory_bytes"])
            for name, version in (rec.get("metric_versions") or {}).items():
                versions.setdefault(name, set()).add(str(version))
    for name, seen in versions.items():
        if len(seen) > 1:
            log.warning(
                "Metric %s has several versions in this sweep (%s): rescore to compare like with like",
                name,
                ", ".join(sorted(seen)),
            )
    settings = sorted(by_values.values(), key=lambda s: tuple(value_order(v) for v in s.values.values()))
    return swept, settings, metrics
