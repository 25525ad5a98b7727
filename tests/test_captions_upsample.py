"""Prompt upsampling with the tiny Qwen3-VL text encoder and a tiny random LM head.

A random head (tests/tiny_heads.py) writes random strings; schema-constrained decoding (outlines)
keeps them inside the caption schema.
"""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from tiny_heads import save_tiny_head, tiny_head

from ideogram4.captions.__main__ import main
from ideogram4.captions.upsample import UPSAMPLE_CACHE, CaptionWriter, UpsampleError, check_upsample_available
from ideogram4.prompts import serialize_caption, validate_caption

PROMPT = "a red fox asleep in the snow"
MAX_NEW = 300


@pytest.fixture(scope="module")
def head_dir(tiny_original, tmp_path_factory):
    return save_tiny_head(tiny_original, tmp_path_factory.mktemp("head"))


@pytest.fixture(scope="module")
def writer(tiny_original, head_dir):
    w = CaptionWriter.from_pretrained(tiny_original, device="cpu", torch_dtype=torch.float32)
    w.load_prompt_enhancer_head(str(head_dir))
    return w


@pytest.fixture(scope="module")
def captions(writer, tiny_original):
    """Seeds 0 and 1, then seed 0 again from scratch (cache emptied) by the full pipeline (through its
    caption writer): three generations."""
    from ideogram4.pipeline import Ideogram4Pipeline as Pipeline

    UPSAMPLE_CACHE.clear()
    first = {seed: writer.upsample_prompt(PROMPT, 768, 1024, seed, max_new_tokens=MAX_NEW) for seed in (0, 1)}
    UPSAMPLE_CACHE.clear()
    pipe = Pipeline.from_pretrained(tiny_original, torch_dtype=torch.float32, device="cpu")
    assert pipe.caption_writer is None  # no head loaded: no writer
    pipe.caption_writer = pipe.new_caption_writer(head=writer.head)
    again = pipe.upsample_prompt(PROMPT, 768, 1024, 0, max_new_tokens=MAX_NEW)
    assert pipe.caption_writer.generations == 1
    return first, again


@pytest.mark.slow
def test_upsampled_captions_are_schema_valid(captions):
    first, _ = captions
    for caption in first.values():
        parsed = json.loads(caption)
        assert validate_caption(caption) == [], caption
        assert list(parsed) == ["high_level_description", "compositional_deconstruction"]
        assert parsed["compositional_deconstruction"]["elements"], caption
        assert caption == serialize_caption(parsed)  # compact, official key order: what the encoder reads


def test_upsampling_is_deterministic_per_seed(captions):
    first, again = captions
    assert again == first[0]
    assert first[0] != first[1]


@pytest.mark.slow
def test_same_prompt_seed_and_aspect_is_a_cache_hit(writer, tiny_original, captions):
    first, _ = captions
    runs, hits = writer.generations, UPSAMPLE_CACHE.hits
    assert writer.upsample_prompt(PROMPT, 1536, 2048, 0, max_new_tokens=MAX_NEW) == first[0]  # 4:3 as 768x1024
    # Another pipeline over the same weight files shares the process-wide cache (a sweep rebuilds pipelines).
    twin = CaptionWriter.from_pretrained(tiny_original, device="cpu", torch_dtype=torch.float32)
    twin.head = writer.head
    assert twin.upsample_prompt(PROMPT, 768, 1024, 0, max_new_tokens=MAX_NEW) == first[0]
    assert (writer.generations, twin.generations) == (runs, 0)
    assert UPSAMPLE_CACHE.hits == hits + 2


def test_command_line_upsample_prints_the_same_caption(tiny_original, head_dir, captions, capsys):
    first, _ = captions
    args = ["upsample", PROMPT, "--model", tiny_original, "--head", str(head_dir), "--size", "1024x768"]
    assert main([*args, "--seed", "0", "--dtype", "float32", "--max-new-tokens", str(MAX_NEW)]) == 0
    assert capsys.readouterr().out == first[0] + "\n"


def test_a_structured_prompt_is_kept_as_it_is(writer):
    caption = {"compositional_deconstruction": {"background": "b", "elements": []}, "high_level_description": "x"}
    runs = writer.generations
    assert writer.upsample_prompt(caption) == serialize_caption(caption)
    assert writer.upsample_prompt(json.dumps(caption)) == serialize_caption(caption)
    assert writer.generations == runs


@pytest.mark.slow
def test_output_that_is_no_caption_is_retried_then_a_clear_error(tiny_original):
    w = CaptionWriter.from_pretrained(tiny_original, device="cpu", torch_dtype=torch.float32)
    w.head = tiny_head(w.tokenizer, seed=1, closing_bias=0.0)
    with pytest.raises(UpsampleError, match=r"no valid caption .* in 2 attempt\(s\) \(seed=5\): .*max_new_tokens"):
        w.upsample_prompt(PROMPT, 512, 512, 5, max_new_tokens=4, attempts=2, constrained=False)
    assert w.generations == 2


def test_without_a_head_the_error_says_how_to_load_one(tiny_original):
    w = CaptionWriter.from_pretrained(tiny_original, device="cpu", torch_dtype=torch.float32)
    with pytest.raises(UpsampleError, match="load_prompt_enhancer_head"):
        w.upsample_prompt(PROMPT)


def test_a_head_of_the_wrong_shape_is_refused(writer, tmp_path):
    save_file({"lm_head.weight": torch.zeros(1000, 32)}, tmp_path / "small.safetensors")
    with pytest.raises(UpsampleError, match=r"holds \(1000, 32\); .* shape \(151936, 32\)"):
        writer.load_prompt_enhancer_head(str(tmp_path / "small.safetensors"))


def test_check_upsample_available_fails_fast_without_torch(tmp_path, head_dir):
    assert check_upsample_available(str(head_dir)) == str(head_dir)
    with pytest.raises(UpsampleError, match="no .safetensors file there"):
        check_upsample_available(str(tmp_path))
    code = (
        "import sys; from ideogram4.captions.upsample import check_upsample_available, UpsampleError\n"
        "try:\n    check_upsample_available('nobody/no-such-head')\nexcept UpsampleError as e:\n    print(e)\n"
        "print('torch' in sys.modules)"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, **_pythonpath()})
    message, torch_loaded = out.stdout.strip().splitlines()
    assert "not in the local cache" in message and "hf download nobody/no-such-head" in message, out
    assert torch_loaded == "False"


def _pythonpath() -> dict:
    import os

    return {"PYTHONPATH": os.pathsep.join(sys.path)}
