"""Structured captions: schema, checks, drawing, upsampling; `python -m ideogram4.captions --help`.

- `schema`: key order, limits, parsing, the exact compact string the text encoder reads.
- `verify`: the official caption verifier's rules, each finding with a JSON path and a fix.
- `prompt_files`: the one prompt-file reader (JSON, JSONL, YAML) and its findings, with file/line locations.
- `draw`: a caption's layout drawn over an image or a blank canvas, and as W&B boxes.
- `upsample`: a plain prompt turned into a caption by Qwen3-VL plus its LM head (needs torch).

Importing this package loads neither torch nor transformers.
"""

from .schema import canonical_caption, caption_elements, parse_caption, pretty_caption, serialize_caption
from .verify import CaptionIssue, validate_caption

__all__ = [
    "CaptionIssue",
    "canonical_caption",
    "caption_elements",
    "parse_caption",
    "pretty_caption",
    "serialize_caption",
    "validate_caption",
]
