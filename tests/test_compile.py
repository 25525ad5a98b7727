"""torch.compile with the inductor backend, on the CPU (tiny model).

- Compiled output equals eager within COMPILE_ATOL: inductor fuses and reorders fp32 arithmetic
  (e.g. RMSNorm and the RoPE products in one kernel), so results move by float rounding, ~1e-6 per
  pass, a few passes per image. Default mode: regional (each block); the CUDA-graph modes
  ("reduce-overhead") compile the whole DiT as one graph and mark every denoising step.
- Prompts of different lengths do not recompile each time: only the sequence length is dynamic, so a
  new text length reuses the graph; with compile_mode="reduce-overhead" text is also padded to
  multiples of 64 tokens (masked), bounding the shapes CUDA graphs record. Counted with
  torch._dynamo's counters: at most 2 recompiles over 6 prompts. Without graphs text keeps its exact
  length: a one-prompt batch has no attention mask.
- The time spent compiling is reported as `compile_s`, apart from `sampling_s`.
"""

import pytest
import torch

from ideogram4 import Ideogram4Pipeline
from ideogram4.prompts import count_tokens

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


@pytest.mark.slow
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_inductor_matches_eager_without_recompiling_per_prompt(
    tiny_original, eager_latents, fresh_dynamo, monkeypatch, mode
):
    from ideogram4 import pipeline

    compiled = Ideogram4Pipeline.from_pretrained(
        tiny_original, torch_dtype=torch.float32, device="cpu", compile_blocks=True, compile_mode=mode
    )
    info = compiled.describe()
    graphs_mode = mode == "reduce-overhead"
    assert info["compile_blocks"] == "inductor" and info["compile_mode"] == (mode or "default")
    assert info["compile_scope"] == ("model" if graphs_mode else "blocks")
    assert compiled.text_bucket == (64 if graphs_mode else None) == info["text_bucket"]
    step_marks, masks = [], []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: step_marks.append(1))
    real_build = pipeline.build_layout
    monkeypatch.setattr(pipeline, "build_layout", lambda *a, **k: masks.append(real_build(*a, **k)) or masks[-1])
    outputs = generate_all(compiled)
    graphs = compiled_graphs()
    assert 1 <= graphs <= 3, f"{graphs} graphs compiled for {len(PROMPTS)} prompt lengths: at most 2 recompiles"
    for out, eager in zip(outputs, eager_latents):
        diff = (out.latents - eager).abs().max().item()
        assert diff < COMPILE_ATOL, f"compiled latents differ from eager by {diff:.2e}"
    assert eager_latents[0].abs().mean() > 0.1
    # one CUDA-graph step mark per denoising step, only where graphs replay
    assert len(step_marks) == (len(PROMPTS) * FAST["num_inference_steps"] if graphs_mode else 0)
    cond = [layout for layout in masks if layout.text_len]
    tokens = [count_tokens(compiled.tokenizer, p) for p in PROMPTS]  # chat template included
    if graphs_mode:  # bucketed: padded rows are masked out
        assert [c.text_len for c in cond] == [-(-n // 64) * 64 for n in tokens]
        assert [c.attn_mask is not None for c in cond] == [n % 64 != 0 for n in tokens]
    else:  # exact length: a one-prompt batch has no mask
        assert [c.text_len for c in cond] == tokens and all(c.attn_mask is None for c in cond)
    first, rest = outputs[0].timings, [o.timings for o in outputs[1:]]
    assert first["compile_s"] > 0.5 and first["sampling_s"] >= 0
    assert sum(t["compile_s"] for t in rest) < first["compile_s"]  # new lengths reuse the graphs


def test_text_buckets_are_masked_out(pipe, eager_latents):
    """Eager, padded to multiples of 64 tokens: the padded rows change nothing beyond float noise."""
    pipe.text_bucket = 64
    try:
        bucketed = [out.latents for out in generate_all(pipe)]
    finally:
        pipe.text_bucket = None
    for a, b in zip(bucketed, eager_latents):
        assert (a - b).abs().max().item() < 1e-5


@pytest.mark.slow
def test_compile_auto_is_off_on_the_cpu_and_graphs_refuse_offload(tiny_original):
    pipe = Ideogram4Pipeline.from_pretrained(tiny_original, torch_dtype=torch.float32, device="cpu")
    assert pipe.describe()["compile_blocks"] is False and pipe.describe()["compile_scope"] is None
    with pytest.raises(ValueError, match="offloaded transformers stream in") as e:
        Ideogram4Pipeline.from_pretrained(
            tiny_original, device="cpu", compile_blocks=True, compile_mode="max-autotune", offload_transformers=True
        )
    assert "compile_mode='max-autotune'" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "mode, graphs",
    [("default", False), ("max-autotune-no-cudagraphs", False), ("reduce-overhead", True), ("max-autotune", True)],
)
def test_every_cuda_graph_mode_compiles_the_whole_dit_with_text_buckets(mode, graphs):
    from ideogram4 import loading
    from ideogram4.checks import check_load_options

    flags = dict(load_unconditional=True, offload_text_encoder=False, offload_transformers=False, vae_tiling=False)
    opts = check_load_options(torch.float32, "cpu", "auto", True, mode, **flags)
    assert opts.cuda_graphs is graphs
    assert loading.text_bucket(opts) == (64 if graphs else None)
