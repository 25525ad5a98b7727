"""The report's command line: python -m ideogram4.experiment.report SWEEP_DIR (see build.py)."""

from __future__ import annotations

import logging
from pathlib import Path

from .build import write_report

log = logging.getLogger("ideogram4.experiment")


def main(argv: list[str] | None = None) -> int:
    """Write SWEEP_DIR/report/index.html from a finished (or interrupted) sweep's folders:
    python -m ideogram4.experiment.report outputs/sweeps/NAME [--x cfg] [--y sampler.steps]"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ideogram4.experiment.report", description=main.__doc__)
    parser.add_argument("sweep_dir")
    parser.add_argument("--x", help="the swept key (or prompt / seed) across the grid (default: the first swept key)")
    parser.add_argument("--y", help="the swept key (or prompt / seed) down the grid (default: the second swept key)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not Path(args.sweep_dir).is_dir():
        log.error("sweep_dir %r is not a folder: give a sweep folder such as outputs/sweeps/DATE/TIME", args.sweep_dir)
        return 2
    try:
        index = write_report(args.sweep_dir, x=args.x, y=args.y)
    except ValueError as e:
        log.error("%s", str(e).replace("report.", "--"))
        return 2
    if index is None:
        return 1
    print(index)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
