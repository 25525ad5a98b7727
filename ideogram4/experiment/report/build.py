"""Write SWEEP_DIR/report/: index.html, one page per image (images/), thumbnails (thumbs/), the script and
style sheet (static/). Every link is relative, so the folder opens from a file share or a plain
`python -m http.server`; nothing is fetched from the network."""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from ..axes import build_layout
from ..grid import GRID_PNG, sweep_grid
from ..present import direction, fixed_settings, sweep_name, sweep_overrides
from ..summary.table import COMPARISONS_CSV, SUMMARY_CSV, SUMMARY_JSON, SUMMARY_PNG, summarize
from . import INDEX_HTML, REPORT_DIR
from .pages import image_page, relative
from .search import read_search
from .tables import comparison_table, summary_table
from .thumbs import thumbnail

log = logging.getLogger("ideogram4.experiment")

STATIC_FILES = ("report.js", "report.css")
MAX_CELL_SCORES = 4  # metric values under each grid thumbnail (those with a direction first)
LINKED_FILES = (SUMMARY_CSV, COMPARISONS_CSV, SUMMARY_JSON, SUMMARY_PNG, GRID_PNG, "best.yaml", "failed_jobs.jsonl")


def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("ideogram4.experiment.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def _cell_scores(grid) -> list[str]:
    names = list(dict.fromkeys(m for e in grid.cells.values() for m in (e["record"].get("metrics") or {})))
    ranked = [m for m in names if direction(m)] + [m for m in names if not direction(m)]
    return ranked[:MAX_CELL_SCORES]


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _grid_sections(layout, pages: dict) -> list[dict]:
    """The template's view of the layout: per section, rows of Y with one page (or None) per X value."""
    sections = []
    for s in range(len(layout.sections)):
        rows = []
        for y in range(len(layout.y.values)):
            cells = [layout.cells.get((0, s, y, x)) for x in range(len(layout.x.values))]
            label = layout.y.title(y) if layout.y.key else ""
            rows.append({"label": label, "cells": [pages[id(e)] if e else None for e in cells]})
        sections.append({"title": layout.section_title(s), "rows": rows})
    return sections


def write_report(sweep_dir: str | Path, x: str | None = None, y: str | None = None, jobs=None) -> Path | None:
    """Write the sweep's report; returns report/index.html, or None when no job folder has images.
    ``jobs``: the sweep's job folders when the caller already collected them. A bad axis raises
    ValueError naming it (report.x / report.y)."""
    started = time.perf_counter()
    sweep_dir = Path(sweep_dir)
    grid = sweep_grid(sweep_dir, jobs, "report")
    if grid is None:
        return None
    layout = build_layout(grid, x, y, None, sweep_dir=sweep_dir, prefix="report")
    if not (sweep_dir / SUMMARY_CSV).is_file():
        summarize(sweep_dir, jobs=jobs)
    out = sweep_dir / REPORT_DIR
    (out / "images").mkdir(parents=True, exist_ok=True)
    scores = _cell_scores(grid)
    pages = {id(entry): image_page(entry, out, sweep_dir, scores) for entry in layout.cells.values()}
    jobs_in = [(Path(e["path"]), out / "thumbs" / f"{pages[id(e)]['id']}.jpg") for e in layout.cells.values()]
    # decoding and resizing release the GIL: one thread per core makes the thumbnails in parallel
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        made = list(pool.map(lambda pair: thumbnail(*pair), jobs_in))
    for entry, thumb in zip(layout.cells.values(), made):
        pages[id(entry)]["thumb"] = relative(thumb, out) if thumb else ""  # unreadable: warned, no picture
    context = _index_context(sweep_dir, out, grid, layout, pages, scores)
    env = _environment()
    _write(out / INDEX_HTML, env.get_template("index.html").render(**context))
    image_template = env.get_template("image.html")
    for page in pages.values():
        _write(
            out / "images" / f"{page['id']}.html", image_template.render(page=page, title=context["title"], root="../")
        )
    _copy_static(out)
    log.info(
        "Sweep report: %d image page(s) in %.1f s -> %s", len(pages), time.perf_counter() - started, out / INDEX_HTML
    )
    return out / INDEX_HTML


def _index_context(sweep_dir: Path, out: Path, grid, layout, pages: dict, scores: list[str]) -> dict:
    first = next(iter(grid.cells.values()))["record"] if grid.cells else {}
    return {
        "root": "",
        "title": sweep_name(sweep_dir),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "sweep_dir": str(sweep_dir.resolve()),
        "overrides": sweep_overrides(sweep_dir),
        "fixed": fixed_settings(first, grid.swept_keys),
        "swept": grid.swept_keys,
        "files": [(name, relative(sweep_dir / name, out)) for name in LINKED_FILES if (sweep_dir / name).is_file()],
        "summary": summary_table(sweep_dir),
        "comparisons": comparison_table(sweep_dir),
        "summary_png": relative(sweep_dir / SUMMARY_PNG, out) if (sweep_dir / SUMMARY_PNG).is_file() else None,
        "search": read_search(sweep_dir),
        "layout": layout,
        "sections": _grid_sections(layout, pages),
        "scores": scores,
        "n_images": len(pages),
    }


def _copy_static(out: Path) -> None:
    (out / "static").mkdir(exist_ok=True)
    for name in STATIC_FILES:
        with resources.as_file(resources.files(__package__) / "static" / name) as source:
            shutil.copyfile(source, out / "static" / name)
