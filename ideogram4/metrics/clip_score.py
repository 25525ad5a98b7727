"""Prompt adherence at a glance: CLIP similarity of the image and the caption's high-level description.

clip_score = max(100 * cos(image embedding, text embedding), 0), the usual CLIPScore scale (as in
torchmetrics). The text is the caption's high_level_description, or the whole plain prompt, cut to the
model's text length (77 tokens for OpenAI CLIP; the details say when it was cut). Weights: the `model`
option, a Hugging Face repo id (read from the local cache; downloaded on first use only when the hub is
online) or a local folder holding a saved CLIPModel + CLIPProcessor.
"""

from __future__ import annotations

import functools
import threading

from ..sources import HUB_REPO, hub_offline, parse_source
from .registry import MetricError, MetricResult

NAME = "clip_score"
VERSION = "1"
KEYS = {"clip_score": "higher"}
PACKAGES = {"torch": "torch", "transformers": "transformers>=5.0"}
WEIGHTS = "a CLIP model: Hugging Face repo id or local folder (option 'model')"
OPTIONS = {"model": "openai/clip-vit-large-patch14", "device": "cpu"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")

_load_lock = threading.Lock()


def _fix(source: str) -> str:
    return (
        f"on a connected machine run `hf download {source}` (older hubs: `huggingface-cli download {source}`) "
        "so it is in the Hugging Face cache, or set option 'model' to a local folder holding a saved "
        "CLIPModel + CLIPProcessor"
    )


def _cached(source: str) -> list[str]:
    """The files of a hub model missing from the local cache ([] = complete enough to load offline)."""
    from huggingface_hub import try_to_load_from_cache

    def have(name: str) -> bool:
        try:
            return isinstance(try_to_load_from_cache(source, name), str)
        except Exception:  # an id the hub would reject is simply not cached
            return False

    missing = [] if have("config.json") else ["config.json"]
    for group in (WEIGHT_FILES, PROCESSOR_FILES):
        missing += [] if any(have(f) for f in group) else [" or ".join(group)]
    return missing


def check(options: dict) -> None:
    source = options["model"]
    where = parse_source(source)
    folder = where.path
    if where.is_local and folder.is_dir():
        missing = [] if (folder / "config.json").is_file() else ["config.json"]
        for group in (WEIGHT_FILES, PROCESSOR_FILES):
            missing += [] if any((folder / f).is_file() for f in group) else [" or ".join(group)]
        if missing:
            raise MetricError(f"metric 'clip_score' option 'model': folder {source} lacks {', '.join(missing)}")
        return
    if where.kind != HUB_REPO:
        raise MetricError(f"metric 'clip_score' option 'model': folder {source} does not exist")
    missing = _cached(source)
    if missing and hub_offline():
        raise MetricError(
            f"metric 'clip_score' option 'model': {source!r} is not in the Hugging Face cache (missing "
            f"{', '.join(missing)}) and the hub is offline (HF_HUB_OFFLINE); {_fix(source)}"
        )
    if missing and not _hub_reachable():
        raise MetricError(
            f"metric 'clip_score' option 'model': {source!r} is not in the Hugging Face cache (missing "
            f"{', '.join(missing)}) and the hub cannot be reached; {_fix(source)}"
        )
    if missing:
        _reach(source)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick connection to the hub's host: without it the hub client retries for ~20 s before failing."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _reach(source: str) -> None:
    """Online and not cached: fetch the small config now, so a wrong id or a gated repo fails at validation."""
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(source, "config.json")
    except Exception as e:
        raise MetricError(
            f"metric 'clip_score' option 'model': cannot get {source!r} from the hub ({type(e).__name__}: {e}); "
            + _fix(source)
        ) from None


@functools.cache
def _load_for(source: str, device: str):
    from transformers import CLIPModel, CLIPProcessor

    where = parse_source(source)
    local_only = hub_offline() or where.is_local
    source = str(where)
    model = CLIPModel.from_pretrained(source, local_files_only=local_only).eval().to(device)
    processor = CLIPProcessor.from_pretrained(source, local_files_only=local_only)
    return model, processor


def load(source: str, device: str = "cpu"):
    """The process-wide (CLIPModel, CLIPProcessor) for this source and device, loaded on first use."""
    with _load_lock:
        return _load_for(source, device)


def score_detailed(image, facts, options: dict) -> MetricResult:
    import torch

    text = facts.description
    if text is None:
        return MetricResult(values={"clip_score": None})
    model, processor = load(options["model"], options["device"])
    max_tokens = model.config.text_config.max_position_embeddings
    tokens = len(processor.tokenizer(text)["input_ids"])
    inputs = processor(
        text=[text], images=[image], return_tensors="pt", padding=True, truncation=True, max_length=max_tokens
    ).to(options["device"])
    with torch.inference_mode():
        out = model(**inputs)
    cosine = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).item()
    details = {"text": text, "text_tokens": tokens, "truncated": tokens > max_tokens, "cosine": cosine}
    return MetricResult(values={"clip_score": max(100.0 * cosine, 0.0)}, details=details)
