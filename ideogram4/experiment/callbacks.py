"""Hydra callbacks: the end-of-multirun comparison grid (and the sweep size for progress bars).

Configured in ``conf/config.yaml`` under ``hydra.callbacks``. ``on_multirun_end`` runs in the
launching process after every job has finished, whichever launcher ran them, and reads the job
folders from disk.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("ideogram4.experiment")


def count_sweep_jobs(config: DictConfig) -> int | None:
    """Number of jobs the basic sweeper will launch (product of the sweep sizes); None if unknown."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        texts = list(config.hydra.overrides.task)
        params = OmegaConf.select(config, "hydra.sweeper.params") or {}
        texts += [f"{k}={v}" for k, v in params.items()]
        parsed = OverridesParser.create().parse_overrides(texts)
        sizes: dict[str, int] = {}
        for o in parsed:
            key = o.get_key_element()
            sizes[key] = len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1
        n = 1
        for v in sizes.values():
            n *= v
        return n
    except Exception as e:  # glob sweeps etc.: progress shows "job N" without a total
        log.debug("could not count sweep jobs: %s", e)
        return None


class ComparisonGridCallback(Callback):
    def __init__(self, enabled: bool = True, cell_size: int | None = None) -> None:
        self.enabled = enabled
        self.cell_size = cell_size

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from .runner import SWEEP_JOBS_ENV

        n = count_sweep_jobs(config)
        if n:
            os.environ[SWEEP_JOBS_ENV] = str(n)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        try:
            self._grid(config)
        except Exception as e:  # the jobs' outputs are already safe on disk; never fail the sweep here
            log.warning("Comparison grid failed (%s: %s); the job folders are complete", type(e).__name__, e)

    def _grid(self, config: DictConfig) -> None:
        from .grid import make_sweep_grid
        from .runner import TABLE_COLUMNS, sweep_group, table_row
        from .tracker import make_tracker

        sweep_dir = Path(str(config.hydra.sweep.dir))
        cell = self.cell_size or int(OmegaConf.select(config, "output.grid_cell_size", default=256))
        made = make_sweep_grid(sweep_dir, cell=cell)
        if made is None:
            return
        path, grid = made
        tracker_cfg = OmegaConf.to_container(config.tracker, resolve=True) if "tracker" in config else {"name": "none"}
        tracker = make_tracker(
            tracker_cfg,
            name=f"{sweep_dir.name}/comparison",
            group=sweep_group(str(config.hydra.sweep.dir)),
            config={"sweep_dir": str(sweep_dir), "swept_keys": grid.swept_keys, "columns": grid.columns},
            out_dir=sweep_dir,
            job_type="comparison",
        )
        if not tracker.enabled:
            return
        try:
            from PIL import Image

            with Image.open(path) as im:
                tracker.log_image(
                    "comparison_grid",
                    im.convert("RGB"),
                    caption=f"rows: prompt x seed; columns: {', '.join(grid.swept_keys) or 'all'}",
                )
            rows = []
            for (_r, c), entry in sorted(grid.cells.items()):
                with Image.open(entry["path"]) as im:
                    img = im.convert("RGB")
                rows.append([grid.columns[c]] + table_row(entry["record"], img))
            tracker.log_table("sweep_table", ["column"] + TABLE_COLUMNS, rows, image_column="image")
        finally:
            tracker.finish()
