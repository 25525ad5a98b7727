"""Comparison grids across a sweep, built from the job folders on disk.

Rows are prompt x seed, columns are the swept values (every override that differs between jobs,
except the seed, which belongs to the rows). Only manifests and PNGs are read, so it works the same
whether the jobs ran in this process, in local subprocesses (submitit_local) or on SLURM nodes.
"""

from __future__ import annotations

import json
import logging
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from ideogram4.spec import GRID_CELL_SIZE

from .run import outputs as out_mod

log = logging.getLogger("ideogram4.experiment")

GRID_PNG = "comparison_grid.png"
GRID_JSON = "comparison_grid.json"
ROW_KEYS = ("seed",)


@dataclass
class JobFolder:
    path: Path
    num: int
    overrides: dict[str, str]
    records: list[dict]  # latest record per image


@dataclass
class Grid:
    rows: list[tuple[str, int]]
    columns: list[str]
    swept_keys: list[str]
    cells: dict[tuple[int, int], dict] = field(default_factory=dict)  # (row, col) -> record + path

    def to_json(self) -> dict:
        return {
            "rows": [{"prompt_id": p, "seed": s} for p, s in self.rows],
            "columns": self.columns,
            "swept_keys": self.swept_keys,
            "n_cells": len(self.rows) * len(self.columns),
            "n_filled": len(self.cells),
            "cells": [
                {
                    "row": r,
                    "col": c,
                    "image": str(v["path"]),
                    "settings_hash": v["record"].get("settings_hash"),
                    "near_uniform": (v["record"].get("flags") or {}).get("near_uniform"),
                }
                for (r, c), v in sorted(self.cells.items())
            ],
        }


def _override_key(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value


def _read_overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if path.exists():
        import yaml

        return [str(x) for x in yaml.safe_load(path.read_text()) or []]
    recs = out_mod.read_manifest(job_dir)  # fall back to what the job wrote into its manifest
    return list((recs[-1].get("job") or {}).get("overrides", [])) if recs else []


def sweep_value_lists(sweep_dir: Path) -> dict[str, list[str]]:
    """The current sweep's swept keys and their value lists, from SWEEP_DIR/multirun.yaml (rewritten by
    every launch); {} when unknown (no file, a search whose values Optuna picks, a glob sweep)."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return {}
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        texts = OmegaConf.to_container(OmegaConf.load(path).hydra.overrides, resolve=False)["task"]
        parsed = OverridesParser.create().parse_overrides(texts)
        return {
            o.get_key_element().lstrip("+~"): list(o.sweep_string_iterator()) for o in parsed if o.is_sweep_override()
        }
    except Exception as e:  # a sweep form we cannot enumerate: fall back to the values found on disk
        log.debug("could not read the sweep's value lists from %s: %s", path, e)
        return {}


def _same_text(a: str, b: str) -> bool:
    try:
        return a == b or float(a) == float(b)
    except ValueError:
        return False


def _ran_with(record: dict, folder_overrides: list[str]) -> dict[str, str]:
    """The overrides an image was made with: its own manifest line's (Hydra rewrites .hydra/overrides.yaml
    on every re-run, e.g. when tracker=none is added), else the folder's."""
    made = (record.get("job") or {}).get("overrides")
    return dict(_override_key(x) for x in (made if made is not None else folder_overrides))


def _in_sweep(ran: dict[str, str], lists: dict[str, list[str]]) -> bool:
    return all(any(_same_text(ran.get(k, ""), v) for v in values) for k, values in lists.items())


def collect_jobs(sweep_dir: Path) -> list[JobFolder]:
    """The job folders of the current sweep, each with the images made with the current sweep's values.
    Images of other value lists in a reused sweep folder are left out, counted in one warning."""
    lists = sweep_value_lists(Path(sweep_dir))
    jobs, stale = [], {}
    for child in Path(sweep_dir).iterdir():
        if not child.is_dir() or not (child / out_mod.MANIFEST).exists():
            continue
        try:
            num = int(child.name)
        except ValueError:
            num = 10**9
        folder = _read_overrides(child)
        kept, ran = [], None
        for rec in out_mod.latest_records(out_mod.read_manifest(child)).values():
            values = _ran_with(rec, folder)
            if _in_sweep(values, lists):
                kept.append(rec)
                ran = values
            else:
                label = ", ".join(f"{k}={values.get(k, '')}" for k in lists)
                stale[label] = stale.get(label, 0) + 1
        if kept:
            jobs.append(JobFolder(path=child, num=num, overrides=ran, records=kept))
    if stale:
        log.warning(
            "Left out %d image(s) of earlier sweeps in this folder with other values (%s); this sweep: %s",
            sum(stale.values()),
            "; ".join(f"{label}: {n}" for label, n in stale.items()),
            " ".join(f"{k}={','.join(v)}" for k, v in lists.items()),
        )
    jobs.sort(key=lambda j: (j.num, j.path.name))
    return jobs


def swept_keys(jobs: list[JobFolder]) -> list[str]:
    """Keys whose value differs between jobs (the seed belongs to the rows/units, not the settings);
    limited to the current sweep's swept keys when multirun.yaml names them."""
    keys = list(dict.fromkeys(k for j in jobs for k in j.overrides))
    current = sweep_value_lists(jobs[0].path.parent) if jobs else {}
    if current:
        keys = [k for k in keys if k in current]
    return [k for k in keys if k not in ROW_KEYS and len({j.overrides.get(k) for j in jobs}) > 1]


def build_grid(jobs: list[JobFolder]) -> Grid:
    swept = swept_keys(jobs)
    columns: list[str] = []
    rows: list[tuple[str, int]] = []
    cells: dict[tuple[int, int], dict] = {}
    for j in jobs:
        col = ", ".join(f"{k}={j.overrides.get(k, '(default)')}" for k in swept) or "all"
        if col not in columns:
            columns.append(col)
        c = columns.index(col)
        for rec in j.records:
            row = (rec["prompt_id"], int(rec["seed"]))
            if row not in rows:
                rows.append(row)
            cells[(rows.index(row), c)] = {"record": rec, "path": j.path / rec["image"]}
    # rows grouped by prompt (first-appearance order), seeds ascending within a prompt
    prompt_order = list(dict.fromkeys(p for p, _ in rows))
    order = sorted(range(len(rows)), key=lambda i: (prompt_order.index(rows[i][0]), rows[i][1]))
    remap = {old: new for new, old in enumerate(order)}
    rows = [rows[i] for i in order]
    cells = {(remap[r], c): v for (r, c), v in cells.items()}
    return Grid(rows=rows, columns=columns, swept_keys=swept, cells=cells)


def render_grid(grid: Grid, cell: int = GRID_CELL_SIZE):
    """A labelled PNG: column headers on top, row labels on the left, a grey box for a missing cell."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    pad = 6
    label_w = 180
    wrap_cols = max(10, cell // 7)
    header_lines = max((len(textwrap.wrap(c, wrap_cols)) for c in grid.columns), default=1)
    header_h = 14 * header_lines + 2 * pad
    W = label_w + len(grid.columns) * (cell + pad) + pad
    H = header_h + len(grid.rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(grid.columns):
        x = label_w + c * (cell + pad)
        for i, line in enumerate(textwrap.wrap(name, wrap_cols)):
            draw.text((x, pad + 14 * i), line, fill="black", font=font)
    for r, (pid, seed) in enumerate(grid.rows):
        y = header_h + r * (cell + pad)
        for i, line in enumerate(textwrap.wrap(pid, 26)[:6] + [f"seed {seed}"]):
            draw.text((pad, y + 14 * i), line, fill="black", font=font)
        for c in range(len(grid.columns)):
            x = label_w + c * (cell + pad)
            entry = grid.cells.get((r, c))
            thumb = _thumb_source(entry)
            if thumb is None:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(200, 200, 200))
                label = "unreadable" if entry and Path(entry["path"]).exists() else "missing"
                draw.text((x + pad, y + pad), label, fill="black", font=font)
                continue
            if max(thumb.size) > cell:
                thumb.thumbnail((cell, cell), Image.LANCZOS)
            elif max(thumb.size) < cell:  # tiny test images: scale up (nearest) so they are visible
                f = cell / max(thumb.size)
                thumb = thumb.resize((max(1, round(thumb.width * f)), max(1, round(thumb.height * f))), Image.NEAREST)
            canvas.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
            if (entry["record"].get("flags") or {}).get("near_uniform"):
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=(220, 0, 0), width=3)
                draw.text((x + pad, y + cell - 16), "FLAGGED near-uniform", fill=(220, 0, 0), font=font)
    return canvas


def _thumb_source(entry: dict | None):
    """The cell's image as RGB; None when it is missing or unreadable (a warning names the file)."""
    from ideogram4.image_files import ImageFileError, read_image

    if entry is None or not Path(entry["path"]).exists():
        return None
    try:
        return read_image(entry["path"])
    except ImageFileError as e:
        log.warning("Grid: %s", e)
        return None


def make_sweep_grid(
    sweep_dir: str | Path, cell: int = GRID_CELL_SIZE, jobs: list[JobFolder] | None = None
) -> tuple[Path, Grid] | None:
    """Build, render and save the sweep's grid; returns (png path, grid) or None if no job made images.
    ``jobs``: the sweep's job folders when the caller already collected them (its warnings said once)."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir) if jobs is None else jobs
    if not jobs:
        log.warning("No job folders with a manifest under %s: no comparison grid", sweep_dir)
        return None
    grid = build_grid(jobs)
    image = render_grid(grid, cell=cell)
    path = sweep_dir / GRID_PNG
    out_mod.save_png_atomic(image, path, {"ideogram4:grid": json.dumps(grid.to_json(), ensure_ascii=False)})
    tmp = sweep_dir / f".{GRID_JSON}.tmp"
    tmp.write_text(json.dumps(grid.to_json(), indent=2, ensure_ascii=False))
    tmp.replace(sweep_dir / GRID_JSON)
    log.info(
        "Comparison grid: %d row(s) (prompt x seed) x %d column(s) (%s) -> %s",
        len(grid.rows),
        len(grid.columns),
        ", ".join(grid.swept_keys) or "no swept keys",
        path,
    )
    return path, grid


def main(argv: list[str] | None = None) -> int:
    """Rebuild a sweep's grid from its folders (e.g. after an interrupted or failed sweep):
    python -m ideogram4.experiment.grid outputs/sweeps/NAME [--cell 256]"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ideogram4.experiment.grid", description=main.__doc__)
    parser.add_argument("sweep_dir")
    parser.add_argument("--cell", type=int, default=GRID_CELL_SIZE, help="cell size in pixels (16 or more)")
    args = parser.parse_args(argv)
    if not Path(args.sweep_dir).is_dir():
        parser.error(
            f"sweep_dir {args.sweep_dir!r} is not a folder: give a sweep folder such as outputs/sweeps/DATE/TIME"
        )
    if args.cell < 16:
        parser.error(f"--cell {args.cell}: give a cell size of at least 16 pixels (e.g. --cell {GRID_CELL_SIZE})")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    made = make_sweep_grid(args.sweep_dir, cell=args.cell)
    return 0 if made else 1


if __name__ == "__main__":
    raise SystemExit(main())
