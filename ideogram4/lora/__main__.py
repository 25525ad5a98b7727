"""`python -m ideogram4.lora make-example OUT.safetensors [--layout aitk|kohya|peft]`: a LoRA for the tiny random model
(ideogram4/tiny.py), so LoRA loading can be tried offline. The README's LoRA section shows it in a run."""

from __future__ import annotations

import argparse
import sys

from .example import EXAMPLE_LAYOUTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ideogram4.lora", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make-example", help="write a small random LoRA for the tiny model (offline)")
    make.add_argument("out", help="the .safetensors file to write")
    make.add_argument("--layout", choices=EXAMPLE_LAYOUTS, default="aitk", help="whose key names to use")
    make.add_argument("--rank", type=int, default=4)
    make.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.out.endswith(".safetensors"):
        parser.error(f"out = {args.out!r}: must end in .safetensors. Fix: e.g. style.safetensors")
    if args.rank < 1:
        parser.error(f"--rank = {args.rank}: must be at least 1")
    from .example import make_example

    path = make_example(args.out, args.layout, args.rank, args.seed)
    # the core names no runner config keys (tests/test_api_errors.py): the run command is in the README
    print(f"Wrote {path} ({args.layout} layout, rank {args.rank}, for the tiny model); README 'LoRA' shows a run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
