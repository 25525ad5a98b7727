"""clip_score with a tiny random CLIP saved like a hub model: loads from a folder and from the offline
Hugging Face cache, scores, and fails with one clear error when the weights are missing."""

import shutil

import pytest
from PIL import Image
from tiny_clip import save_tiny_clip

from ideogram4.metrics import MetricError, Scorer, get_metric


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def caption(description):
    return {"high_level_description": description, "compositional_deconstruction": {"background": "", "elements": []}}


def test_tiny_clip_loads_from_a_folder_and_scores(tiny_clip):
    clip = get_metric("clip_score")
    options = {"model": str(tiny_clip)}
    clip.check(options)
    red, blue = Image.new("RGB", (96, 64), (200, 30, 30)), Image.new("RGB", (96, 64), (30, 30, 200))
    result = clip.score_detailed(red, caption("a red square"), options)
    score = result.values["clip_score"]
    assert isinstance(score, float) and 0.0 <= score <= 100.0 and -1.0 <= result.details["cosine"] <= 1.0
    assert score == max(100 * result.details["cosine"], 0.0)
    assert clip.score(red, caption("a red square"), options) == result.values  # deterministic, engine reused
    other = clip.score_detailed(blue, caption("a red square"), options).details["cosine"]
    assert abs(other - result.details["cosine"]) > 1e-4  # the image matters
    assert clip.score(red, "a plain prompt", options)["clip_score"] is not None  # prose is the text
    long = clip.score_detailed(red, "word " * 200, options).details
    assert long["truncated"] and long["text_tokens"] > 77
    no_description = {"compositional_deconstruction": {"background": "", "elements": []}}
    assert clip.score(red, no_description, options) == {"clip_score": None}


def test_tiny_clip_loads_from_the_offline_hub_cache(tiny_clip, empty_hub_cache, monkeypatch):
    """A repo id found in the Hugging Face cache loads with the hub offline (a user's machine after
    `hf download`); the cache is laid out as huggingface_hub writes it."""
    snapshot = empty_hub_cache / "models--tiny--clip" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_clip, snapshot)
    (empty_hub_cache / "models--tiny--clip" / "refs").mkdir()
    (empty_hub_cache / "models--tiny--clip" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(empty_hub_cache))
    clip = get_metric("clip_score")
    clip.check({"model": "tiny/clip"})
    with Scorer(["clip_score"], {"clip_score": {"model": "tiny/clip"}}) as scorer:
        scorer.submit(0, Image.new("RGB", (40, 40), "white"), "a white page")
        [scored] = scorer.results().values()
    assert not scored.errors and scored.values["clip_score"] is not None


def test_missing_weights_fail_at_check_with_the_fix(empty_hub_cache, tmp_path):
    clip = get_metric("clip_score")
    with pytest.raises(MetricError) as info:
        clip.check({})
    message = str(info.value)
    assert "option 'model'" in message and "'openai/clip-vit-large-patch14' is not in the Hugging Face cache" in message
    assert "hf download openai/clip-vit-large-patch14" in message and "local folder" in message
    with pytest.raises(MetricError, match="folder .*nowhere does not exist"):
        clip.check({"model": str(tmp_path / "nowhere")})
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(MetricError, match="lacks model.safetensors or .* pytorch_model.bin"):
        clip.check({"model": str(tmp_path / "half")})


def test_unreachable_hub_fails_at_once_without_the_retry_loop(empty_hub_cache, monkeypatch):
    """Hub not switched off but not reachable (a closed loopback port): the check says so in one
    connection attempt; the hub client's download (which retries for ~20 s) is never called."""
    import socket
    import time

    from huggingface_hub import constants

    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("downloaded despite no hub"))
    start = time.monotonic()
    with pytest.raises(MetricError, match="hub cannot be reached; on a connected machine run `hf download"):
        get_metric("clip_score").check({})
    assert time.monotonic() - start < 5
