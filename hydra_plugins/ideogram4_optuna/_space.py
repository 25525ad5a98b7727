"""Search space: Hydra's sweep syntax -> Optuna distributions, and a sampled value -> override text.

interval(2, 9)               float in [2, 9]              (FloatDistribution)
int(interval(1, 8))          int in [1, 8]                (IntDistribution)
tag(log, interval(1e-3, 1))  log-uniform                  (log=True)
range(12, 49, 4)             12, 16, ..., 48 (ordered)    (IntDistribution with step; floats too)
choice(a, b) or a,b          unordered choices            (CategoricalDistribution)
anything else                a fixed override for every trial
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.types import Override
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ideogram4.experiment.config.problems import ConfigError, problem

_SCALARS = (type(None), bool, int, float, str)


@dataclass
class Param:
    key: str  # the override key as written (e.g. "sampler.polish_cfg", "+extra")
    distribution: BaseDistribution
    choice_texts: list[str] | None = None  # categorical: the Hydra text of each choice, same order

    def override(self, value: Any) -> str:
        """The override a job gets for a value Optuna suggested."""
        if self.choice_texts is not None:
            return f"{self.key}={self.choice_texts[self.distribution.choices.index(value)]}"
        return f"{self.key}={value!r}" if isinstance(value, float) else f"{self.key}={value}"

    def first(self) -> Any:
        """A value inside the space (used to check that the overrides compose before any trial)."""
        d = self.distribution
        return d.choices[0] if isinstance(d, CategoricalDistribution) else d.low


def _space_error(o: Override, what: str, fix: str) -> ConfigError:
    """The sweep as written (key and text), what is wrong with it and the fix, as the runner's one line."""
    return ConfigError([problem(o.get_key_element(), o.input_line.split("=", 1)[1], what, fix)])


def _interval(o: Override) -> BaseDistribution:
    value = o.value()
    log_scale = "log" in value.tags
    if value.start > value.end:
        fix = f"give the low end first, e.g. interval({value.end}, {value.start})"
        raise _space_error(o, "is empty: its start is above its end", fix)
    if log_scale and value.start <= 0:
        low = 1 if isinstance(value.end, int) else f"{value.end / 1000:g}"
        fix = f"start above 0, e.g. tag(log, interval({low}, {value.end}))" if value.end > 0 else "drop tag(log, ...)"
        raise _space_error(o, "is a log scale reaching 0 or below", fix)
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(value.start, value.end, log=log_scale)
    return FloatDistribution(float(value.start), float(value.end), log=log_scale)


def _distribution(o: Override) -> tuple[BaseDistribution, list[str] | None]:
    value = o.value()
    if o.is_interval_sweep():
        return _interval(o), None
    if o.is_range_sweep():
        values = list(o.sweep_iterator())
        if not values:
            raise _space_error(o, "is empty", "give start < stop for a positive step, e.g. range(1, 5)")
        step = abs(value.step)
        if all(isinstance(v, int) for v in values):
            return IntDistribution(min(values), max(values), step=int(step)), None
        return FloatDistribution(float(min(values)), float(max(values)), step=float(step)), None
    if o.is_choice_sweep():
        texts = list(o.sweep_string_iterator())
        if not texts:
            raise _space_error(o, "has no choices", "list at least one, e.g. choice(a, b)")
        # Optuna stores scalars; a list or dict choice is stored as its Hydra text
        choices = [v if isinstance(v, _SCALARS) else t for v, t in zip(o.sweep_iterator(), texts)]
        return CategoricalDistribution(choices), texts
    raise _space_error(o, "is not a search space", "use interval(), range() or choice()")


def parse_space(overrides: list[Override]) -> tuple[list[Param], list[str]]:
    """(searched params, fixed overrides); a key given twice keeps its last form (command line wins)."""
    params: dict[str, Param] = {}
    fixed: dict[str, str] = {}
    for o in overrides:
        key = o.get_key_element()
        params.pop(key, None)
        fixed.pop(key, None)
        if o.is_sweep_override():
            params[key] = Param(key, *_distribution(o))
        else:
            fixed[key] = f"{key}={o.get_value_element_as_str()}"
    return list(params.values()), list(fixed.values())
