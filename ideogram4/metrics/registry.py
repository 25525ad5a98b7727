"""The metric registry: the modules named in METRIC_MODULES (a new metric is added there).

A metric module defines
    NAME, VERSION   the name users select; VERSION changes whenever its values change meaning
    KEYS            value name -> its direction: "higher" or "lower" is better, or "neither" (spec.METRIC_DIRECTIONS)
    PACKAGES        import name -> pip requirement, checked before anything is scored
    EXTRA           optional: the project's install extra that brings PACKAGES (none: the base install)
    WEIGHTS         where its model weights come from, in words
    OPTIONS         option name -> default; given options must use these names and types
    score_detailed(image, facts: CaptionFacts, options: dict) -> MetricResult
    check(options)  optional: cheap readiness check beyond the packages (weights present, ...)
    READS_CAPTION   optional, default True; False: scored without parsing the caption (a bad one is no error)
    READS_EDIT      optional, default False; True: score_detailed(image, facts, options, edit) also gets the
                    image's masks.EditRegion (the input and the edited pixels), None for an image made
                    without a mask (its values are then None)
and nothing heavy at import time: engines load on first use, once per process.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ideogram4.rules import is_int, is_real
from ideogram4.spec import METRIC_DIRECTIONS

from .caption import caption_facts


class MetricError(ValueError):
    """A metric cannot run as asked (unknown name or option, missing package or weights); says the fix."""


@dataclass
class MetricResult:
    values: dict[str, float | None]  # flat, JSON-ready; None where the caption has nothing to score
    details: dict[str, Any] = field(default_factory=dict)  # per element readings/distances, JSON-ready


@dataclass(frozen=True)
class Metric:
    module: ModuleType

    @property
    def name(self) -> str:
        return self.module.NAME

    @property
    def version(self) -> str:
        return self.module.VERSION

    @property
    def keys(self) -> dict[str, str | None]:
        return dict(self.module.KEYS)

    @property
    def summary(self) -> str:
        """What it measures: the first line of the module's docstring."""
        return (self.module.__doc__ or "").strip().splitlines()[0]

    @property
    def extra(self) -> str | None:
        return getattr(self.module, "EXTRA", None)

    @property
    def reads_caption(self) -> bool:
        return getattr(self.module, "READS_CAPTION", True)

    @property
    def reads_edit(self) -> bool:
        return getattr(self.module, "READS_EDIT", False)

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self.module.OPTIONS)

    def resolve_options(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated with `options`; unknown names and wrong types raise MetricError."""
        resolved = self.defaults
        for key, value in (options or {}).items():
            if key not in resolved:
                allowed = ", ".join(resolved) or "none"
                raise MetricError(f"metric {self.name!r} has no option {key!r}; its options: {allowed}")
            resolved[key] = _typed(self.name, key, value, resolved[key])
        return resolved

    def check(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Options valid, packages importable, weights present: cheap, loads no engine."""
        resolved = self.resolve_options(options)
        for module_name, requirement in self.module.PACKAGES.items():
            if importlib.util.find_spec(module_name) is None:
                how = f"pip install -e '.[{self.extra}]' (or pip install '{requirement}')" if self.extra else None
                raise MetricError(
                    f"metric {self.name!r} needs the package {module_name!r}: {how or f'pip install {requirement!r}'}"
                )
        if hasattr(self.module, "check"):
            self.module.check(resolved)
        return resolved

    def score_detailed(self, image, caption, options: Mapping[str, Any] | None = None, edit=None) -> MetricResult:
        facts = caption_facts(caption if self.reads_caption else None)
        args = (as_rgb8(image), facts, self.resolve_options(options))
        result = self.module.score_detailed(*args, edit) if self.reads_edit else self.module.score_detailed(*args)
        missing = set(self.module.KEYS) - set(result.values)
        assert not missing, f"metric {self.name} returned no value for {sorted(missing)}"
        return result

    def score(self, image, caption, options: Mapping[str, Any] | None = None, edit=None) -> dict[str, float | None]:
        return self.score_detailed(image, caption, options, edit).values


def as_rgb8(image):
    """The image as 8-bit RGB on its real values: a 16-bit greyscale PNG (modes I;16*, I) is scaled from
    0..65535 to 0..255 (Pillow's own conversion clips it at 255); palette and alpha images via their colours."""
    if image.mode.startswith("I;16") or image.mode == "I":
        import numpy as np
        from PIL import Image

        values = np.asarray(image, dtype=np.float64)  # (H, W) 0..65535
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    return image.convert("RGB")


def _typed(metric: str, key: str, value: Any, default: Any) -> Any:
    if default is None:  # free-form option (e.g. a path that may be unset)
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = is_int(value)
    elif isinstance(default, float):
        ok = is_real(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise MetricError(
            f"metric {metric!r} option {key!r}: {value!r} must be a {type(default).__name__} (default {default!r})"
        )
    return value


# The metric modules of this package, by module name (each imports nothing heavy at import time).
METRIC_MODULES = ("clip_score", "edit", "edit_caption", "image_stats", "ocr", "palette")


@functools.cache
def _registry() -> dict[str, Metric]:
    found: dict[str, Metric] = {}
    owner_of_key: dict[str, str] = {}
    for module_name in METRIC_MODULES:
        module = importlib.import_module(f"{__package__}.{module_name}")
        assert module.NAME not in found, f"two metric modules are named {module.NAME!r}"
        for key in module.KEYS:
            assert key not in owner_of_key, f"value {key!r} is produced by {owner_of_key[key]} and {module.NAME}"
            owner_of_key[key] = module.NAME
            assert module.KEYS[key] in METRIC_DIRECTIONS, f"{module.NAME}: {key} direction not in {METRIC_DIRECTIONS}"
        found[module.NAME] = Metric(module)
    return dict(sorted(found.items()))


def metric_names() -> tuple[str, ...]:
    return tuple(_registry())


def get_metric(name: str) -> Metric:
    try:
        return _registry()[name]
    except KeyError:
        raise MetricError(f"unknown metric {name!r}; known metrics: {', '.join(metric_names())}") from None


def check_metrics(names: Iterable[str], options: Mapping[str, Mapping[str, Any]] | None = None) -> list[Metric]:
    """The named metrics, each checked with its options ({metric: {option: value}}), before any image is made."""
    names = list(dict.fromkeys(names))
    unknown = [n for n in list(names) + list(options or {}) if n not in _registry()]
    if unknown:
        raise MetricError(
            f"unknown metric(s) {', '.join(map(repr, dict.fromkeys(unknown)))}; known metrics: {', '.join(metric_names())}"
        )
    unused = [n for n in options or {} if n not in names]
    if unused:
        raise MetricError(
            f"options for {', '.join(map(repr, unused))}, which is not among the metrics to compute "
            f"({', '.join(names) or 'none'}): add it to the metrics or drop its options"
        )
    metrics = [get_metric(n) for n in names]
    for metric in metrics:
        metric.check((options or {}).get(metric.name))
    return metrics


def parse_options(pairs: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`METRIC.NAME=VALUE` pairs -> {metric: {name: value}}; VALUE is JSON when it parses (30, true,
    [1,2]), else the bare string (a model id, a path). The runner's `+metric_options.METRIC.NAME=VALUE`
    is the same form under its config key."""
    options: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        metric, dot, key = name.partition(".")
        if not (sep and dot and metric and key):
            raise MetricError(f"--option {pair!r} must look like METRIC.NAME=VALUE (e.g. ocr.margin=30)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options.setdefault(metric, {})[key] = value
    return options


def metric_lines() -> list[str]:
    """One line per metric: name, what it measures, its values with their better direction, the extra it needs."""
    lines = []
    for m in _registry().values():
        values = ", ".join(f"{k} ({d})" for k, d in m.keys.items())
        needs = f"needs [{m.extra}]" if m.extra else "base install"
        options = ", ".join(f"{k}={v}" for k, v in m.defaults.items()) or "none"
        lines.append(f"  {m.name:<12} {m.summary} Values: {values}. Options: {options}; {needs}.")
    return lines


def value_directions() -> dict[str, str]:
    """Every metric value name -> "higher" / "lower" / "neither", in registry order (metric name, then
    the metric's KEYS order): the order summary columns follow."""
    return {key: d for metric in _registry().values() for key, d in metric.module.KEYS.items()}


def producing_metric(key: str) -> str:
    """The name of the metric (as in metrics=[...]) that produces the value ``key``."""
    for metric in _registry().values():
        if key in metric.module.KEYS:
            return metric.name
    better_direction(key)  # raises the error naming the known values
    raise AssertionError("unreachable")


def better_direction(key: str) -> str:
    """'higher', 'lower' or 'neither' for a metric value name (e.g. an optimiser's direction)."""
    try:
        return value_directions()[key]
    except KeyError:
        known = ", ".join(value_directions())
        raise MetricError(f"no metric produces a value named {key!r}; the values metrics produce: {known}") from None
