"""Sweep summary: what each swept setting did to each metric, with its uncertainty.

    python -m ideogram4.experiment.summary SWEEP_DIR [--baseline "cfg=3"]

Reads only the job folders on disk (``manifest.jsonl``, ``.hydra/overrides.yaml``), like the comparison
grid, so it works for any launcher and for a sweep scored later. Writes into SWEEP_DIR:

- ``summary.csv``: one row per combination of swept values (columns named as the overrides: ``cfg``,
  ``sampler.steps``, ...), ``n`` images, and per metric (in registry order) ``<m>_better`` (higher /
  lower / neither), ``<m>_n``, ``<m>_mean``, ``<m>_ci_low``, ``<m>_ci_high`` (95 %, clustered by
  prompt: see intervals.py) and ``<m>_ci_note`` (why an interval is empty, e.g. n=1).
- ``comparisons.csv``: per setting and metric, the paired difference to a baseline setting. Settings
  share prompts and seeds, so each image is compared with the same prompt and seed under the baseline,
  which removes most of the prompt and seed noise from the interval.
- ``summary.png``: each metric against each swept numeric parameter (plot.py), and a ``cost`` row:
  sampling seconds per image.
- cost columns (``run/cost.py``; absent for manifests written before costs were): ``sampling_s``,
  ``device_s_per_image`` and ``gflops`` with the same intervals and paired comparisons (lower is
  better), ``images_per_hour`` (3600 / mean device seconds per image) and ``peak_memory_gb`` (the
  largest of the setting's images; CUDA only).
- ``summary.json``: how the numbers were made: the interval method and level, each metric's direction.

A metric that is None for an image (nothing to score) is left out of that metric's mean; ``<m>_n``
says how many images each value rests on.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..grid import collect_jobs
from ..present import sweep_title
from ..run import outputs as out_mod
from ..run.cost import COST_VALUES, images_per_hour
from .intervals import LEVEL, METHOD, MIN_CLUSTERS, Interval, clustered_mean_ci, paired_difference_ci
from .plot import COST_PANEL, plot_summary
from .settings import Setting, is_number, load_settings

log = logging.getLogger("ideogram4.experiment")

SUMMARY_CSV = "summary.csv"
COMPARISONS_CSV = "comparisons.csv"
SUMMARY_PNG = "summary.png"
SUMMARY_JSON = "summary.json"
CI_FIELDS = ("better", "n", "mean", "ci_low", "ci_high", "ci_note")
DIFF_FIELDS = ("better", "n", "diff_mean", "diff_ci_low", "diff_ci_high", "diff_ci_note")


@dataclass
class SweepSummary:
    sweep_dir: Path
    swept_keys: list[str]
    metrics: list[str]
    settings: list[Setting]
    summary_columns: list[str]
    summary_rows: list[list]
    comparison_columns: list[str] = field(default_factory=list)
    comparison_rows: list[list] = field(default_factory=list)
    directions: dict[str, str] = field(default_factory=dict)  # metric -> higher / lower / neither
    summary_csv: Path | None = None
    comparisons_csv: Path | None = None
    plot_png: Path | None = None
    summary_json: Path | None = None

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.summary_csv, self.comparisons_csv, self.plot_png, self.summary_json) if p is not None]


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else x


def metric_directions(metrics: list[str]) -> dict[str, str]:
    """The sweep's metrics in registry order (unknown names after, by name) -> their direction."""
    from ideogram4.metrics import value_directions

    known = value_directions()
    ordered = [m for m in known if m in metrics] + sorted(m for m in metrics if m not in known)
    return {m: known.get(m, "unknown") for m in ordered}


def _interval_cells(direction: str, ci: Interval) -> list:
    return [direction, ci.n, *(_none_if_nan(x) for x in (ci.mean, ci.low, ci.high)), ci.note]


def setting_cis(setting: Setting, metrics: list[str]) -> dict[str, Interval]:
    """metric -> the interval of the setting's mean, its images clustered by prompt."""
    out = {}
    for m in metrics:
        per_unit = setting.metric_values(m)
        out[m] = clustered_mean_ci(list(per_unit.values()), [prompt for prompt, _ in per_unit])
    return out


def summary_table(swept, settings, directions, cis, costs=()) -> tuple[list[str], list[list]]:
    """Per setting: n and each measure's interval (`directions`: the metrics, then `costs`); with
    costs, images per hour (from device_s_per_image) and the largest peak GPU memory."""
    columns = [*swept, "n"] + [f"{m}_{f}" for m in directions for f in CI_FIELDS]
    columns += ["images_per_hour", "peak_memory_gb"] if costs else []
    rows = []
    for setting, ci in zip(settings, cis):
        row: list = [setting.values[k] for k in swept] + [setting.n_images]
        for m, direction in directions.items():
            row += _interval_cells(direction, ci[m])
        if costs:
            device_s = _none_if_nan(ci["device_s_per_image"].mean) if "device_s_per_image" in costs else None
            peak = max(setting.peak_memory_bytes, default=None)
            row += [images_per_hour(device_s), peak / 2**30 if peak else None]
        rows.append(row)
    return columns, rows


def recorded_baseline(sweep_dir: Path):
    """The sweep's own `summary_baseline` (in SWEEP_DIR/multirun.yaml), so a rebuild (score, summary)
    compares against what the sweep asked for; None if it set none."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    value = OmegaConf.select(OmegaConf.load(path), "summary_baseline", default=None)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def parse_baseline(baseline: str | Sequence[str] | Mapping[str, object] | None) -> dict[str, str]:
    """ "cfg=3 sampler.steps=12", "cfg=3,sampler.steps=12", ["cfg=3"] or {"cfg": 3} -> {key: value text}."""
    if baseline is None:
        return {}
    if isinstance(baseline, Mapping):
        return {str(k).lstrip("+"): str(v) for k, v in baseline.items()}
    texts = [baseline] if isinstance(baseline, str) else list(baseline)
    items = [t for text in texts for t in re.split(r"\s+|,(?=\s*[A-Za-z_][\w.]*=)", text.strip()) if t]
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f'baseline: {item!r} is not KEY=VALUE; write it like an override, e.g. --baseline "cfg=3"')
        out[key.lstrip("+")] = value
    return out


def _same_value(a: str, b: str) -> bool:
    return a == b or (is_number(a) and is_number(b) and float(a) == float(b))


def baseline_pairs(
    baseline: dict[str, str], swept: list[str], settings: list[Setting]
) -> list[tuple[Setting, Setting]]:
    """(setting, its baseline) for every other setting. A baseline naming only some swept keys is
    matched within each combination of the other keys (e.g. cfg vs cfg=3 at each sampler.steps)."""
    if not baseline:
        return [(s, settings[0]) for s in settings[1:]]
    for key, value in baseline.items():
        if key not in swept:
            raise ValueError(
                f"baseline: {key!r} is not a swept key of this sweep (swept: {', '.join(swept) or 'none'}); "
                f'name one of them, e.g. --baseline "{swept[0] if swept else "cfg"}=..."'
            )
        known = list(dict.fromkeys(s.values[key] for s in settings))
        if not any(_same_value(value, v) for v in known):
            raise ValueError(f"baseline: {key}={value} is not a value of this sweep; {key} took {', '.join(known)}")
    pairs = []
    for s in settings:
        if all(_same_value(s.values[k], v) for k, v in baseline.items()):
            continue
        wanted = {**s.values, **baseline}
        match = [b for b in settings if all(_same_value(b.values[k], v) for k, v in wanted.items())]
        if match:
            pairs.append((s, match[0]))
        else:
            log.info("No baseline setting for %s (no job with %s): not compared", s.label(), wanted)
    return pairs


def comparison_table(swept, pairs, directions) -> tuple[list[str], list[list]]:
    columns = [*swept, "baseline"] + [f"{m}_{f}" for m in directions for f in DIFF_FIELDS]
    rows = []
    for setting, base in pairs:
        row: list = [setting.values[k] for k in swept] + [base.label()]
        for m, direction in directions.items():
            a, b = setting.metric_values(m), base.metric_values(m)
            units = sorted(a.keys() & b.keys())
            diff = paired_difference_ci([a[u] for u in units], [b[u] for u in units], [p for p, _ in units])
            row += _interval_cells(direction, diff)
        rows.append(row)
    return columns, rows


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def write_csv(path: Path, columns: list[str], rows: list[list]) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([_format(v) for v in row] for row in rows)
    tmp.replace(path)
    return path


def write_json(path: Path, doc: dict) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def summary_document(result: SweepSummary, baseline: dict[str, str]) -> dict:
    """summary.json: what a reader needs to interpret the CSVs."""
    return {
        "interval": {"method": METHOD, "level": LEVEL, "min_clusters": MIN_CLUSTERS},
        "directions": result.directions,
        "swept_keys": result.swept_keys,
        "baseline": baseline or None,
    }


def summarize(sweep_dir: str | Path, baseline=None, jobs=None) -> SweepSummary | None:
    """Write summary.csv, comparisons.csv, summary.png and summary.json into the sweep folder (see the
    module doc).

    ``baseline``: overrides naming the setting to compare against ("cfg=3", ["cfg=3", "sampler.steps=12"]
    or {"cfg": 3}); default the sweep's recorded ``summary_baseline``, else the first setting in sort order.
    A bad baseline raises ValueError before any file is written. Returns None when no job folder has a
    manifest. ``jobs``: the job folders when the caller already collected them (grid.collect_jobs).
    """
    sweep_dir = Path(sweep_dir)
    if jobs is None:
        jobs = collect_jobs(sweep_dir) if sweep_dir.is_dir() else []
    if not jobs:
        log.warning("No job folders with a %s under %s: no sweep summary", out_mod.MANIFEST, sweep_dir)
        return None
    swept, settings, metrics = load_settings(jobs)
    wanted_baseline = parse_baseline(recorded_baseline(sweep_dir) if baseline is None else baseline)
    directions = metric_directions(metrics)
    costs = [c for c in COST_VALUES if any(s.metric_values(c) for s in settings)]  # none in older manifests
    measures = {**directions, **dict.fromkeys(costs, "lower")}
    pairs = baseline_pairs(wanted_baseline, swept, settings)  # raises on a bad baseline: nothing written yet
    cis = [setting_cis(s, list(measures)) for s in settings]
    result = SweepSummary(
        sweep_dir, swept, list(directions), settings, *summary_table(swept, settings, measures, cis, costs)
    )
    result.directions = measures
    result.summary_csv = write_csv(sweep_dir / SUMMARY_CSV, result.summary_columns, result.summary_rows)
    result.summary_json = write_json(sweep_dir / SUMMARY_JSON, summary_document(result, wanted_baseline))
    if not metrics:
        _remove_stale(sweep_dir, COMPARISONS_CSV, SUMMARY_PNG)
        log.warning(
            "No metric values in the manifests under %s: %s has image counts only. Score the images with "
            "metrics=[...] in the run, or afterwards with `python -m ideogram4.experiment.score %s --metrics ...`",
            sweep_dir,
            SUMMARY_CSV,
            sweep_dir,
        )
        return result
    if pairs:
        result.comparison_columns, result.comparison_rows = comparison_table(swept, pairs, measures)
        result.comparisons_csv = write_csv(
            sweep_dir / COMPARISONS_CSV, result.comparison_columns, result.comparison_rows
        )
    else:
        _remove_stale(sweep_dir, COMPARISONS_CSV)
        log.info("Sweep summary: %d setting(s), nothing to compare against a baseline", len(settings))
    title = sweep_title(sweep_dir)
    plotted = {**directions, **({COST_PANEL: "lower"} if COST_PANEL in costs else {})}
    result.plot_png = plot_summary(sweep_dir / SUMMARY_PNG, swept, settings, plotted, cis, title)
    if result.plot_png is None:
        _remove_stale(sweep_dir, SUMMARY_PNG)
    log.info(
        "Sweep summary: %d setting(s) x %d metric(s) -> %s",
        len(settings),
        len(metrics),
        ", ".join(map(str, result.paths)),
    )
    return result


def _remove_stale(sweep_dir: Path, *names: str) -> None:
    """Files of an earlier summary that this one does not rebuild would contradict it: removed."""
    for name in names:
        (sweep_dir / name).unlink(missing_ok=True)


def _typed_rows(columns: list[str], rows: list[list], keys: list[str]) -> list[list]:
    """Rows with the swept-key columns as numbers where every value of the column is one (W&B plots them)."""
    numeric = [columns.index(k) for k in keys if all(is_number(str(r[columns.index(k)])) for r in rows)]
    out = []
    for row in rows:
        row = list(row)
        for i in numeric:
            number = float(row[i])
            row[i] = int(number) if number.is_integer() and "." not in str(row[i]) else number
        out.append(row)
    return out


def log_summary(tracker, summary: SweepSummary) -> None:
    """Log the summary and comparison tables and the plot to a tracker (ideogram4.experiment.run.tracker)."""
    tracker.log_table(
        "sweep_summary",
        summary.summary_columns,
        _typed_rows(summary.summary_columns, summary.summary_rows, summary.swept_keys),
    )
    if summary.comparison_rows:
        tracker.log_table(
            "sweep_comparisons",
            summary.comparison_columns,
            _typed_rows(summary.comparison_columns, summary.comparison_rows, summary.swept_keys),
        )
    if summary.plot_png is not None:
        from PIL import Image

        with Image.open(summary.plot_png) as im:
            tracker.log_image("sweep_summary_plot", im.convert("RGB"), caption=f"mean and 95 % CI ({METHOD})")
