"""Comparison grids across a sweep, built from the job folders on disk.

The grid's data (``Grid``: rows prompt x seed, columns the combinations of swept values, every override
that differs between jobs except the seed) is laid out on X/Y/Z axes by ``axes.py`` and drawn by
``grid_render.py``. Only manifests and PNGs are read, so it works the same whether the jobs ran in this
process, in local subprocesses (submitit_local) or on SLURM nodes.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ideogram4.spec import GRID_CELL_SIZE

from .axes import Layout, build_layout
from .grid_render import render_sheet
from .present import fixed_settings, sweep_title
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
    cells: dict[tuple[int, int], dict] = field(default_factory=dict)  # (row, col) -> record, path, job_num
    column_values: list[dict[str, str]] = field(default_factory=list)  # column -> swept key -> value text

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
    column_values: list[dict[str, str]] = []
    rows: list[tuple[str, int]] = []
    cells: dict[tuple[int, int], dict] = {}
    for j in jobs:
        col = ", ".join(f"{k}={j.overrides.get(k, '(default)')}" for k in swept) or "all"
        if col not in columns:
            columns.append(col)
            column_values.append({k: j.overrides.get(k, "(default)") for k in swept})
        c = columns.index(col)
        for rec in j.records:
            row = (rec["prompt_id"], int(rec["seed"]))
            if row not in rows:
                rows.append(row)
            cells[(rows.index(row), c)] = {"record": rec, "path": j.path / rec["image"], "job_num": j.num}
    # rows grouped by prompt (first-appearance order), seeds ascending within a prompt
    prompt_order = list(dict.fromkeys(p for p, _ in rows))
    order = sorted(range(len(rows)), key=lambda i: (prompt_order.index(rows[i][0]), rows[i][1]))
    remap = {old: new for new, old in enumerate(order)}
    rows = [rows[i] for i in order]
    cells = {(remap[r], c): v for (r, c), v in cells.items()}
    return Grid(rows=rows, columns=columns, swept_keys=swept, cells=cells, column_values=column_values)


def sweep_grid(sweep_dir: Path, jobs: list[JobFolder] | None, what: str) -> Grid | None:
    """The sweep's grid from its job folders (collected here unless given); None, said once, if none."""
    jobs = collect_jobs(sweep_dir) if jobs is None else jobs
    if not jobs:
        log.warning("No job folders with a manifest under %s: no %s", sweep_dir, what)
        return None
    return build_grid(jobs)


def sheet_title(sweep_dir: Path, layout: Layout, grid: Grid, z: int) -> list[str]:
    """Title lines: the sweep (experiment and overrides), the settings every image shares, the Z value."""
    first = next(iter(grid.cells.values()))["record"] if grid.cells else {}
    fixed = " \u00b7 ".join(f"{k} {v}" for k, v in fixed_settings(first, grid.swept_keys))
    lines = [sweep_title(sweep_dir), fixed]
    if layout.objective is not None:
        lines.append(f"trials sorted by mean {layout.objective[0]} ({layout.objective[1]}), best first")
    if layout.z.key:
        lines.append(f"sheet {z + 1}/{len(layout.z.values)}: {layout.z.title(z)}")
    return [line for line in lines if line]


def sheet_paths(sweep_dir: Path, layout: Layout) -> list[Path]:
    """comparison_grid.png, or with a Z axis one file per value: comparison_grid__<key>=<value>.png."""
    if not layout.z.key:
        return [sweep_dir / GRID_PNG]
    stem = Path(GRID_PNG).stem
    safe = [re.sub(r"[^\w.=+-]", "_", layout.z.title(i)) for i in range(len(layout.z.values))]
    return [sweep_dir / f"{stem}__{name}.png" for name in safe]


def make_sweep_grid(
    sweep_dir: str | Path,
    cell: int = GRID_CELL_SIZE,
    jobs: list[JobFolder] | None = None,
    x=None,
    y=None,
    z=None,
    scores=(),
) -> tuple[list[Path], Grid] | None:
    """Build, lay out (X/Y/Z), render and save the sweep's grid sheets; (png paths, grid) or None if no
    job made images. ``jobs``: the sweep's job folders when the caller already collected them (its
    warnings said once). A bad axis key raises ValueError naming it."""
    sweep_dir = Path(sweep_dir)
    grid = sweep_grid(sweep_dir, jobs, "comparison grid")
    if grid is None:
        return None
    layout = build_layout(grid, x, y, z, sweep_dir=sweep_dir)
    paths = sheet_paths(sweep_dir, layout)
    meta = {"ideogram4:grid": json.dumps(grid.to_json(), ensure_ascii=False)}
    for i, path in enumerate(paths):
        image = render_sheet(layout, i, sheet_title(sweep_dir, layout, grid, i), cell=cell, scores=list(scores))
        out_mod.save_png_atomic(image, path, meta)
    tmp = sweep_dir / f".{GRID_JSON}.tmp"
    tmp.write_text(json.dumps(grid.to_json(), indent=2, ensure_ascii=False))
    tmp.replace(sweep_dir / GRID_JSON)
    log.info(
        "Comparison grid: x %s, y %s%s, sections %s -> %s",
        layout.x.key or "-",
        layout.y.key or "-",
        f", one sheet per {layout.z.key}" if layout.z.key else "",
        " x ".join(layout.section_keys) or "-",
        ", ".join(map(str, paths)),
    )
    return paths, grid


def main(argv: list[str] | None = None) -> int:
    """Rebuild a sweep's grid from its folders (e.g. after an interrupted or failed sweep):
    python -m ideogram4.experiment.grid outputs/sweeps/NAME [--cell 256] [--x cfg --y sampler.steps --z ...]"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ideogram4.experiment.grid", description=main.__doc__)
    parser.add_argument("sweep_dir")
    parser.add_argument("--cell", type=int, default=GRID_CELL_SIZE, help="cell size in pixels (16 or more)")
    for axis in ("x", "y", "z"):
        parser.add_argument(f"--{axis}", help=f"the swept key (or prompt / seed) on the {axis.upper()} axis")
    parser.add_argument("--scores", nargs="*", default=[], help="metric values printed under each image")
    args = parser.parse_args(argv)
    if not Path(args.sweep_dir).is_dir():
        parser.error(
            f"sweep_dir {args.sweep_dir!r} is not a folder: give a sweep folder such as outputs/sweeps/DATE/TIME"
        )
    if args.cell < 16:
        parser.error(f"--cell {args.cell}: give a cell size of at least 16 pixels (e.g. --cell {GRID_CELL_SIZE})")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        made = make_sweep_grid(args.sweep_dir, cell=args.cell, x=args.x, y=args.y, z=args.z, scores=args.scores)
    except ValueError as e:
        log.error("%s", str(e).replace("grid.", "--"))
        return 2
    return 0 if made else 1


if __name__ == "__main__":
    raise SystemExit(main())
