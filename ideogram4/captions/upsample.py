"""Prompt upsampling: a plain prompt -> a structured caption, written locally by Qwen3-VL + its LM head.

The Ideogram 4 text encoder is Qwen3-VL-8B-Instruct without its LM head; with the head (a separate
download, `diffusers/qwen3-vl-8b-instruct-lm-head`) the same weights write captions. The system
prompt, the user template, the generation call and the schema-constrained decoding (with `outlines`
installed) are diffusers' own (`diffusers.pipelines.ideogram4.prompt_enhancer`), imported rather
than copied, so the captions match diffusers' `upsample_prompt` for the same weights and seed.

What is added here: every result is parsed and checked against the caption schema (`verify`) and
the generation retried (deterministically, from the same seed) when it is not a valid caption, e.g.
cut off by `max_new_tokens`; a clear error after `attempts` tries. Results are cached in the process
per (weights, prompt, seed, aspect ratio, sampling settings), so a sweep upsamples each prompt once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import uuid
import weakref
from collections import OrderedDict
from pathlib import Path

from ..errors import UpsampleError
from ..sources import HUB_REPO, hub_folder, parse_source
from .schema import parse_caption, serialize_caption
from .verify import validate_caption

log = logging.getLogger(__name__)

DEFAULT_HEAD = "diffusers/qwen3-vl-8b-instruct-lm-head"
HEAD_PATTERNS = ["*.safetensors", "*.json"]


def constrained_decoding_available() -> bool:
    """Whether `outlines` is importable (schema-constrained decoding); otherwise validate-and-retry only."""
    import importlib.util

    return importlib.util.find_spec("outlines") is not None


def check_upsample_available(head: str | None = None, *, revision: str | None = None) -> str:
    """Fail fast, before any weights load and without importing torch, when the LM head cannot be had.

    `head`: a .safetensors file, a folder holding one, or a hub repo id (default DEFAULT_HEAD).
    Returns where the head is (a local path, or the repo id still to download); raises UpsampleError.
    """
    head = head or DEFAULT_HEAD
    where = parse_source(head)
    if where.kind != HUB_REPO:
        p = where.path or Path(head)
        if (p.is_file() and p.suffix == ".safetensors") or (p.is_dir() and any(p.glob("*.safetensors"))):
            return str(p)
        raise UpsampleError(
            f"head={head!r}: no .safetensors file there; give the LM head's file or folder, "
            f"or the hub repo {DEFAULT_HEAD!r}"
        )
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(head, allow_patterns=HEAD_PATTERNS, revision=revision, local_files_only=True))
        if any(folder.glob("*.safetensors")):
            return str(folder)
    except (LocalEntryNotFoundError, HfHubHTTPError, ValueError, OSError):
        pass
    if constants.HF_HUB_OFFLINE:
        raise UpsampleError(
            f"prompt upsampling needs the LM head {head!r}, which is not in the local cache, and the hub is "
            f"offline (HF_HUB_OFFLINE=1): download it where there is network (`hf download {head}`) and copy "
            "the cache, or pass head=<folder with the .safetensors file>"
        )
    return head  # downloaded when the head is loaded


def head_files(head: str | None = None, revision: str | None = None) -> list[Path]:
    """The head's .safetensors files, downloading a repo id through the hub cache if needed."""
    where = Path(check_upsample_available(head, revision=revision))
    if where.is_file():
        return [where]
    if not where.is_dir():
        where = hub_folder(str(where), HEAD_PATTERNS, revision, UpsampleError)
    return sorted(where.glob("*.safetensors"))


def aspect_ratio(height: int, width: int) -> str:
    """'4:3' for 1024x768, as diffusers writes it into the user message (width:height)."""
    g = math.gcd(width, height) or 1
    return f"{width // g}:{height // g}"


class CaptionCache:
    """Upsampled captions per key, least recently used dropped first; hits/misses are counted."""

    def __init__(self, size: int = 512):
        self.size, self.hits, self.misses = size, 0, 0
        self._entries: OrderedDict[tuple, str] = OrderedDict()

    def get(self, key: tuple) -> str | None:
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        return None

    def put(self, key: tuple, caption: str) -> None:
        self._entries[key] = caption
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


UPSAMPLE_CACHE = CaptionCache()  # process-wide: pipelines with the same weights share their captions


def accept_caption(raw: str) -> tuple[str | None, str]:
    """(the canonical compact caption, "") when `raw` is a valid structured caption, else (None, why)."""
    text = raw.strip()
    if not text.startswith("{"):
        return None, f"not a JSON object: {text[:60]!r}"
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"does not parse ({e.msg} at column {e.colno}; cut off by max_new_tokens?)"
    if not isinstance(parsed, dict):
        return None, "not a JSON object"
    caption = serialize_caption(parsed)
    issues = validate_caption(caption)
    if issues:
        return None, "; ".join(str(i) for i in issues[:3])
    return caption, ""


_TOKENS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> its cache token


def _identity(module) -> str:
    """A token naming this module object for as long as it lives (ids get reused after GC)."""
    return _TOKENS.setdefault(module, uuid.uuid4().hex)


class CaptionWriter:
    """Prompt upsampling over a text encoder (Ideogram4TextEncoder) and its tokenizer, with its own state:
    the LM head (`load_prompt_enhancer_head()`, or `head=`: an `nn.Linear(hidden, vocab)`), the caption
    model built around it, the caption cache and a count of generations.

    `info["fingerprints"]["text_encoder"]` names the encoder's weights in the (process-wide) cache key;
    `device` is where to generate (default: where the encoder is); `offload=True` moves the encoder
    and head there for the generation and back, as the pipeline does to encode.
    """

    def __init__(
        self,
        text_encoder,
        tokenizer,
        info: dict | None = None,
        *,
        head=None,
        device=None,
        offload: bool = False,
        cache: CaptionCache = UPSAMPLE_CACHE,
    ):
        self.text_encoder, self.tokenizer, self.info = text_encoder, tokenizer, info or {}
        self.head = head
        self.device, self.offload = device, offload
        self.cache = cache
        self.generations = 0  # generate() runs of this writer (retries included); cache hits run none
        self._built: tuple = (None, None, None)  # (head, caption model, outlines processor or None)

    @classmethod
    def from_pretrained(cls, source: str, *, device: str = "cpu", torch_dtype=None, revision: str | None = None):
        """The text encoder and tokenizer of an Ideogram 4 checkpoint folder or repo id (nothing else is read)."""
        import torch

        from ..checkpoints import load_text_encoder
        from ..prompts import bundled_tokenizer_dir, load_tokenizer

        where = parse_source(source)
        root = where.path if where.is_local else hub_folder(where.repo_id, ["text_encoder/*", "tokenizer/*"], revision)
        if not (root / "text_encoder").is_dir():
            raise UpsampleError(
                f"{source} has no text_encoder/ folder: give an Ideogram 4 checkpoint folder or repo id"
            )
        text_encoder, te_info = load_text_encoder(root / "text_encoder", torch_dtype or torch.bfloat16, device)
        tokenizer = load_tokenizer(root / "tokenizer" if (root / "tokenizer").is_dir() else bundled_tokenizer_dir())
        return cls(text_encoder, tokenizer, {"fingerprints": {"text_encoder": te_info["fingerprint"]}})

    def load_prompt_enhancer_head(self, head: str | None = None, *, revision: str | None = None):
        """Read the LM head (file, folder or hub repo id; default DEFAULT_HEAD) next to the text encoder."""
        import torch

        from ..checkpoints import SafetensorsReader, fingerprint

        files = head_files(head, revision)
        reader = SafetensorsReader(files)
        keys = reader.keys()
        weight = next((k for k in keys if k.endswith("lm_head.weight")), None)
        weight = weight or next((k for k in keys if k.endswith("weight") and len(reader.shape(k)) == 2), None)
        lm = self.text_encoder.language_model
        hidden, vocab = lm.config.hidden_size, lm.config.vocab_size
        if weight is None or reader.shape(weight) != (vocab, hidden):
            found = reader.shape(weight) if weight else "no 2-D weight"
            raise UpsampleError(
                f"head={head or DEFAULT_HEAD!r} ({files[0]}) holds {found}; this text encoder needs an LM head of "
                f"shape ({vocab}, {hidden}): use the head made for it ({DEFAULT_HEAD!r} for Qwen3-VL-8B)"
            )
        bias = weight[: -len("weight")] + "bias"
        ref = next(lm.parameters())
        linear = torch.nn.Linear(hidden, vocab, bias=bias in keys, device="meta")
        state = {"weight": reader.get(weight)} | ({"bias": reader.get(bias)} if bias in keys else {})
        linear.load_state_dict({k: v.to(ref.device, ref.dtype) for k, v in state.items()}, assign=True)
        self.head = linear.eval().requires_grad_(False)
        _TOKENS[self.head] = "file:" + fingerprint(files)  # the same file read again is the same head
        return self.head

    def upsample_prompt(
        self,
        text: str,
        height: int = 1024,
        width: int = 1024,
        seed: int = 0,
        *,
        temperature: float | None = None,
        max_new_tokens: int = 1024,
        attempts: int = 3,
        constrained: bool | None = None,
    ) -> str:
        """A plain prompt -> the compact structured caption (what the text encoder will read).

        Seeded and deterministic: the same (prompt, seed, aspect ratio, settings, weights) gives the same
        caption, from the process-wide cache after the first time. A prompt that is already a structured
        caption is returned serialised, unchanged. `constrained`: schema-constrained decoding with
        `outlines` (None: when installed). Raises UpsampleError when no valid caption came in `attempts`.
        """
        from diffusers.pipelines.ideogram4.prompt_enhancer import PROMPT_UPSAMPLE_TEMPERATURE

        parsed = parse_caption(text)
        if isinstance(parsed, dict):
            return serialize_caption(parsed)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text={text!r}: give a non-empty plain prompt to upsample")
        if self.head is None:
            raise UpsampleError(
                "prompt upsampling needs the LM head: call load_prompt_enhancer_head() first "
                f"(default {DEFAULT_HEAD!r}, or a local file/folder)"
            )
        temperature = PROMPT_UPSAMPLE_TEMPERATURE if temperature is None else temperature
        constrained = constrained_decoding_available() if constrained is None else constrained
        key = (
            self._upsample_weights_key(),
            text,
            int(seed),
            aspect_ratio(height, width),
            float(temperature),
            int(max_new_tokens),
            bool(constrained),
        )
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        caption = self._write_caption(text, height, width, seed, temperature, max_new_tokens, attempts, constrained)
        self.cache.put(key, caption)
        return caption

    def _upsample_weights_key(self) -> tuple[str, str]:
        fingerprints = self.info.get("fingerprints") or {}
        text_encoder = fingerprints.get("text_encoder")
        te_key = f"file:{text_encoder}" if text_encoder else _identity(self.text_encoder)
        return te_key, _identity(self.head)

    def _caption_enhancer(self, constrained: bool):
        """The generative model (shared encoder body + head) and the outlines processor, built once per head."""
        head, model, processor = self._built
        if head is not self.head:
            head, model, processor = (
                self.head,
                build_caption_model(self.text_encoder.language_model, self.head, self.tokenizer),
                None,
            )
        if constrained and processor is None:
            if not constrained_decoding_available():
                raise UpsampleError("constrained=True needs `outlines`: pip install 'ideogram4-runner[upsample]'")
            from diffusers.pipelines.ideogram4.prompt_enhancer import build_caption_logits_processor

            processor = build_caption_logits_processor(model, self.tokenizer)
        if not constrained and not constrained_decoding_available():
            log.warning("`outlines` is not installed: captions are generated unconstrained, checked and retried")
        self._built = (head, model, processor)
        return model, processor if constrained else None

    def _write_caption(self, text, height, width, seed, temperature, max_new_tokens, attempts, constrained) -> str:
        import torch
        from diffusers.pipelines.ideogram4.prompt_enhancer import generate_captions

        model, processor = self._caption_enhancer(constrained)
        # One generator for all attempts: each attempt draws its own sampling seed from it, so the
        # sequence of tries, and so the result, is fixed by `seed`.
        generator = torch.Generator().manual_seed(int(seed))
        reasons = []
        with self._encoder_on_device() as device:
            for _ in range(max(1, attempts)):
                self.generations += 1
                (raw,) = generate_captions(
                    model,
                    self.tokenizer,
                    processor,
                    text,
                    height,
                    width,
                    temperature=temperature,
                    max_new_tokens=max_new_tokens,
                    generator=generator,
                    device=device,
                )
                caption, why = accept_caption(raw)
                if caption is not None:
                    return caption
                reasons.append(why)
        raise UpsampleError(
            f"no valid caption for {text[:60]!r} in {len(reasons)} attempt(s) (seed={seed}): {reasons[-1]}. "
            "Raise max_new_tokens or attempts, try another seed"
            + ("" if constrained else ", or install `outlines` for schema-constrained decoding")
        )

    @contextlib.contextmanager
    def _encoder_on_device(self):
        """The device to generate on; with `offload_text_encoder`, the encoder (and head) visit `device`."""
        import torch

        home = next(self.text_encoder.parameters()).device
        target = torch.device(self.device or home)
        move = self.offload and target != home
        if move:
            self.text_encoder.to(target)
            self.head.to(target)
        try:
            yield target if move else home
        finally:
            if move:
                self.text_encoder.to(home)
                self.head.to(home)


def build_caption_model(language_model, head, tokenizer):
    """Qwen3VLForConditionalGeneration around the encoder's own language model and the head (no copy
    of the body); the vision tower is never built. Stops at the end of the assistant turn."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    text_config = language_model.config
    # A token-sized vision config: the tower is dropped right after construction (text only).
    vision = dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=1, out_hidden_size=text_config.hidden_size)
    config = Qwen3VLConfig(text_config=text_config.to_dict(), vision_config=vision)
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(config)
    model.model.language_model = language_model
    model.model.visual = None
    model.lm_head = head
    stop = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    model.generation_config.eos_token_id = stop
    model.generation_config.pad_token_id = stop[0]
    return model.eval()
