"""summary.png: each metric of a sweep against a swept numeric parameter, with bootstrap error bars.

Drawn with matplotlib's object API (a ``Figure``, no pyplot), so it renders with Agg and never switches
the backend of the process that calls it.
"""

from __future__ import annotations

import math
from pathlib import Path

from .settings import Setting, is_number


def _x_key(swept: list[str], settings: list[Setting]) -> str | None:
    """The numeric swept key with the most distinct values (the plot's x axis), or None."""
    numeric = [k for k in swept if all(is_number(s.values[k]) for s in settings)]
    return max(numeric, key=lambda k: len({float(s.values[k]) for s in settings}), default=None)


def plot_summary(path: Path, swept, settings, metrics, cis, title: str) -> Path | None:
    from matplotlib.figure import Figure

    plotted = [m for m in metrics if any(ci[m][0] for ci in cis)]
    if not plotted:
        return None
    x_key = _x_key(swept, settings)
    others = [k for k in swept if k != x_key]
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(settings):
        groups.setdefault(", ".join(f"{k}={s.values[k]}" for k in others), []).append(i)
    # every point its own line (e.g. an Optuna search): one unconnected series, the CSV has the other keys
    lines = not all(len(members) == 1 for members in groups.values()) or len(groups) == 1
    if not lines:
        groups = {"": list(range(len(settings)))}
    ncols = min(3, len(plotted))
    nrows = math.ceil(len(plotted) / ncols)
    fig = Figure(figsize=(5.0 * ncols, 3.8 * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for ax, m in zip(axes, plotted):
        for label, members in groups.items():
            pts = sorted(
                (float(settings[i].values[x_key]) if x_key else i, *cis[i][m][1:]) for i in members if cis[i][m][0]
            )
            if not pts:
                continue
            xs, means, lows, highs = zip(*pts)
            yerr = [
                [0.0 if math.isnan(lo) else max(0.0, y - lo) for y, lo in zip(means, lows)],
                [0.0 if math.isnan(hi) else max(0.0, hi - y) for y, hi in zip(means, highs)],
            ]
            style = "-" if lines else "none"
            ax.errorbar(xs, means, yerr=yerr, marker="o", capsize=3, linestyle=style, label=label or None)
        ax.set_xlabel(x_key or "setting")
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
        if x_key is None:
            ax.set_xticks(
                range(len(settings)), [s.label() for s in settings], rotation=30, ha="right", fontsize="small"
            )
        if 1 < len(groups) <= 12:
            ax.legend(fontsize="small")
    for ax in axes[len(plotted) :]:  # the unused cells of the last row
        ax.set_visible(False)
    fig.suptitle(f"{title}: mean and 95 % bootstrap CI over prompt x seed")
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    tmp.replace(path)
    return path
