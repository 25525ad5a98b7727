"""Hydra callbacks: the output folder's check before Hydra writes to it, and the end-of-multirun
comparison grid, summary, HTML report and W&B sweep run.

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

from ideogram4.spec import GRID_CELL_SIZE

from ..config.schema import TrackerConf

log = logging.getLogger("ideogram4.experiment")


class OutputFolderCheck(Callback):
    """hydra.run.dir / hydra.sweep.dir can be made and written, checked on Hydra's composed config before
    Hydra makes the folder and opens its log there (which would fail with a raw OSError): one line, exit 4."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_output_folder("hydra.run.dir", str(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_output_folder("hydra.sweep.dir", str(config.hydra.sweep.dir))


def check_output_folder(key: str, folder: str) -> None:
    import tempfile

    from .exits import exit_one_line
    from .manifest import OutputWriteError

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # what Hydra does next: create a file there
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        where = f" ({e.filename})" if e.filename and str(e.filename) != folder else ""
        exit_one_line(
            OutputWriteError(f"{key}={folder} cannot be made or written: {why}{where}. Fix: pass a writable folder")
        )


class ComparisonGridCallback(Callback):
    def __init__(self, enabled: bool = True, cell_size: int | None = None) -> None:
        self.enabled = enabled
        self.cell_size = cell_size

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from .tracker import resolve_mode

        tracker = _guarded("W&B", lambda: tracker_conf(config))
        if tracker is not None and tracker.mode == "auto":
            resolve_mode(tracker)  # the one "no credentials" sentence of the sweep (its jobs stay quiet)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if self.enabled:
            from ..grid import collect_jobs

            # the jobs' outputs are already safe on disk: a failure here is a warning, never a lost sweep
            jobs = _guarded("Reading the job folders", lambda: collect_jobs(sweep_dir)) or []
            made = _guarded("Comparison grid", lambda: self._grid(config, sweep_dir, jobs))
            summary = _guarded("Sweep summary", lambda: self._summary(config, sweep_dir, jobs))
            if OmegaConf.select(config, "report.enabled", default=True):
                _guarded("Sweep report", lambda: self._report(config, sweep_dir, jobs))
            _guarded("W&B sweep run", lambda: log_sweep(tracker_conf(config), sweep_dir, made, summary))
        _guarded("W&B", lambda: _print_sync_command(sweep_dir))
        report_failed_jobs(sweep_dir)

    def _grid(self, config: DictConfig, sweep_dir: Path, jobs):
        from ..grid import make_sweep_grid

        cell = self.cell_size or int(OmegaConf.select(config, "output.grid_cell_size", default=GRID_CELL_SIZE))
        axes = {a: OmegaConf.select(config, f"grid.{a}", default=None) for a in ("x", "y", "z")}
        scores = list(OmegaConf.select(config, "grid.scores", default=None) or [])
        return make_sweep_grid(sweep_dir, cell=cell, jobs=jobs, scores=scores, **axes)

    def _report(self, config: DictConfig, sweep_dir: Path, jobs):
        from ..report.build import write_report

        axes = {a: OmegaConf.select(config, f"report.{a}", default=None) for a in ("x", "y")}
        return write_report(sweep_dir, jobs=jobs, **axes)

    def _summary(self, config: DictConfig, sweep_dir: Path, jobs):
        from ..summary.table import summarize

        return summarize(sweep_dir, baseline=OmegaConf.select(config, "summary_baseline", default=None), jobs=jobs)


def _guarded(what: str, fn):
    try:
        return fn()
    except Exception as e:
        log.warning("%s failed (%s: %s); the job folders are complete", what, type(e).__name__, e)
        return None


def _print_sync_command(sweep_dir: Path) -> None:
    from .tracker import sweep_sync_command

    command = sweep_sync_command(sweep_dir)
    if command:
        log.info("W&B: this sweep's runs are offline; upload them all with: %s", command)


def tracker_conf(config: DictConfig) -> TrackerConf | None:
    if "tracker" not in config:
        return None
    return TrackerConf(**OmegaConf.to_container(config.tracker, resolve=True))


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


def log_sweep(tracker_conf: TrackerConf | None, sweep_dir: Path, made, summary) -> None:
    """One sweep-level W&B run in the sweep's group: the grid, a table of every cell, the summary."""
    from .jobs import sweep_group
    from .tracker import make_tracker

    if tracker_conf is None or (made is None and summary is None):
        return
    config = {"sweep_dir": str(sweep_dir)}
    if made is not None:
        config.update(swept_keys=made[1].swept_keys, columns=made[1].columns)
    name, group = f"{sweep_dir.name}/comparison", sweep_group(str(sweep_dir))
    tracker = make_tracker(
        tracker_conf, name=name, group=group, config=config, out_dir=sweep_dir, job_type="comparison", in_sweep=True
    )
    if not tracker.enabled:
        return
    try:
        if made is not None:
            _log_grid(tracker, *made)
        if summary is not None:
            from ..summary.table import log_summary

            log_summary(tracker, summary)
    finally:
        tracker.finish()


def _log_grid(tracker, paths: list[Path], grid) -> None:
    from ideogram4.image_files import read_image

    from .records import TABLE_COLUMNS, ImageRecord

    for path in paths:
        tracker.log_image("comparison_grid", read_image(path), caption=path.stem)
    records = [entry["record"] for entry in grid.cells.values()]
    metric_keys = sorted({k for r in records for k in r.get("metrics") or {}})
    rows = []
    for (_, c), entry in sorted(grid.cells.items()):
        row = ImageRecord.from_dict(entry["record"]).table_row(read_image(entry["path"]), metric_keys)
        rows.append([grid.columns[c]] + row)
    tracker.log_table("sweep_table", ["column"] + TABLE_COLUMNS + metric_keys, rows, image_column="image")
