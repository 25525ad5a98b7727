"""Hydra callbacks: the end-of-multirun comparison grid.

Configured in ``conf/config.yaml`` under ``hydra.callbacks``. ``on_multirun_end`` runs in the
launching process after every job has finished, whichever launcher ran them, and reads the job
folders from disk.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .config import TrackerConf

log = logging.getLogger("ideogram4.experiment")


class ComparisonGridCallback(Callback):
    def __init__(self, enabled: bool = True, cell_size: int | None = None) -> None:
        self.enabled = enabled
        self.cell_size = cell_size

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.enabled:
            try:
                self._grid(config)
            except Exception as e:  # the jobs' outputs are already safe on disk; never fail the sweep here
                log.warning("Comparison grid failed (%s: %s); the job folders are complete", type(e).__name__, e)
        report_failed_jobs(Path(str(config.hydra.sweep.dir)))

    def _grid(self, config: DictConfig) -> None:
        from .grid import make_sweep_grid

        sweep_dir = Path(str(config.hydra.sweep.dir))
        cell = self.cell_size or int(OmegaConf.select(config, "output.grid_cell_size", default=256))
        made = make_sweep_grid(sweep_dir, cell=cell)
        if made is not None:
            tracker = (
                TrackerConf(**OmegaConf.to_container(config.tracker, resolve=True)) if "tracker" in config else None
            )
            log_grid(tracker, sweep_dir, *made)


def report_failed_jobs(sweep_dir: Path) -> None:
    """After the grid: name the jobs that failed (one line each) and end the sweep non-zero."""
    import sys

    from .entry import failed_jobs

    failed = failed_jobs(sweep_dir)
    if not failed:
        return
    log.error("%d job(s) of the sweep failed (the grid shows the jobs that finished):", len(failed))
    for f in failed:
        log.error("  job %s (%s): %s", f["job"], " ".join(f["overrides"]), f["error"].splitlines()[0])
    sys.exit(max(f["exit_code"] for f in failed))


def log_grid(tracker_conf: TrackerConf | None, sweep_dir: Path, path: Path, grid) -> None:
    """The grid image and a table of every cell, in a sweep-level W&B run of the sweep's group."""
    from PIL import Image

    from .jobs import sweep_group
    from .records import TABLE_COLUMNS, ImageRecord
    from .tracker import make_tracker

    if tracker_conf is None:
        return
    tracker = make_tracker(
        tracker_conf,
        name=f"{sweep_dir.name}/comparison",
        group=sweep_group(str(sweep_dir)),
        config={"sweep_dir": str(sweep_dir), "swept_keys": grid.swept_keys, "columns": grid.columns},
        out_dir=sweep_dir,
        job_type="comparison",
    )
    if not tracker.enabled:
        return
    try:
        with Image.open(path) as im:
            caption = f"rows: prompt x seed; columns: {', '.join(grid.swept_keys) or 'all'}"
            tracker.log_image("comparison_grid", im.convert("RGB"), caption=caption)
        rows = []
        for (_, c), entry in sorted(grid.cells.items()):
            with Image.open(entry["path"]) as im:
                rows.append([grid.columns[c]] + ImageRecord.from_dict(entry["record"]).table_row(im.convert("RGB")))
        tracker.log_table("sweep_table", ["column"] + TABLE_COLUMNS, rows, image_column="image")
    finally:
        tracker.finish()
