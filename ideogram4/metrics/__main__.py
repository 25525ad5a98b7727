"""python -m ideogram4.metrics IMAGE [IMAGE...] [--caption CAPTION] [--metrics ocr,palette] [--option ocr.margin=30]

Prints one JSON object per image: {"image": path, <value>: number or null, ...}. Without --caption the
caption is read from the PNG's `ideogram4:caption` text chunk (images made by the runner carry it).
Bad input (unknown metric or option, missing file) ends in one line on stderr and exit code 2; an image
whose scoring failed prints its error on stderr and the run ends with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..spec import PNG_CAPTION_KEY
from .caption import caption_facts
from .registry import MetricError, check_metrics, metric_lines, parse_options
from .scorer import score_image


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ideogram4.metrics",
        description=__doc__.split("\n\n")[1],
        epilog="metrics:\n" + "\n".join(metric_lines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--caption", help="caption file: a JSON structured caption or a plain-text prompt")
    parser.add_argument("--metrics", default="ocr,palette", help="comma-separated metric names (default: %(default)s)")
    parser.add_argument(
        "--option", action="append", default=[], metavar="METRIC.NAME=VALUE", help="a metric option (repeatable)"
    )
    parser.add_argument("--details", action="store_true", help="add per-element details and metric versions")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        options = parse_options(args.option)
        metrics = check_metrics([n.strip() for n in args.metrics.split(",") if n.strip()], options)
        missing = [p for p in [*args.images, *([args.caption] if args.caption else [])] if not Path(p).is_file()]
        if missing:
            raise MetricError(f"no such file: {', '.join(missing)}")
        caption = caption_facts(Path(args.caption).read_text(encoding="utf-8")) if args.caption else None
    except ValueError as e:  # MetricError, CaptionError
        print(f"error: {e}", file=sys.stderr)
        return 2
    from ideogram4.image_files import ImageFileError, read_image

    failed, unreadable = False, False
    for path in args.images:
        try:  # one bad file is one line; the others are still scored
            image = read_image(path, mode=None)
        except ImageFileError as e:
            print(f"error: {e}", file=sys.stderr)
            unreadable = True
            continue
        text = caption or image.info.get(PNG_CAPTION_KEY)
        if text is None and any(m.reads_caption for m in metrics):
            note = f"note: {path} has no caption (no --caption, no {PNG_CAPTION_KEY} chunk): caption metrics are null"
            print(note, file=sys.stderr)
        scored = score_image(metrics, image, text, options, key=path)
        line = {"image": path, **scored.values}
        if args.details:
            line.update(versions=scored.versions, details=scored.details)
        if scored.errors:
            line["errors"] = scored.error_lines()
            failed = True
            for name, message in line["errors"].items():
                print(f"error: {path}: metric {name}: {message}", file=sys.stderr)
        print(json.dumps(line, ensure_ascii=False), flush=True)
    return 2 if unreadable else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
