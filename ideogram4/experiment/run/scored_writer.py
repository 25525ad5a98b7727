"""Per-image metrics beside sampling: each image is scored by a background worker while the next
one samples; its PNG and manifest line are written once its scores are in, so both carry them.

At most `max_pending` images wait for scores (memory stays bounded; the sampler never runs far ahead
of a slow metric). The job waits for every score before it ends, on an error or Ctrl-C too: an image
that was made is always written.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from .records import ImageRecord

log = logging.getLogger("ideogram4.experiment")

Write = Callable[[ImageRecord, object], None]


class ScoredWriter:
    def __init__(self, metrics: list[str], options: dict, write: Write, max_pending: int = 2):
        from ideogram4.metrics import Scorer

        self.scorer = Scorer(metrics, options) if metrics else None
        self.write = write
        self.max_pending = max_pending
        self.pending: deque = deque()  # (future, record, image), in sampling order

    def add(self, record: ImageRecord, image, edit=None) -> None:
        """`edit`: the image's masks.EditRegion for the edit metrics (None: not a masked edit)."""
        if self.scorer is None:
            self.write(record, image)
            return
        self.pending.append((self.scorer.submit(record.image, image, record.caption, edit), record, image))
        while self.pending and (self.pending[0][0].done() or len(self.pending) > self.max_pending):
            self._write_oldest()

    def _write_oldest(self) -> None:
        future, record, image = self.pending.popleft()
        scored = future.result()
        for name, line in scored.error_lines().items():
            log.warning("metric %s failed on %s: %s", name, record.image, line)
        self.write(record.with_scores(scored), image)

    def close(self) -> None:
        try:
            while self.pending:
                self._write_oldest()
        finally:
            if self.scorer is not None:
                self.scorer.close()


def score_summary(records: list[dict]) -> dict[str, float]:
    """Mean of every metric over a job's records (W&B run summary: `<metric>_mean`)."""
    sums: dict[str, list[float]] = {}
    for r in records:
        for k, v in (r.get("metrics") or {}).items():
            if isinstance(v, (int, float)):
                sums.setdefault(k, []).append(float(v))
    return {f"{k}_mean": sum(v) / len(v) for k, v in sums.items()}
