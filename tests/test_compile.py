"""Regional torch.compile with the inductor backend, on the CPU (tiny model).

- Compiled output equals eager within COMPILE_ATOL: inductor fuses and reorders fp32 arithmetic
  (e.g. RMSNorm and the RoPE products in one kernel), so results move by float rounding, ~1e-6 per
  pass, a few passes per image.
- Prompts of different lengths do not recompile each time: the blocks are compiled with dynamic
  sequence lengths, so a new text length reuses the graph; with compile_mode="reduce-overhead" text is
  also padded to multiples of 64 tokens (masked), bounding the shapes CUDA graphs record. Counted with
  torch._dynamo's counters: at most 2 recompiles over 6 prompts.
"""

import pytest
import torch

from ideogram4 import Ideogram4Pipeline

FAST = dict(height=64, width=64, num_inference_steps=3, guidance_schedule=[7.0, 7.0, 3.0], progress=False)
COMPILE_ATOL = 1e-4
PROMPTS = [
    "a cat",
    "a red fox in the snow",
    "a lighthouse on a cliff at dusk, gulls overhead, waves breaking on the rocks below",
    "a poster for a jazz night: " + "saxophone, " * 20,
    "an extremely detailed watercolor painting of a harbour town, " * 5,
    "a menu board listing " + ", ".join(f"dish number {i}" for i in range(30)),
]


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.fixture
def fresh_dynamo():
    """Compiled code is cached per code object (all Block.forward calls): start from none."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def generate_all(pipe):
    return [pipe.generate([p], [i], output_type="latent", **FAST) for i, p in enumerate(PROMPTS)]


@pytest.fixture(scope="module")
def eager_latents(pipe):
    lengths = {len(pipe.tokenizer(p)["input_ids"]) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS), "the prompts must have different token lengths"
    return [out.latents for out in generate_all(pipe)]


@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_inductor_blocks_match_eager_without_recompiling_per_prompt(tiny_original, eager_latents, fresh_dynamo, mode):
    compiled = Ideogram4Pipeline.from_pretrained(
        tiny_original, torch_dtype=torch.float32, device="cpu", compile_blocks=True, compile_mode=mode
    )
    info = compiled.describe()
    assert info["compile_blocks"] == "inductor" and info["compile_mode"] == (mode or "default")
    assert compiled.text_bucket == (64 if mode == "reduce-overhead" else None) == info["text_bucket"]
    outputs = generate_all(compiled)
    graphs = compiled_graphs()
    assert 1 <= graphs <= 3, f"{graphs} graphs compiled for {len(PROMPTS)} prompt lengths: at most 2 recompiles"
    for out, eager in zip(outputs, eager_latents):
        diff = (out.latents - eager).abs().max().item()
        assert diff < COMPILE_ATOL, f"compiled latents differ from eager by {diff:.2e}"
    assert eager_latents[0].abs().mean() > 0.1


def test_text_buckets_are_masked_out(pipe, eager_latents):
    """Eager, padded to multiples of 64 tokens: the padded rows change nothing beyond float noise."""
    pipe.text_bucket = 64
    try:
        bucketed = [out.latents for out in generate_all(pipe)]
    finally:
        pipe.text_bucket = None
    for a, b in zip(bucketed, eager_latents):
        assert (a - b).abs().max().item() < 1e-5
