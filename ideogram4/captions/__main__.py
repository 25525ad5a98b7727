"""`python -m ideogram4.captions`: check, format, count, preview and write structured captions.

    check FILE... [--strict]             every verifier rule; exit 1 on errors (with --strict, on warnings too)
    format FILE [--id ID] [--pretty]     the exact string the text encoder reads, or indented JSON for editing
    tokens FILE [--id ID]                token count after the chat template, against the 2048 limit
    preview FILE [--id ID] --size WxH -o OUT.png [--image IMG]   the layout drawn (alias: draw)
    upsample "TEXT" --model SRC [--head SRC] [--size WxH] [--seed N]   a plain prompt -> a caption

FILE is a JSON caption, a JSON list, JSONL ({id, prompt} per line) or a YAML prompt set
(`items: [{id, prompt}]`, as conf/prompts/*.yaml); `-` reads JSON from standard input.
Exit codes: 0 clean, 1 problems found (or a file that does not parse), 2 a file that cannot be
opened or a bad argument.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import PromptFileError
from ..image_files import ImageFileError, read_image
from ..spec import DTYPES, MAX_TEXT_TOKENS
from .prompt_files import PromptEntry, file_findings, load_entries, select
from .schema import pretty_caption, serialize_caption


def cmd_check(args) -> int:
    rc, counts, n_prompts, unread = 0, {"error": 0, "warning": 0}, 0, 0
    for file in args.files:
        try:
            entries = load_entries(file)
        except PromptFileError as e:
            print(e)
            rc, unread = max(rc, e.exit_code), unread + 1
            continue
        n_prompts += len(entries)
        for f in file_findings(entries, args.tokenizer, args.max_tokens):
            print(f.render(args.strict))
            counts[f.severity(args.strict)] += 1
    if counts["error"]:
        rc = max(rc, 1)
    summary = f"{n_prompts} prompt(s) in {len(args.files) - unread} file(s): {counts['error']} error(s), {counts['warning']} warning(s)"
    if unread:
        summary += f"; {unread} file(s) could not be read"
    if counts["warning"] and not args.strict:
        summary += " (--strict makes warnings errors)"
    print(summary, file=sys.stderr)
    return rc


def _one(args) -> PromptEntry:
    return select(load_entries(args.file), args.id, args.file)


def cmd_format(args) -> int:
    entry = _one(args)
    if not isinstance(entry.prompt, (str, dict)):
        raise PromptFileError(args.file, f"[{entry.id}] the prompt is neither text nor a caption object")
    try:
        print(pretty_caption(entry.prompt) if args.pretty else serialize_caption(entry.prompt))
    except ValueError as e:
        raise PromptFileError(entry.where, f"[{entry.id}] {e}") from None
    return 0


def cmd_tokens(args) -> int:
    from ..prompts import count_tokens_fast

    entries = [_one(args)] if args.id else load_entries(args.file)
    rc = 0
    for entry in entries:
        if not isinstance(entry.prompt, (str, dict)):
            print(f"{entry.where}: [{entry.id}] not text nor a caption object")
            rc = 1
            continue
        n = count_tokens_fast(serialize_caption(entry.prompt), args.tokenizer)
        verdict = "ok" if n <= args.max_tokens else f"over by {n - args.max_tokens}"
        print(f"{entry.id}: {n} tokens (limit {args.max_tokens}, {verdict})")
        rc = max(rc, int(n > args.max_tokens))
    return rc


def parse_size(text: str) -> tuple[int, int]:
    """'1024x768' (width x height) -> (1024, 768)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 1024x768") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"{text!r}: each side must be between 16 and 8192 pixels")
    return w, h


def cmd_preview(args) -> int:
    from .draw import draw_layout, render_preview

    entry = _one(args)
    if args.image:  # the pixel limit and a damaged file: ImageFileError, one line (main)
        out = draw_layout(read_image(args.image), entry.prompt)
    else:
        out = render_preview(entry.prompt, *args.size)
    out.save(args.output)
    print(f"{args.output}: [{entry.id}] {out.width}x{out.height}")
    return 0


def cmd_upsample(args) -> int:
    import torch

    from .upsample import CaptionWriter, UpsampleError, check_upsample_available

    try:
        check_upsample_available(args.head)
        writer = CaptionWriter.from_pretrained(args.model, device=args.device, torch_dtype=getattr(torch, args.dtype))
        writer.load_prompt_enhancer_head(args.head)
        width, height = args.size
        caption = writer.upsample_prompt(args.text, height, width, args.seed, max_new_tokens=args.max_new_tokens)
    except (UpsampleError, ValueError) as e:
        print(f"upsample: {e}", file=sys.stderr)
        return 1
    print(pretty_caption(caption) if args.pretty else caption)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ideogram4.captions", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_file(p, many=False):
        if many:
            p.add_argument("files", nargs="+", metavar="FILE", help="JSON caption, JSON list, JSONL or YAML prompt set")
        else:
            p.add_argument(
                "file", metavar="FILE", help="JSON caption, JSON list, JSONL or YAML prompt set; - for stdin"
            )
            p.add_argument("--id", help="which prompt of a prompt set")
        return p

    def with_tokenizer(p):
        p.add_argument("--tokenizer", help="a tokenizer folder (default: the bundled Qwen tokenizer)")
        p.add_argument("--max-tokens", type=int, default=MAX_TEXT_TOKENS, help="the token limit (default 2048)")
        return p

    check_help = (
        "Every rule of the official caption verifier (spec G.1). Errors break a schema rule (types, required "
        "keys, bbox [ymin, xmin, ymax, xmax] in 0..1000 with min <= max, uppercase #RRGGBB, at most 16 palette "
        "colours and 5 per element, text elements carry text, exactly one of photo/art_style, the token limit, "
        "unique ids); warnings are what the verifier only warns about or serialisation repairs (unknown keys, "
        "key order, \\uXXXX escapes, zero-area boxes). Exit 1 on errors, and with --strict on warnings too."
    )
    check = with_tokenizer(
        with_file(sub.add_parser("check", help="every caption verifier rule", description=check_help), many=True)
    )
    check.add_argument("--strict", action="store_true", help="warnings are errors too")
    check.set_defaults(run=cmd_check)
    fmt = with_file(sub.add_parser("format", help="the exact string the text encoder reads"))
    fmt.add_argument("--pretty", action="store_true", help="indented JSON in the official key order, for editing")
    fmt.set_defaults(run=cmd_format)
    with_tokenizer(with_file(sub.add_parser("tokens", help="token count and the 2048 limit"))).set_defaults(
        run=cmd_tokens
    )
    preview = with_file(sub.add_parser("preview", aliases=["draw"], help="draw the layout to a PNG"))
    preview.add_argument("--size", type=parse_size, default=(1024, 1024), help="WIDTHxHEIGHT (default 1024x1024)")
    preview.add_argument("--image", help="draw the boxes over this image instead of a blank sheet")
    preview.add_argument("-o", "--output", required=True, help="the PNG to write")
    preview.set_defaults(run=cmd_preview)
    up = sub.add_parser("upsample", help="turn a plain prompt into a structured caption (Qwen3-VL + LM head)")
    up.add_argument("text", help="the plain prompt")
    up.add_argument("--model", required=True, help="Ideogram 4 checkpoint folder or repo id (its text encoder is used)")
    up.add_argument("--head", default=None, help="LM head folder, file or repo id (default: the diffusers one)")
    up.add_argument("--size", type=parse_size, default=(1024, 1024), help="target WIDTHxHEIGHT (its aspect is used)")
    up.add_argument("--seed", type=int, default=0)
    up.add_argument("--max-new-tokens", type=int, default=1024)
    up.add_argument("--device", default="cpu")
    up.add_argument("--dtype", default="bfloat16", choices=DTYPES)
    up.add_argument("--pretty", action="store_true", help="indented JSON instead of the compact caption")
    up.set_defaults(run=cmd_upsample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except PromptFileError as e:
        print(e, file=sys.stderr)
        return e.exit_code
    except ImageFileError as e:  # --image: names the file and the fix
        print(e, file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the output PNG's folder does not exist
        print(f"{getattr(e, 'filename', '') or ''}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
