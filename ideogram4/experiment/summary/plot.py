"""summary.png: each metric against each swept numeric parameter, with the summary's intervals.

One row of panels per metric (and a last `cost` row: sampling seconds per image), one column per swept
numeric parameter (a setting's other swept values
are the colour/line of its point). Every point is labelled with its n; a point without an interval
(n=1, see intervals.py) is drawn hollow with no error bar, so it never looks like the most precise one.
Each title says which direction is better. Drawn with matplotlib's object API (a ``Figure``, no
pyplot), so it renders with Agg and never switches the backend of the process that calls it.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import textwrap
from pathlib import Path

from .intervals import Interval
from .settings import Setting, is_number

MAX_LEGEND = 12
CHARS_PER_INCH = 10  # of the title's font at the figure's dpi: where a long title wraps
COST_PANEL = "sampling_s"  # the run.cost value drawn as the `cost` row: what each setting's images took


def x_keys(swept: list[str], settings: list[Setting]) -> list[str]:
    """The swept keys every setting gives a number for (one panel column each)."""
    return [k for k in swept if all(is_number(s.values[k]) for s in settings)]


def _series(settings: list[Setting], others: list[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(settings):
        groups.setdefault(", ".join(f"{k}={s.values[k]}" for k in others), []).append(i)
    return groups


def _draw_series(ax, xs, cis: list[Interval], label: str | None, connect: bool, color) -> None:
    with_ci = [(x, c) for x, c in zip(xs, cis) if not math.isnan(c.low)]
    if connect:
        ax.plot(xs, [c.mean for c in cis], linestyle="-", color=color, alpha=0.6)
    if with_ci:
        px, pc = zip(*with_ci)
        yerr = [[c.mean - c.low for c in pc], [c.high - c.mean for c in pc]]
        ax.errorbar(px, [c.mean for c in pc], yerr=yerr, fmt="o", capsize=3, color=color, label=label)
        label = None
    bare = [(x, c) for x, c in zip(xs, cis) if math.isnan(c.low)]
    if bare:
        bx, bc = zip(*bare)
        ax.plot(bx, [c.mean for c in bc], "o", mfc="none", color=color, label=label)
    for x, c in zip(xs, cis):
        text = f"n={c.n}" if not math.isnan(c.low) else f"n={c.n}, no CI"
        ax.annotate(text, (x, c.mean), textcoords="offset points", xytext=(4, 4), fontsize="x-small", color=color)


def _panel(ax, metric: str, direction: str, x_key: str | None, settings, cis) -> None:
    others = [k for k in settings[0].values if k != x_key]
    groups = _series(settings, others)
    # every setting its own series (e.g. an Optuna search): one unconnected set of points instead
    connect = len(groups) == 1 or any(len(members) > 1 for members in groups.values())
    if not connect:
        groups = {"": list(range(len(settings)))}
    for n_series, (label, members) in enumerate(groups.items()):
        pts = sorted(
            ((float(settings[i].values[x_key]) if x_key else i), cis[i][metric]) for i in members if cis[i][metric].n
        )
        if pts:
            xs, series = zip(*pts)
            _draw_series(ax, xs, list(series), label or None, connect, f"C{n_series % 10}")
    ax.set_xlabel(x_key or "setting")
    ax.set_ylabel(metric)
    better = {"higher": "higher is better", "lower": "lower is better"}.get(direction, "no better direction")
    cost = "cost: seconds per image, " if metric == COST_PANEL else ""
    ax.set_title(f"{cost}{metric} ({better})", fontsize="medium")
    ax.grid(alpha=0.3)
    if x_key is None:
        ax.set_xticks(range(len(settings)), [s.label() for s in settings], rotation=30, ha="right", fontsize="small")
    if 1 < len(groups) <= MAX_LEGEND:
        ax.legend(fontsize="x-small")


def plot_summary(path: Path, swept, settings, directions: dict[str, str], cis, title: str) -> Path | None:
    """Draw and save summary.png; None when no metric has a value (or matplotlib is not installed)."""
    if importlib.util.find_spec("matplotlib") is None:
        logging.getLogger("ideogram4.experiment").warning(
            "summary.png not drawn: plotting needs matplotlib, in the [metrics] extra: pip install -e '.[metrics]'"
        )
        return None
    from matplotlib.figure import Figure

    plotted = [m for m in directions if any(ci[m].n for ci in cis)]
    if not plotted:
        return None
    columns = x_keys(swept, settings) or [None]
    fig = Figure(figsize=(5.0 * len(columns), 3.8 * len(plotted)), layout="constrained")
    axes = fig.subplots(len(plotted), len(columns), squeeze=False)
    for r, metric in enumerate(plotted):
        for c, x_key in enumerate(columns):
            _panel(axes[r][c], metric, directions[metric], x_key, settings, cis)
    heading = textwrap.wrap(title, width=int(fig.get_figwidth() * CHARS_PER_INCH))  # the overrides can be long
    fig.suptitle("\n".join([*heading, "mean and 95 % CI over prompts (n = images; hollow = too few for a CI)"]))
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    tmp.replace(path)
    return path
