"""The three fp8 compute modes agree (CPU: torch 2.13 runs `torch._scaled_mm` with fp8 operands).

Tolerance: weights are e4m3 in every mode; fp8_matmul additionally rounds each activation to e4m3
(3 mantissa bits: relative rounding error up to 2^-4, RMS about 2^-3/sqrt(12) = 3.6%). Errors of a
K-term dot product add in quadrature like the signal does, so the output's relative RMS error is
about 3.6% too; the tests allow 6%. The kernel itself is checked much tighter, against the same
arithmetic emulated in fp32.
"""

import copy

import pytest
import torch
import torch.nn as nn

from ideogram4.models import quant
from ideogram4.models.quant import FP8_DTYPE, Fp8Linear, fp8_paths, quantize_linears, quantize_rowwise

FP8_REL_TOL = 0.06


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def make_fp8_linear(in_f=256, out_f=96, bias=True, mode="dequantize_per_call", seed=0) -> Fp8Linear:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g) * 0.05
    q, s = quantize_rowwise(w)
    m = Fp8Linear(in_f, out_f, bias, mode)
    m.weight = nn.Parameter(q, requires_grad=False)
    m.weight_scale = nn.Parameter(s, requires_grad=False)
    if bias:
        m.bias = nn.Parameter(torch.randn(out_f, generator=g) * 0.1, requires_grad=False)
    return m


def run(m: Fp8Linear, x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "dequantize_once":
        return m.to_linear(x.dtype)(x)
    m = copy.deepcopy(m)
    m.mode = mode
    return m(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_three_modes_agree_within_fp8_tolerance(dtype):
    m = make_fp8_linear()
    x = torch.randn(3, 7, 256, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        per_call, once, mm = (run(m, x, mode) for mode in quant.FP8_MODES)
    assert per_call.dtype == once.dtype == mm.dtype == dtype
    assert per_call.shape == mm.shape == (3, 7, 96)
    assert torch.equal(per_call, once)
    err = rel_err(mm, per_call)
    assert 1e-3 < err < FP8_REL_TOL  # really quantised activations, within e4m3 precision


def test_scaled_mm_computes_the_emulated_product():
    """fp8_matmul = (x_fp8 * s_x) @ (w_fp8 * s_w)^T + b, with fp32 accumulation."""
    m = make_fp8_linear()
    x = torch.randn(10, 256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = run(m, x, "fp8_matmul")
        x_fp8, s_x = quant.quantize_per_token(x)
        assert x_fp8.dtype == FP8_DTYPE and s_x.shape == (10, 1)
        emulated = (x_fp8.float() * s_x) @ (m.weight.float() * m.weight_scale[:, None]).T + m.bias
    torch.testing.assert_close(y, emulated, rtol=1e-5, atol=1e-6)


def test_per_token_scales_isolate_outlier_rows():
    """One token 1000x larger does not coarsen the quantisation of the others (a per-tensor scale would)."""
    m = make_fp8_linear(bias=False)
    x = torch.randn(8, 256, generator=torch.Generator().manual_seed(3))
    x_out = x.clone()
    x_out[0] *= 1000
    with torch.no_grad():
        a = run(m, x, "fp8_matmul")[1:]
        b = run(m, x_out, "fp8_matmul")[1:]
    assert torch.equal(a, b)


def test_dequantize_once_equals_per_call_exactly_on_a_model():
    from ideogram4.models.transformer import Ideogram4Transformer, build_layout
    from ideogram4.tiny import TINY_DIT

    torch.manual_seed(0)
    ref = Ideogram4Transformer(TINY_DIT).eval()
    models = {mode: quantize_linears(copy.deepcopy(ref), mode) for mode in quant.FP8_MODES}
    assert fp8_paths(models["dequantize_once"]) == {"float": fp8_paths(ref)["float"]}
    assert set(fp8_paths(models["dequantize_per_call"])) == {"dequantize_per_call"}
    paths = fp8_paths(models["fp8_matmul"])
    # per block: qkv, o, w1, w3, w2 in fp8 matmuls; adaln_modulation protected
    assert paths["fp8_matmul"] == 5 * TINY_DIT.num_layers
    assert paths["dequantize_per_call"] == sum(paths.values()) - paths["fp8_matmul"]

    g = torch.Generator().manual_seed(4)
    layout = build_layout(TINY_DIT, [7], 4, 4, 1, "cpu", torch.float32)
    x = torch.randn(1, 16, 128, generator=g)
    text = torch.randn(1, 7, TINY_DIT.llm_features_dim, generator=g)
    t = torch.tensor([0.3])
    with torch.no_grad():
        out = {mode: m(x, t, layout, text) for mode, m in models.items()}
        exact = ref(x, t, layout, text)
    assert torch.equal(out["dequantize_once"], out["dequantize_per_call"])
    assert rel_err(out["dequantize_per_call"], exact) < FP8_REL_TOL  # weight quantisation only
    assert rel_err(out["fp8_matmul"], out["dequantize_per_call"]) < FP8_REL_TOL


def test_protected_layers_stay_weight_only():
    from ideogram4.models.transformer import Ideogram4Transformer
    from ideogram4.tiny import TINY_DIT

    with torch.device("meta"):
        model = Ideogram4Transformer(TINY_DIT)
    names = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    quant.swap_linears_for_fp8(model, names, "fp8_matmul")
    modes = {n: m.mode for n, m in model.named_modules() if isinstance(m, Fp8Linear)}
    assert modes["layers.0.attention.qkv"] == modes["layers.1.feed_forward.w1"] == "fp8_matmul"
    assert modes["layers.0.feed_forward.w2"] == "fp8_matmul"
    for name in (
        "llm_cond_proj",
        "layers.1.adaln_modulation",
        "adaln_proj",
        "t_embedding.mlp_in",
        "input_proj",
        "final_layer.linear",
        "final_layer.adaln_modulation",
    ):
        assert modes[name] == "dequantize_per_call", name
    with pytest.raises(ValueError, match="fp8_mode"):
        quant.swap_linears_for_fp8(model, names, "fp8_fast")
    with torch.device("meta"):
        model = Ideogram4Transformer(TINY_DIT)
    quant.swap_linears_for_fp8(model, names, "fp8_matmul", quant.FP8_MATMUL_PROTECTED_WITH_W2)
    assert model.get_submodule("layers.1.feed_forward.w2").mode == "dequantize_per_call"


def test_fp8_matmul_support_probe():
    assert quant.fp8_matmul_supported("cpu")
    if not torch.cuda.is_available():
        assert not quant.fp8_matmul_supported("cuda")


@pytest.mark.slow
def test_pipeline_fp8_modes_on_tiny_checkpoint(tiny_fp8):
    """The loader path: the same fp8 release in the three modes gives the same latents (within fp8)."""
    from ideogram4 import Ideogram4Pipeline

    latents = {}
    for mode in quant.FP8_MODES:
        pipe = Ideogram4Pipeline.from_pretrained(tiny_fp8, torch_dtype=torch.float32, device="cpu", fp8_mode=mode)
        assert pipe.describe()["fp8_mode"] == mode
        out = pipe.generate(
            ["a red fox"],
            [0],
            height=64,
            width=64,
            num_inference_steps=3,
            guidance_schedule=[7.0, 7.0, 3.0],
            output_type="latent",
            progress=False,
        )
        latents[mode] = out.latents
    assert torch.equal(latents["dequantize_once"], latents["dequantize_per_call"])
    noise = torch.randn(latents["fp8_matmul"].shape, generator=torch.Generator("cpu").manual_seed(0))
    # compare the denoising displacement (final - noise), not the noise both share
    assert rel_err(latents["fp8_matmul"] - noise, latents["dequantize_per_call"] - noise) < 2 * FP8_REL_TOL
