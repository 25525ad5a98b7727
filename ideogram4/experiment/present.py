"""How a sweep's numbers and names are shown to people (grid PNGs, summary.png, the HTML report).

Files keep full precision (CSV, manifest, JSON); only what is drawn or displayed is rounded here:
swept values to the fewest decimals that keep them apart, metric values to three significant digits,
metric names with the direction that is better, and a sweep's title from its experiment and overrides.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

SIGNIFICANT = 3  # significant digits of a displayed metric value
MIN_SWEPT_SIGNIFICANT = 2  # a swept value keeps at least this many, even when fewer would tell them apart
BETTER_WORDS = {"higher": "higher is better", "lower": "lower is better"}
ARROWS = {"higher": "\u2191", "lower": "\u2193"}


def direction(metric: str) -> str | None:
    """'higher' or 'lower' when the metric registry says which is better, else None."""
    from ideogram4.metrics import MetricError, better_direction

    try:
        found = better_direction(metric)
    except MetricError:  # a value no installed metric produces (an older or custom metric)
        return None
    return found if found in BETTER_WORDS else None


def metric_label(metric: str, arrow: bool = False) -> str:
    """'ocr_word_accuracy (higher is better)', or with arrow=True 'ocr_word_accuracy ↑' (fonts that have it)."""
    better = direction(metric)
    if better is None:
        return metric
    return f"{metric} {ARROWS[better]}" if arrow else f"{metric} ({BETTER_WORDS[better]})"


def round_value(value: float | None, significant: int = SIGNIFICANT) -> str:
    """A metric value for display: three significant digits, never exponent notation for ordinary sizes."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if value == 0:
        return "0"
    decimals = max(0, significant - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def finite_float(text: str) -> float | None:
    """The number a text holds, or None (not a number, NaN, infinite)."""
    try:
        number = float(text)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def swept_labels(values: list[str]) -> list[str]:
    """Display texts for one parameter's values: numbers rounded to the fewest decimals that keep every
    distinct value distinct (at least two significant digits); integers and words stay as written."""
    numbers = [finite_float(v) for v in values]
    if any(n is None for n in numbers) or all("." not in v and "e" not in v.lower() for v in values):
        return list(values)
    distinct = len(set(numbers))
    largest = max(abs(n) for n in numbers) or 1.0
    floor_decimals = max(0, MIN_SWEPT_SIGNIFICANT - 1 - math.floor(math.log10(largest)))
    for decimals in range(floor_decimals, 13):
        texts = [f"{n:.{decimals}f}" for n in numbers]
        if len(set(texts)) == distinct:
            break
    return [t.rstrip("0").rstrip(".") if "." in t else t for t in texts]


def label_map(values: list[str]) -> dict[str, str]:
    """value text -> display text, rounded over the set of values shown together."""
    unique = list(dict.fromkeys(values))
    return dict(zip(unique, swept_labels(unique)))


def _multirun(sweep_dir: Path) -> dict:
    """The `hydra` node of SWEEP_DIR/multirun.yaml ({} without one); read once per version of the file."""
    path = Path(sweep_dir) / "multirun.yaml"
    try:
        return _read_hydra_node(str(path.resolve()), path.stat().st_mtime_ns)
    except OSError:
        return {}


@functools.lru_cache(maxsize=8)
def _read_hydra_node(path: str, mtime_ns: int) -> dict:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the file holds Hydra's whole config
    try:
        return (yaml.load(Path(path).read_text(), Loader=loader) or {}).get("hydra") or {}
    except (yaml.YAMLError, AttributeError):
        return {}


def sweep_overrides(sweep_dir: Path) -> list[str]:
    """The sweep's command-line overrides (multirun.yaml), as typed."""
    return [str(o) for o in ((_multirun(sweep_dir).get("overrides") or {}).get("task") or [])]


def _is_experiment(override: str) -> bool:
    return override.lstrip("+").startswith("experiment=")


def sweep_name(sweep_dir: Path) -> str:
    """The experiment (`+experiment=NAME`), else 'sweep <folder name>'."""
    experiment = next((o.split("=", 1)[1] for o in sweep_overrides(sweep_dir) if _is_experiment(o)), None)
    return f"experiment {experiment}" if experiment else f"sweep {Path(sweep_dir).name}"


def sweep_title(sweep_dir: Path) -> str:
    """'<experiment or sweep>: <the other overrides>'."""
    shown = [o for o in sweep_overrides(sweep_dir) if not _is_experiment(o)]
    name = sweep_name(sweep_dir)
    return f"{name}: {' '.join(shown)}" if shown else name


def search_objective(sweep_dir: Path) -> tuple[str, str] | None:
    """(metric, 'maximize' | 'minimize') of an Optuna search sweep (its first objective), else None."""
    sweeper = _multirun(sweep_dir).get("sweeper") or {}
    objectives = sweeper.get("objective") or []
    if not objectives or not isinstance(objectives[0], dict) or "metric" not in objectives[0]:
        return None
    return str(objectives[0]["metric"]), str(objectives[0].get("direction", "maximize"))


def fixed_settings(record: dict, swept: list[str]) -> list[tuple[str, str]]:
    """What every image of the sweep shares (model, sampler, size, guidance, prompts), minus the swept keys."""
    config = record.get("config") or {}
    sampler = config.get("sampler") or {}
    settings = record.get("settings") or {}
    found = [
        ("model", (config.get("model") or {}).get("name")),
        ("sampler", record.get("sampler") or sampler.get("name")),
        ("sampler.steps", sampler.get("steps")),
        ("cfg", config.get("cfg")),
        ("sampler.polish_cfg", sampler.get("polish_cfg")),
        ("resolution", f"{settings.get('width')}x{settings.get('height')}" if settings.get("width") else None),
        ("prompts", (config.get("prompts") or {}).get("name")),
    ]
    hidden = set(swept) | (
        {"resolution"} if {"resolution.height", "resolution.width", "resolution"} & set(swept) else set()
    )
    return [(k, str(v)) for k, v in found if v is not None and k not in hidden]


def value_order(text: str) -> tuple:
    """Sort key for setting values as text: empty first, then numbers by value, then other text."""
    try:
        return (1, float(text), "")
    except ValueError:
        return (0 if text == "" else 2, 0.0, text)
