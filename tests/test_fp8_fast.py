"""The fp8 fast path, checked on the CPU (torch 2.13 runs `torch._scaled_mm` with fp8 operands there).

- The fused activation quantiser (inductor-compiled on CUDA) is the eager reference bit for bit.
- A FeedForward in fp8_matmul quantises its input once for w1 and w3 and computes both in one GEMM
  (w1|w3 laid out as one tensor), w2 multiplies in fp8 too; the result is the emulated fp32
  arithmetic, and within the fp8 gate of the reference (weight-only) path.
- The layout survives deepcopy and Module.to; LoRA hooks still apply; `fp8_fast_accum` reaches every
  `_scaled_mm`; dequantize_once frees each fp8 Linear as its float twin appears (no fp8 + bf16 peak);
  fp8_mode="auto" follows its documented rule.
"""

import copy
import gc
import weakref
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ideogram4.models import quant
from ideogram4.models.quant import Fp8Linear
from ideogram4.models.transformer import FeedForward
from ideogram4.tiny import TINY_DIT

FP8_REL_TOL = 0.06  # tests/test_fp8_modes.py: e4m3 activations, ~3.6 % relative RMS


def rel_err(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


class CountScaledMm(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._scaled_mm.default:
            named = dict(zip((a.name for a in func._schema.arguments), args), **kwargs)
            self.calls.append({"shape_b": tuple(args[1].shape), "use_fast_accum": named.get("use_fast_accum", False)})
        return func(*args, **kwargs)


def fp8_feed_forward(seed=0) -> FeedForward:
    torch.manual_seed(seed)
    return quant.quantize_linears(FeedForward(TINY_DIT).eval(), "fp8_matmul")


def fused_layout_holds(ff: FeedForward) -> bool:
    w1, w3 = ff.w1.weight, ff.w3.weight
    same = w1.untyped_storage().data_ptr() == w3.untyped_storage().data_ptr()
    return ff.gate_up_fused and same and w3.storage_offset() == w1.storage_offset() + w1.numel()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_quantizer_equals_the_eager_reference_bit_for_bit(dtype):
    """Inductor's one-kernel quantiser vs the eager one, over token counts (dynamic: one compile)."""
    g = torch.Generator().manual_seed(0)
    for tokens in (5, 64, 301):
        spread = torch.logspace(-3, 3, tokens)[:, None]  # rows from tiny to huge: per-row scales differ
        x = (torch.randn(tokens, 96, generator=g) * spread).to(dtype)
        fused_q, fused_s = quant.fused_quantize_per_token(x)
        eager_q, eager_s = quant.quantize_per_token(x)
        assert fused_q.dtype == eager_q.dtype == quant.FP8_DTYPE
        assert torch.equal(fused_q.view(torch.uint8), eager_q.view(torch.uint8))
        assert torch.equal(fused_s, eager_s) and fused_s.shape == (tokens, 1)


def test_feed_forward_quantises_once_per_input_and_fuses_w1_w3(monkeypatch):
    ff = fp8_feed_forward()
    assert fused_layout_holds(ff)
    assert {m.mode for m in (ff.w1, ff.w2, ff.w3)} == {"fp8_matmul"}
    quantised = []
    real = quant.quantize_activations
    monkeypatch.setattr(quant, "quantize_activations", lambda x2: quantised.append(x2.shape) or real(x2))
    x = torch.randn(2, 9, TINY_DIT.emb_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), CountScaledMm() as mm:
        y = ff(x)
    inter, d = TINY_DIT.intermediate_size, TINY_DIT.emb_dim
    assert quantised == [(18, d), (18, inter)]  # the block input once (w1 and w3), w2's input once
    assert [c["shape_b"] for c in mm.calls] == [(d, 2 * inter), (inter, d)]  # one GEMM for w1|w3, one for w2

    # Oracle: the same arithmetic emulated in fp32, from the quantised values.
    def emulated(m, v):
        vq, vs = quant.quantize_per_token(v.reshape(-1, v.shape[-1]))
        return ((vq.float() * vs) @ (m.weight.float() * m.weight_scale[:, None]).T).reshape(*v.shape[:-1], -1)

    with torch.no_grad():
        gate, up = emulated(ff.w1, x), emulated(ff.w3, x)
        expected = emulated(ff.w2, torch.nn.functional.silu(gate) * up)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)

    reference = copy.deepcopy(ff)  # the release's weight-only path: same fp8 weights, bf16/fp32 activations
    for m in (reference.w1, reference.w2, reference.w3):
        m.mode = "dequantize_per_call"
    reference.gate_up_fused = False
    with torch.no_grad():
        assert 1e-3 < rel_err(y, reference(x)) < FP8_REL_TOL


def test_fused_layout_survives_deepcopy_to_and_assign_loads():
    ff = fp8_feed_forward()
    x = torch.randn(3, TINY_DIT.emb_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = ff(x)
        twin = copy.deepcopy(ff)
        ff.to("cpu")
        assert fused_layout_holds(twin) and fused_layout_holds(ff)
        assert torch.equal(twin(x), before) and torch.equal(ff(x), before)
        unfused = copy.deepcopy(ff)
        unfused.gate_up_fused = False  # two GEMMs from the shared quantisation
        assert torch.equal(unfused(x), before)
        reloaded = fp8_feed_forward(seed=1)
        reloaded.load_state_dict(ff.state_dict(), assign=True)  # new tensors for w1 and w3
        assert fused_layout_holds(reloaded) and torch.equal(reloaded(x), before)


def test_lora_on_a_fused_w1_still_applies():
    from ideogram4.models import lora

    ff = fp8_feed_forward()
    g = torch.Generator().manual_seed(3)
    A = torch.randn(4, TINY_DIT.emb_dim, generator=g) * 0.1
    B = torch.randn(TINY_DIT.intermediate_size, 4, generator=g) * 0.1
    x = torch.randn(5, TINY_DIT.emb_dim, generator=g)
    with torch.no_grad():
        base = ff(x)
        lora.attach(ff.w1, "style", A, B, scale=0.7)
        with_lora = ff(x)
        per_module = copy.deepcopy(ff)  # each Linear called as a module: the hook runs as torch runs it
        per_module.w1.mode = per_module.w3.mode = "dequantize_per_call"
        per_module.gate_up_fused = False
        gate = per_module.w1(x) - torch.nn.functional.linear(x, per_module.w1.dequantized_weight(x.dtype))
    assert (with_lora - base).abs().max() > 1e-3
    # the LoRA's own contribution to the gate is exactly 0.7 * B A x
    torch.testing.assert_close(gate, 0.7 * (x @ A.T) @ B.T, rtol=1e-5, atol=1e-6)
    lora.set_scale(ff.w1, "style", 0.0)
    with torch.no_grad():
        assert torch.equal(ff(x), base)


@pytest.mark.slow
@pytest.mark.parametrize("fast", [False, True])
def test_fast_accum_option_reaches_every_scaled_mm(tiny_fp8, fast):
    from ideogram4 import Ideogram4Pipeline

    pipe = Ideogram4Pipeline.from_pretrained(
        tiny_fp8, torch_dtype=torch.float32, device="cpu", fp8_mode="fp8_matmul", fp8_fast_accum=fast
    )
    assert pipe.describe()["fp8_fast_accum"] is fast
    with CountScaledMm() as mm:
        pipe.generate(["a fox"], [0], height=32, width=32, num_inference_steps=1, output_type="latent", progress=False)
    assert mm.calls and {c["use_fast_accum"] for c in mm.calls} == {fast}


@pytest.mark.slow
def test_dequantize_once_frees_each_fp8_linear_as_it_goes(monkeypatch):
    """The load peak is the model plus one float Linear: when the k-th fp8 Linear is converted, the
    k-1 before it are already gone (a list of (name, module) pairs would keep them all alive)."""
    from ideogram4.models.transformer import Ideogram4Transformer

    torch.manual_seed(0)
    model = quant.quantize_linears(Ideogram4Transformer(TINY_DIT), "dequantize_per_call")
    refs = [weakref.ref(m) for m in model.modules() if isinstance(m, Fp8Linear)]
    alive_at_call = []
    real = Fp8Linear.to_linear

    def counting(self, dtype):
        gc.collect()
        alive_at_call.append(sum(r() is not None for r in refs))
        return real(self, dtype)

    monkeypatch.setattr(Fp8Linear, "to_linear", counting)
    quant.materialize_fp8(model, torch.float32)
    assert alive_at_call == list(range(len(refs), 0, -1))
    assert not any(isinstance(m, Fp8Linear) for m in model.modules())


def load_options(fp8_mode: str, offload_transformers: bool = False):
    from ideogram4.checks import check_load_options

    flags = dict(load_unconditional=True, offload_text_encoder=False, vae_tiling=False)
    return check_load_options(
        torch.bfloat16, "cpu", fp8_mode, False, None, offload_transformers=offload_transformers, **flags
    )


def test_auto_fp8_mode_follows_the_documented_rule(tiny_fp8, monkeypatch):
    from ideogram4 import loading

    paths = {
        name: Path(tiny_fp8) / name for name in ("transformer", "unconditional_transformer", "text_encoder", "vae")
    }
    dits = loading.component_bytes(paths, "transformer") + loading.component_bytes(paths, "unconditional_transformer")
    need = (
        2 * dits  # bf16: 2 bytes per fp8 byte
        + loading.component_bytes(paths, "text_encoder")
        + loading.component_bytes(paths, "vae")
        + loading.FP8_AUTO_HEADROOM_BYTES
    )
    assert dits > 0
    monkeypatch.setattr(loading, "device_memory_bytes", lambda device: need)
    assert loading.choose_fp8_mode(paths, load_options("auto"))[0] == "dequantize_once"
    monkeypatch.setattr(loading, "device_memory_bytes", lambda device: need - 1)
    mode, why = loading.choose_fp8_mode(paths, load_options("auto"))
    assert mode == "dequantize_per_call" and "GiB" in why
    assert loading.choose_fp8_mode(paths, load_options("auto", True))[0] == "dequantize_per_call"
    assert loading.choose_fp8_mode(paths, load_options("fp8_matmul")) == ("fp8_matmul", "requested")


def test_default_fp8_mode_is_auto(tiny_fp8):
    from ideogram4 import Ideogram4Pipeline

    info = Ideogram4Pipeline.from_pretrained(tiny_fp8, torch_dtype=torch.float32, device="cpu").describe()
    assert info["fp8_mode"] == "dequantize_once" and info["fp8_mode_rule"].startswith("auto:")
    assert info["fp8_paths"] == {"float": info["fp8_paths"]["float"]}
