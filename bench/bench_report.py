"""How long the sweep report takes to write, and what it weighs beside the PNGs it shows (issue 22:
a 40-image sweep in under 5 s on 2 cores, under 1/5 of the PNGs).

    python bench/bench_report.py                         # makes a 40-image tiny-model sweep at 512^2, then measures
    python bench/bench_report.py --sweep outputs/sweeps/NAME   # measures an existing sweep

A first write makes the thumbnails (cold); a second finds them made (warm). The sweep is made with the
real runner (`run.py -m model=tiny ... report.enabled=false`), so the manifests and pages are the real
ones; the tiny model's images are noise-like, which makes their PNGs larger than real images' would be.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEP_ARGS = [
    "model=tiny",
    "sampler=turbo_12",
    "sampler.steps=2",
    "cfg=3,4,5,6,7",
    "sampler.polish_cfg=1,3",
    "seed=0,1",
    "prompts=typography",  # 2 prompts: 5 x 2 x 2 x 2 = 40 images
    "metrics=[image_stats]",
    "tracker=none",
    "report.enabled=false",
]


def make_sweep(sweep: Path, side: int) -> None:
    size = [f"resolution.height={side}", f"resolution.width={side}"]
    args = [sys.executable, str(REPO / "run.py"), "-m", *SWEEP_ARGS, *size, f"hydra.sweep.dir={sweep}"]
    subprocess.run(args, check=True, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(sweep: Path) -> dict:
    from ideogram4.experiment.grid import build_grid, collect_jobs
    from ideogram4.experiment.report.build import write_report

    report = sweep / "report"
    shutil.rmtree(report, ignore_errors=True)
    started = time.perf_counter()
    write_report(sweep)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    write_report(sweep)
    warm = time.perf_counter() - started
    shown = [v["path"] for v in build_grid(collect_jobs(sweep)).cells.values()]
    png_bytes = sum(Path(p).stat().st_size for p in shown)
    report_bytes = folder_bytes(report)
    return {
        "images": len(shown),
        "cold_s": round(cold, 3),
        "warm_s": round(warm, 3),
        "png_bytes": png_bytes,
        "report_bytes": report_bytes,
        "report_over_png": round(report_bytes / png_bytes, 4) if png_bytes else None,
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, help="an existing sweep folder (default: make one)")
    parser.add_argument("--make", type=Path, default=REPO / "bench" / "out" / "report_sweep", help="where to make it")
    parser.add_argument("--side", type=int, default=512, help="image side of the made sweep (default 512)")
    parser.add_argument("--out", type=Path, help="also write the numbers here as JSON")
    args = parser.parse_args(argv)
    sweep = args.sweep
    if sweep is None:
        sweep = args.make
        if not (sweep / "summary.csv").is_file():
            make_sweep(sweep, args.side)
    result = measure(sweep)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
