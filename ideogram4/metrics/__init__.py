"""Image metrics for Ideogram 4 outputs: typography (OCR inside each text element's bbox), palette
distance (CIEDE2000), CLIP score, image statistics. One module per metric, found by the registry.

    from ideogram4.metrics import Scorer, check_metrics, get_metric, score_image
    metrics = check_metrics(["ocr", "palette"], {"ocr": {"margin": 30}})   # before any image is made
    scored = score_image(metrics, image, caption)                           # .values .details .errors
    get_metric("ocr").score(image, caption)                                 # {"ocr_word_accuracy": ...}

`python -m ideogram4.metrics IMAGE... --caption CAPTION.json --metrics ocr,palette` scores from a shell.
"""

from .caption import CaptionError, CaptionFacts, caption_facts
from .registry import (
    Metric,
    MetricError,
    MetricResult,
    as_rgb8,
    better_direction,
    check_metrics,
    get_metric,
    metric_names,
    producing_metric,
    value_directions,
)
from .scorer import Scored, Scorer, score_image

__all__ = [
    "CaptionError",
    "CaptionFacts",
    "Metric",
    "MetricError",
    "MetricResult",
    "Scored",
    "Scorer",
    "as_rgb8",
    "better_direction",
    "caption_facts",
    "check_metrics",
    "get_metric",
    "metric_names",
    "producing_metric",
    "score_image",
    "value_directions",
]
