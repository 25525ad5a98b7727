"""Score the images of an existing run or sweep (e.g. with a metric added later).

    python -m ideogram4.experiment.score outputs/sweeps/NAME --metrics ocr,palette
    python -m ideogram4.experiment.score outputs/runs/DATE/TIME --metrics clip_score --option clip_score.model=/models/clip

Existing manifest lines are never rewritten: each newly scored image gets one more line (its record
with the new values merged in, `rescored_at` set); the last line per image is the current one. Images
that already have every requested metric at the current metric version are left alone (`--force`
scores them again). A sweep folder gets its grid and summary rebuilt (with the sweep's own baseline) and
its sweep-level W&B tables logged again.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .config.edit_plan import recorded_region
from .run.exits import EXIT_OUTPUT
from .run.lock import FolderInUse, folder_lock
from .run.manifest import MANIFEST, append_manifest, latest_records, read_manifest
from .run.records import ImageRecord, now_utc

log = logging.getLogger("ideogram4.experiment")


def job_folders(folder: Path) -> list[Path]:
    """`folder` itself if it is a job folder, else its job subfolders."""
    if (folder / MANIFEST).is_file():
        return [folder]
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / MANIFEST).is_file())


def needs_scores(record: dict, versions: dict[str, str]) -> bool:
    return any((record.get("metric_versions") or {}).get(m) != v for m, v in versions.items())


def rescored(rec: dict, scored) -> dict:
    """The record with the new values merged over the old ones (other metrics kept)."""
    record = ImageRecord.from_dict(rec)
    old = dict(record.metrics), dict(record.metric_versions), dict(record.metric_details)
    record.with_scores(scored)
    record.metrics = {**old[0], **record.metrics}
    record.metric_versions = {**old[1], **record.metric_versions}
    record.metric_details = {**old[2], **record.metric_details}
    line = record.to_dict()
    line["rescored_at"] = now_utc()
    return line


def score_folder(
    folder: Path, metric_names: list[str], options: dict, force: bool = False, edit_files: Sequence[Path] = ()
) -> int:
    """Score one job folder's images; returns how many were (re)scored. Edit metrics read an image's
    recorded input and mask only inside the `edit_files` folders (the manifest's paths are data)."""
    ahead = 4  # images in memory at once, scored in order
    from tqdm.auto import tqdm

    from ideogram4.image_files import ImageFileError, read_image
    from ideogram4.metrics import Scorer, as_rgb8

    with folder_lock(folder), Scorer(metric_names, options) as scorer:
        versions = {m.name: m.version for m in scorer.metrics}
        records = list(latest_records(read_manifest(folder)).values())
        if missing := [r["image"] for r in records if not (folder / r["image"]).is_file()]:
            log.warning("Not scored, missing on disk in %s: %s", folder, ", ".join(missing))
            records = [r for r in records if r["image"] not in missing]
        todo = [r for r in records if force or needs_scores(r, versions)]
        futures = []  # at most `ahead` images in memory, scored in order
        for rec in tqdm(todo, desc=f"scoring {folder.name}", unit="image", disable=not todo):
            edit = recorded_region(rec, edit_files) if any(m.reads_edit for m in scorer.metrics) else None
            try:
                image = read_image(folder / rec["image"], mode=None)
            except ImageFileError as e:  # named; the other images are still scored
                log.warning("Not scored: %s", e)
            else:
                futures.append((rec, scorer.submit(rec["image"], as_rgb8(image), rec.get("caption"), edit)))
            while futures and (len(futures) > ahead or rec is todo[-1]):
                done, future = futures.pop(0)
                append_manifest(folder, rescored(done, future.result()))
    return len(todo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ideogram4.experiment.score", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a run/job folder (with manifest.jsonl) or a sweep folder")
    parser.add_argument("--metrics", required=True, help="comma-separated metric names, e.g. ocr,palette")
    parser.add_argument(
        "--option", action="append", default=[], metavar="METRIC.NAME=VALUE", help="a metric option (repeatable)"
    )
    parser.add_argument("--force", action="store_true", help="score images that already have these metrics")
    parser.add_argument(
        "--edit-files",
        action="append",
        default=[],
        metavar="FOLDER",
        help="edit metrics: a folder holding the input images and masks the edits used (repeatable); "
        "the paths a manifest records are read only inside these",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = Path(args.folder)
    if not folder.is_dir() or not job_folders(folder):
        parser.error(f"{args.folder!r} holds no manifest.jsonl (nor do its subfolders): give a run or sweep folder")
    try:
        from ideogram4.metrics import MetricError, check_metrics
        from ideogram4.metrics.registry import parse_options

        options = parse_options(args.option)
        check_metrics(args.metrics.split(","), options)
    except (ValueError, MetricError) as e:  # MetricError is a ValueError
        parser.error(f"--metrics/--option: {e}")
    try:
        edit_files = [Path(p) for p in args.edit_files]
        total = sum(
            score_folder(f, args.metrics.split(","), options, args.force, edit_files) for f in job_folders(folder)
        )
    except (FolderInUse, OSError) as e:  # a folder another process writes, or one this user cannot write
        print(f"Output: {e}", file=sys.stderr)
        return EXIT_OUTPUT
    log.info("Scored %d image(s) in %s", total, folder)
    if job_folders(folder) != [folder]:
        refresh_sweep(folder)
    return 0


def refresh_sweep(sweep_dir: Path) -> None:
    """A rescored sweep: its grid, summary and report rebuilt (the sweep's own baseline kept) and, when the sweep
    logged to W&B, its sweep-level tables logged again with the new values."""
    from omegaconf import OmegaConf

    from .grid import collect_jobs, make_sweep_grid
    from .report import REPORT_DIR
    from .report.build import write_report
    from .run.callbacks import log_sweep, tracker_conf
    from .summary.table import summarize

    jobs = collect_jobs(sweep_dir)  # once, so its warnings are said once
    made, summary = make_sweep_grid(sweep_dir, jobs=jobs), summarize(sweep_dir, jobs=jobs)
    if (sweep_dir / REPORT_DIR).is_dir():
        write_report(sweep_dir, jobs=jobs)  # the report shows the new values too
    multirun = sweep_dir / "multirun.yaml"
    if multirun.is_file():
        log_sweep(tracker_conf(OmegaConf.load(multirun)), sweep_dir, made, summary)


if __name__ == "__main__":
    sys.exit(main())
