"""FLOP and shape accounting of the full-size DiT, on the meta device (no weights, seconds).

`torch.utils.flop_counter.FlopCounterMode` counts matmuls (mm/addmm/bmm) and the SDPA ops it knows.
On meta tensors (ours) and on fake CPU tensors (diffusers, whose RoPE opens a CPU autocast region
that the meta device rejects) SDPA is run under the MATH backend, which decomposes into two bmm's
(QK^T and PV) that the counter does count: attention is therefore *measured*, not added by hand.
The closed form in `ideogram4.flops` counts exactly the same matmuls, so for our model the two
agree to the FLOP. diffusers additionally computes its RoPE angles as a (3, B, 128, 1) x (1, L)
matmul: 2 * 3 * (head_dim / 2) * L FLOPs (4.7 MFLOP, 4e-8 of a pass), the only tolerance used.
"""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ideogram4 import flops
from ideogram4.models.transformer import Ideogram4Config, Ideogram4Transformer, build_layout

FULL = Ideogram4Config()
T, GRID = 300, 64  # 1024^2 -> 64 x 64 = 4096 image tokens
N = GRID * GRID


@pytest.fixture(scope="module")
def dit():
    with torch.device("meta"):
        return Ideogram4Transformer(FULL).eval()


def count(fn) -> dict:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    per_op = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    return {"total": counter.get_total_flops(), **per_op}


def ours(dit, text_lengths, grid=GRID, batch=1):
    layout = build_layout(FULL, text_lengths, grid, grid, batch, "meta", torch.float32)
    x = torch.empty(batch, grid * grid, FULL.in_channels, device="meta")
    t = torch.empty(batch, device="meta")
    text = torch.empty(batch, max(text_lengths), FULL.llm_features_dim, device="meta") if text_lengths else None
    return count(lambda: dit(x, t, layout, text))


def test_param_count(dit):
    n = sum(p.numel() for p in dit.parameters())
    assert n == 9_279_288_448 == flops.param_count(FULL)
    # 17,698.8 MiB in bf16, the size the community conversions report
    assert round(n * 2 / 2**20, 1) == 17698.8
    from ideogram4.tiny import TINY_DIT

    assert flops.param_count(TINY_DIT) == sum(p.numel() for p in Ideogram4Transformer(TINY_DIT).parameters())


def test_closed_form_per_token_constants():
    assert flops.linear_flops_per_token(FULL) == pytest.approx(17.327e9, rel=1e-4)
    assert flops.text_proj_flops_per_token(FULL) == pytest.approx(490.7e6, rel=1e-4)
    assert flops.attention_flops(FULL, T + N) == 34 * 4 * (T + N) ** 2 * 4608
    assert flops.per_sample_flops(FULL) < 1e10  # "< 0.01 TFLOP, negligible"


@pytest.fixture(scope="module")
def cond_count(dit):
    return ours(dit, [T])


@pytest.fixture(scope="module")
def uncond_count(dit):
    return ours(dit, None)


def test_conditional_pass_matches_closed_form(cond_count):
    closed = flops.exact_pass_flops(FULL, T, N)
    assert cond_count["total"] == closed.total  # exact: the same matmuls, nothing else
    assert cond_count["aten.bmm"] == closed.attention == flops.attention_flops(FULL, T + N)
    # the text projection runs on the T text rows only: its addmm is T x 53248 x 4608
    assert cond_count["aten.addmm"] == closed.text_proj + closed.image_io + closed.per_sample
    assert cond_count["aten.mm"] == closed.linear == (T + N) * flops.linear_flops_per_token(FULL)
    # performance.md's per-pass formula (88.4 TFLOP) omits the in/out projections and per-sample work:
    # 2*2*128*4608*N + 0.74 GFLOP = 10.4 GFLOP, 1.2e-4 of the pass.
    assert closed.reference / 1e12 == pytest.approx(88.4, abs=0.05)
    assert closed.total == pytest.approx(closed.reference, rel=2e-4)


def test_unconditional_pass_matches_closed_form(uncond_count):
    closed = flops.exact_pass_flops(FULL, 0, N)
    assert uncond_count["total"] == closed.total
    assert closed.text_proj == 0  # never projects zero features
    assert closed.reference / 1e12 == pytest.approx(81.5, abs=0.05)


def test_masked_packed_batch_matches_closed_form(dit):
    """Two prompts of different lengths: left-padded to the longest, a (B,1,L,L) mask, all rows computed."""
    grid = 8
    counted = ours(dit, [5, 9], grid=grid, batch=2)
    assert counted["total"] == flops.exact_pass_flops(FULL, 9, grid * grid, batch=2).total


@pytest.fixture(scope="module")
def diffusers_counts():
    """(count, packed length) of diffusers' conditional and unconditional passes, one fake-tensor model."""
    from diffusers import Ideogram4Pipeline as DiffusersPipeline
    from diffusers import Ideogram4Transformer2DModel
    from torch._subclasses.fake_tensor import FakeTensorMode

    pad = flops.DIFFUSERS_MAX_SEQUENCE_LENGTH
    cond_ids = DiffusersPipeline._prepare_ids([T], GRID, GRID, pad, "cpu")  # position, segment, indicator
    uncond_ids = tuple(v[:, pad:] for v in cond_ids)  # the pipeline slices the image region for this pass
    results = []
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        model = Ideogram4Transformer2DModel().eval()
        for ids in (cond_ids, uncond_ids):
            length = ids[0].shape[1]
            x = torch.empty(1, length, FULL.in_channels)
            t = torch.empty(1)
            feats = torch.empty(1, length, FULL.llm_features_dim)
            pos, seg, ind = (mode.from_tensor(v) for v in ids)
            results.append(
                (
                    count(
                        lambda: model(
                            hidden_states=x,
                            timestep=t,
                            encoder_hidden_states=feats,
                            position_ids=pos,
                            segment_ids=seg,
                            indicator=ind,
                            return_dict=False,
                        )
                    ),
                    length,
                )
            )
    return results


@pytest.mark.slow
def test_diffusers_passes_match_padded_closed_form(diffusers_counts):
    for (counted, length), conditional in zip(diffusers_counts, (True, False)):
        closed = flops.padded_pass_flops(FULL, N, conditional=conditional)
        rope_matmul = 2 * 3 * (FULL.head_dim // 2) * length
        assert counted["total"] == closed.total + rope_matmul
    (cond, _), (uncond, _) = diffusers_counts
    assert cond["total"] / 1e12 == pytest.approx(133.1, abs=0.05)
    assert uncond["total"] / 1e12 == pytest.approx(83.5, abs=0.05)


def test_exact_packing_removes_the_expected_share(cond_count, uncond_count, diffusers_counts):
    (d_cond, _), (d_uncond, _) = diffusers_counts
    measured = (d_cond["total"] + d_uncond["total"]) / (cond_count["total"] + uncond_count["total"])
    assert measured == pytest.approx(1.275, abs=0.005)  # performance.md: 216.6 / 169.9 TFLOP per step
    schedule = [7.0] * 45 + [3.0] * 3
    ours_img = flops.image_flops(FULL, T, 1024, 1024, schedule)
    theirs_img = flops.image_flops(FULL, T, 1024, 1024, schedule, exact=False)
    assert theirs_img.total / ours_img.total == pytest.approx(measured, rel=1e-6)
    assert ours_img.reference / 1e15 == pytest.approx(8.16, abs=0.01)
    # 2048^2: attention dominates and 2048 text rows are a small share of 16384 image rows
    big = flops.image_flops(FULL, T, 2048, 2048, schedule)
    big_padded = flops.image_flops(FULL, T, 2048, 2048, schedule, exact=False)
    assert big.reference / 1e15 == pytest.approx(43.96, abs=0.01)
    assert big_padded.total / big.total == pytest.approx(1.09, abs=0.01)


def test_guidance_off_halves_the_passes():
    on, off = [7.0] * 48, [1.0] * 48
    assert flops.num_passes(on) == (48, 48) and flops.num_passes(off) == (48, 0)
    assert flops.num_passes(off, exact=False) == (48, 48)  # diffusers runs the unconditional pass anyway
    no_cfg = flops.image_flops(FULL, T, 1024, 1024, off)
    assert no_cfg.reference / 1e15 == pytest.approx(4.24, abs=0.01)
    assert flops.image_flops(FULL, T, 2048, 2048, off).reference / 1e15 == pytest.approx(22.3, abs=0.05)


def test_mfu_helpers():
    assert flops.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert flops.peak_flops("NVIDIA H100 PCIe", "fp8") == 1513e12
    assert flops.peak_flops("NVIDIA H200") == 989e12
    assert flops.peak_flops("cpu") is None
    useful = flops.image_flops(FULL, T, 1024, 1024, [7.0] * 45 + [3.0] * 3).reference
    assert flops.mfu(useful, 10.8, 989e12) == pytest.approx(0.76, abs=0.01)
