"""The sweep summary's command line: python -m ideogram4.experiment.summary SWEEP_DIR (see table.py)."""

from __future__ import annotations

import logging

from .table import summarize

log = logging.getLogger("ideogram4.experiment")


def main(argv: list[str] | None = None) -> int:
    """Summarise a finished (or interrupted) sweep from its folders:
    python -m ideogram4.experiment.summary outputs/sweeps/NAME [--baseline "cfg=3"]"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ideogram4.experiment.summary", description=main.__doc__)
    parser.add_argument("sweep_dir")
    parser.add_argument(
        "--baseline",
        nargs="+",
        default=None,
        help='the setting compared against, as overrides ("cfg=3"); default: the first setting',
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = summarize(args.sweep_dir, baseline=args.baseline)
    except ValueError as e:
        log.error("%s", e)
        return 2
    if result is None:
        return 1
    for path in result.paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
