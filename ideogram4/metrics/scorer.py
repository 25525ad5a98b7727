"""Score images with several metrics, in the caller's thread or beside it (a background worker).

The worker is one thread by default: OCR and CLIP spend nearly all their time inside onnxruntime /
torch kernels, which release the GIL (profiled: 97 % of an OCR call is onnxruntime's run), so scoring
overlaps with sampling without pickling images. `process=True` scores in one spawned process instead
(its own engines, images pickled), for a caller whose own thread must never wait for the GIL.
A failing metric fails only its own values for that image: the error is kept on the item (and
re-raised by `raise_errors`), never dropped.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .caption import caption_facts
from .registry import Metric, as_rgb8, check_metrics, get_metric


@dataclass
class Scored:
    key: Any
    values: dict[str, float | None] = field(default_factory=dict)  # every metric's values, flat
    details: dict[str, dict] = field(default_factory=dict)  # metric name -> its per-element details
    versions: dict[str, str] = field(default_factory=dict)  # metric name -> VERSION
    seconds: dict[str, float] = field(default_factory=dict)  # metric name -> wall time
    errors: dict[str, BaseException] = field(default_factory=dict)  # metric name -> what it raised

    def raise_errors(self) -> None:
        for name, error in self.errors.items():
            raise RuntimeError(f"metric {name!r} failed on {self.key!r}: {type(error).__name__}: {error}") from error

    def error_lines(self) -> dict[str, str]:
        return {name: f"{type(e).__name__}: {e}" for name, e in self.errors.items()}


def score_image(
    metrics: Iterable[Metric],
    image,
    caption,
    options: Mapping[str, Mapping] | None = None,
    key: Any = None,
    edit=None,
) -> Scored:
    """All metrics on one image; a caption problem or a metric's failure is recorded per metric.

    `edit` (a masks.EditRegion) is what the edit metrics compare against: the input and the edited pixels."""
    scored = Scored(key=key)
    rgb = as_rgb8(image)
    try:
        facts, caption_error = caption_facts(caption), None
    except ValueError as e:
        facts, caption_error = None, e
    for metric in metrics:
        scored.versions[metric.name] = metric.version
        start = time.perf_counter()
        try:
            if caption_error is not None and metric.reads_caption:
                raise caption_error
            result = metric.score_detailed(rgb, facts, (options or {}).get(metric.name), edit)
            scored.values.update(result.values)
            scored.details[metric.name] = result.details
        except Exception as e:
            scored.values.update(dict.fromkeys(metric.keys))
            scored.errors[metric.name] = e
        scored.seconds[metric.name] = round(time.perf_counter() - start, 4)
    return scored


def _score_by_name(names: list[str], image, caption, options: Mapping[str, Mapping], key: Any, edit=None) -> Scored:
    """score_image by metric names: what a worker process can be sent (modules do not pickle)."""
    return score_image([get_metric(n) for n in names], image, caption, options, key, edit)


class Scorer:
    """Background scoring: `submit` returns at once; `results` waits for everything submitted.

    with Scorer(["ocr", "palette"], {"ocr": {"margin": 30}}) as scorer:   # checks now, loads lazily
        scorer.submit("p0__seed0", image, caption)                      # per image, while sampling
        ...
        for key, scored in scorer.results().items(): ...                # submit order
    """

    def __init__(self, metrics: Iterable[str], options: Mapping[str, Mapping] | None = None, process: bool = False):
        self.metrics = check_metrics(metrics, options)
        self.options = {m.name: m.resolve_options((options or {}).get(m.name)) for m in self.metrics}
        self.process = process
        if process:  # spawn, not fork: the caller may hold CUDA state and threads
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        else:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ideogram4-metrics")
        self._futures: dict[Any, Future] = {}

    def submit(self, key: Any, image, caption, edit=None) -> Future:
        """Queue one image (copied, so the caller may reuse it); the Future resolves to its Scored."""
        if key in self._futures:
            raise ValueError(f"Scorer.submit: key {key!r} was already submitted")
        names = [m.name for m in self.metrics]
        self._futures[key] = self._pool.submit(_score_by_name, names, image.copy(), caption, self.options, key, edit)
        return self._futures[key]

    @property
    def pending(self) -> int:
        return sum(not f.done() for f in self._futures.values())

    def results(self) -> dict[Any, Scored]:
        """Every submitted image's scores, in submit order, waiting for those still running."""
        return {key: future.result() for key, future in self._futures.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
