"""The reproduction command line: python -m ideogram4.experiment.reproduce IMAGE.png (see regenerate.py)."""

from __future__ import annotations

import argparse
import logging
import sys

from .config import compose_overrides
from .regenerate import guarded, reproduce


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ideogram4.experiment.reproduce",
        description="Regenerate an image from the settings embedded in its PNG and compare the pixels.",
    )
    parser.add_argument("image", help="a PNG written by run.py")
    parser.add_argument("--out", help="folder for the regenerated image (default: outputs/reproduce/<stem>/)")
    parser.add_argument("--strict", action="store_true", help="refuse to sample when anything recorded differs")
    parser.add_argument("overrides", nargs="*", help="config overrides on top of the PNG's, e.g. device=cpu")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return guarded(
        lambda: reproduce(args.image, args.out, strict=args.strict, overrides=compose_overrides(args.overrides))
    )


if __name__ == "__main__":
    sys.exit(main())
