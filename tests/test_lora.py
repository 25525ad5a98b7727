"""LoRA: every published layout, per-DiT target, scale changes without reloading, exact unload.

The oracle is diffusers 0.42.1 (`load_lora_weights` + `fuse_lora(lora_scale=s)`) on the same tiny
weights and the same noise; fp32 on the CPU. Files are written by `lora_writers.py`, one LoRA spelled
the way each trainer spells it.
"""

import hashlib
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from lora_writers import WRITERS, random_lora, reference_delta, write, write_diffsynth, write_kohya_flat

from ideogram4 import Ideogram4Pipeline, ModelConfig, rules
from ideogram4.lora import LoraError, linear_shapes, map_lora, read_lora
from ideogram4.models.lora import attach, detach, lora_path, set_scale
from ideogram4.tiny import dequantized_twin

STEPS = [5.0, 5.0, 2.0]
PROMPT = "a red fox in the snow"
LAYOUT_LORAS = {  # kohya with alpha != rank; PEFT with independent q/k/v A's and an alpha in its header
    "ai-toolkit": dict(alpha=None, split_qkv_a=False),
    "kohya": dict(alpha=2.0, split_qkv_a=False),
    "peft": dict(alpha=6.0, split_qkv_a=True),
    "diffsynth": dict(alpha=None, split_qkv_a=False),
}


def load(folder, **kw):
    return Ideogram4Pipeline.from_pretrained(str(folder), torch_dtype=torch.float32, device="cpu", **kw)


@pytest.fixture(scope="module")
def ours(tiny_original):
    """This module's own pipeline: a failing test must not leave a LoRA in the session-wide `pipe`."""
    p = load(tiny_original)
    yield p
    p.unload_lora()


@pytest.fixture(autouse=True)
def no_lora_left(request):
    yield
    if "ours" in request.fixturenames:
        request.getfixturevalue("ours").unload_lora()


@pytest.fixture(scope="module")
def reference(tiny_diffusers):
    from diffusers import Ideogram4Pipeline as DiffusersPipeline

    ref = DiffusersPipeline.from_pretrained(tiny_diffusers, dtype=torch.float32)
    ref.set_progress_bar_config(disable=True)
    return ref


@pytest.fixture(scope="module")
def shapes(ours):
    return linear_shapes(ours.transformer)


def noise(seed=3):
    return torch.randn((1, 16, 128), generator=torch.Generator().manual_seed(seed))


def sample(pipe, latents=None, prompt=PROMPT):
    return pipe.generate(
        [prompt],
        None,
        height=64,
        width=64,
        num_inference_steps=len(STEPS),
        guidance_schedule=STEPS,
        mu=0.0,
        std=1.5,
        final_step="clean",
        latents=noise() if latents is None else latents,
        output_type="latent",
        progress=False,
    ).latents


def sample_reference(ref):
    kw = dict(height=64, width=64, num_inference_steps=len(STEPS), guidance_schedule=STEPS, mu=0.0, std=1.5)
    return ref(PROMPT, latents=noise(), output_type="latent", **kw).images


def assert_close(a, b):
    """Final latents within 1e-4 of their scale."""
    tol = 1e-4 * max(1.0, b.abs().max().item())
    diff = (a - b).abs().max().item()
    assert diff < tol, f"latents differ by {diff:.2e} (tol {tol:.2e})"


def assert_untouched(pipe):
    """No LoRA anywhere: no registry entry, no hook child on any module."""
    assert pipe.loras == {}
    for net in (pipe.transformer, pipe.unconditional_transformer):
        assert not [n for n, m in net.named_modules() if lora_path(m) is not None]


def lora_file(tmp_path, shapes, layout="ai-toolkit", seed=0, **kw):
    lora = random_lora(shapes, rank=4, seed=seed, **{**LAYOUT_LORAS.get(layout, {}), **kw})
    return WRITERS[layout](tmp_path / f"{layout}-{seed}.safetensors", lora), lora


# --- parity with diffusers -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUT_LORAS))
def test_parity_with_diffusers_fuse_lora(layout, ours, reference, shapes, tmp_path):
    path, _ = lora_file(tmp_path, shapes, layout)
    base = sample(ours)
    assert_close(base, sample_reference(reference))
    name = ours.load_lora(path, scale=0.8)
    assert ours.loras[name].layout == layout
    with_lora = sample(ours)
    reference.load_lora_weights(str(path), adapter_name="t")
    try:
        reference.fuse_lora(lora_scale=0.8)
        expected = sample_reference(reference)
    finally:
        reference.unfuse_lora()
        reference.unload_lora_weights()
    assert (with_lora - base).abs().max() > 1e-2  # the LoRA really changes the image
    assert_close(with_lora, expected)
    ours.unload_lora(name)
    assert torch.equal(sample(ours), base)
    assert_untouched(ours)


# --- layouts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "writer, layout",
    [
        (WRITERS["ai-toolkit"], "ai-toolkit"),
        (WRITERS["kohya"], "kohya"),
        (write_kohya_flat, "kohya"),
        (WRITERS["peft"], "peft"),
        (WRITERS["diffsynth"], "diffsynth"),
        (lambda p, lora: write_diffsynth(p, lora, adapter_segment=True), "diffsynth"),
    ],
)
@pytest.mark.parametrize("alpha, split", [(None, False), (2.0, True)])
def test_each_layout_places_the_same_deltas(writer, layout, alpha, split, shapes, tmp_path):
    lora = random_lora(shapes, rank=4, alpha=alpha, split_qkv_a=split and layout == "peft")
    weights = map_lora(read_lora(writer(tmp_path / "x.safetensors", lora)), shapes)
    assert weights.layout == layout and weights.rank == 4
    assert set(weights.layers) == set(lora.layers)
    for name, (A, B) in weights.layers.items():
        torch.testing.assert_close(B @ A, reference_delta(lora, name), rtol=1e-5, atol=1e-7)
        if name.endswith(".qkv"):  # one shared A stays rank 4; three different A's fuse to rank 12
            assert A.shape[0] == (12 if lora.split_a else 4)


# --- runtime path, merge, scale ------------------------------------------------------------------


def test_runtime_path_equals_merged_and_unload_restores_bits(ours, shapes, tmp_path):
    path, _ = lora_file(tmp_path, shapes, "kohya")
    before = {k: v.clone() for k, v in ours.transformer.state_dict().items()}
    base = sample(ours)
    ours.load_lora(path, scale=0.7, name="rt")
    runtime = sample(ours)
    ours.unload_lora("rt")
    ours.load_lora(path, scale=0.7, name="merged", merge=True)
    info = ours.loras["merged"]
    assert info.merged and info.scale == 0.7
    qkv = ours.transformer.layers[0].attention.qkv
    assert not torch.equal(qkv.weight, before["layers.0.attention.qkv.weight"])
    assert lora_path(qkv).active() == []  # merged: no per-call work
    assert_close(sample(ours), runtime)
    ours.set_lora_scale("merged", 0.0)  # re-merged from the kept original: exactly the base
    assert torch.equal(qkv.weight, before["layers.0.attention.qkv.weight"])
    ours.set_lora_scale("merged", 0.7)
    assert_close(sample(ours), runtime)
    ours.unload_lora()
    after = ours.transformer.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert torch.equal(sample(ours), base)
    assert_untouched(ours)


def test_scale_changes_without_reload(ours, shapes, tmp_path):
    path, _ = lora_file(tmp_path, shapes, "ai-toolkit")
    base = sample(ours)
    name = ours.load_lora(path, scale=1.0)
    full = sample(ours)
    ours.set_lora_scale(name, 0.0)
    assert torch.equal(sample(ours), base)  # scale 0 is the base, bit for bit
    ours.set_lora_scale(name, 0.5)
    half = sample(ours)
    ours.unload_lora()
    ours.load_lora(path, scale=0.5)
    assert torch.equal(sample(ours), half)  # same as a fresh load at that scale
    assert (half - base).abs().max() > 1e-3 and (full - half).abs().max() > 1e-3


def test_stacked_loras_add_with_their_own_scales():
    base = nn.Linear(8, 6)
    g = torch.Generator().manual_seed(0)
    A1, B1, A2, B2 = (torch.randn(s, generator=g) for s in ((2, 8), (6, 2), (3, 8), (6, 3)))
    x = torch.randn(5, 8, generator=g)
    with torch.no_grad():
        y0 = base(x)
        attach(base, "a", A1, B1, 0.5)
        attach(base, "b", A2, B2, -2.0)
        expected = y0 + 0.5 * x @ A1.T @ B1.T - 2.0 * x @ A2.T @ B2.T
        torch.testing.assert_close(base(x), expected)
        set_scale(base, "a", 0.0)
        torch.testing.assert_close(base(x), y0 - 2.0 * x @ A2.T @ B2.T)
        detach(base, "b")
        assert torch.equal(base(x), y0)  # only "a" at scale 0 left: the hook adds nothing
        detach(base, "a")
    assert lora_path(base) is None and not base._forward_hooks


def test_two_loras_stack_in_the_pipeline(ours, shapes, tmp_path):
    path, _ = lora_file(tmp_path, shapes, "ai-toolkit")
    ours.load_lora(path, scale=0.3, name="a")
    ours.load_lora(path, scale=0.5, name="b")
    assert list(ours.loras) == ["a", "b"]
    stacked = sample(ours)
    ours.unload_lora()
    ours.load_lora(path, scale=0.8)
    assert_close(stacked, sample(ours))


def test_nf4_like_packed_linear_runs_the_runtime_path_and_refuses_merge():
    """Any Linear-like base works (bitsandbytes' Linear4bit subclasses nn.Linear with packed weights)."""

    class Packed(nn.Linear):
        pass

    base = Packed(8, 6, bias=False)
    A, B = torch.randn(2, 8), torch.randn(6, 2)
    x = torch.randn(3, 8)
    with torch.no_grad():
        y0 = base(x)
        attach(base, "a", A, B, 1.0)
        torch.testing.assert_close(base(x), y0 + x @ A.T @ B.T)
    from ideogram4.models.lora import merge_refusal

    assert "Packed" in merge_refusal(base)


# --- fp8 bases -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp8_twin(tiny_fp8, tmp_path_factory):
    return load(dequantized_twin(tiny_fp8, tmp_path_factory.mktemp("twin") / "twin"))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dequantize_per_call", "dequantize_once", "fp8_matmul"])
def test_fp8_base_plus_lora_equals_dequantised_base_plus_lora(mode, tiny_fp8, fp8_twin, shapes, tmp_path):
    path, _ = lora_file(tmp_path, shapes, "kohya")
    fp8 = load(tiny_fp8, fp8_mode=mode)
    base = sample(fp8)
    twin_base = sample(fp8_twin)
    fp8.load_lora(path, scale=0.8)
    fp8_twin.load_lora(path, scale=0.8)
    try:
        a, b = sample(fp8), sample(fp8_twin)
    finally:
        fp8_twin.unload_lora()
    if mode == "fp8_matmul":  # e4m3 activations on the base path: the tolerance of test_pipeline's fp8_matmul test
        rel = ((a - b).abs().mean() / b.abs().mean()).item()
        base_rel = ((base - twin_base).abs().mean() / twin_base.abs().mean()).item()
        assert 0 < rel < 0.05 and rel < 2 * base_rel, (rel, base_rel)
    else:
        assert_close(a, b)
    assert (a - base).abs().max() > 1e-2
    fp8.unload_lora()
    assert torch.equal(sample(fp8), base)


def test_fp8_runtime_path_is_exact_beside_the_fp8_matmul():
    from ideogram4.models.quant import quantize_linears

    net = quantize_linears(nn.Sequential(nn.Linear(32, 48, bias=False)), "fp8_matmul")
    fp8 = net[0]
    A, B = torch.randn(4, 32), torch.randn(48, 4)
    x = torch.randn(5, 32)
    with torch.no_grad():
        y0 = fp8(x)
        attach(fp8, "a", A, B, 0.25)
        assert torch.equal(fp8(x), y0 + lora_path(fp8)(x))


@pytest.mark.slow
def test_merge_on_fp8_is_refused_and_nothing_changes(tiny_fp8, shapes, tmp_path):
    path, _ = lora_file(tmp_path, shapes)
    fp8 = load(tiny_fp8, fp8_mode="dequantize_per_call")  # fp8 weights kept (auto would dequantize here)
    with pytest.raises(LoraError, match=r"merge=True needs float.*Fp8Linear.*merge=False"):
        fp8.load_lora(path, merge=True)
    assert_untouched(fp8)


# --- bad files: one clear error, pipeline unchanged ----------------------------------------------


def _bad_files(tmp_path, shapes):
    good, lora = lora_file(tmp_path, shapes, "ai-toolkit")
    from safetensors.torch import load_file

    tensors = load_file(str(good))
    unknown = dict(tensors)
    unknown["diffusion_model.layers.0.attention.gate.lora_A.weight"] = torch.zeros(4, 64)
    unknown["diffusion_model.text_encoder.layers.0.q.lora_A.weight"] = torch.zeros(4, 64)
    wide = {
        k: (torch.zeros(v.shape[0], 2 * v.shape[1]) if ".lora_A." in k and "layers.1.feed_forward.w2" in k else v)
        for k, v in tensors.items()
    }
    half = {k: v for k, v in tensors.items() if "layers.1.attention.o.lora_B" not in k}
    dora = dict(tensors, **{"diffusion_model.layers.0.attention.o.dora_scale": torch.ones(1, 64)})
    data = good.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) * 2 // 3])
    return {
        "unknown": (write(tmp_path / "unknown.safetensors", unknown), r"2 of .*attention\.gate.*Layouts tried"),
        "shape": (
            write(tmp_path / "wide.safetensors", wide),
            r"layers\.1\.feed_forward\.w2 is \[out 64, in 128\].*A \(4, 256\)",
        ),
        "half": (write(tmp_path / "half.safetensors", half), r"layers\.1\.attention\.o has no B"),
        "dora": (write(tmp_path / "dora.safetensors", dora), r"DoRA \(dora_scale\)"),
        "truncated": (tmp_path / "truncated.safetensors", r"truncated\.safetensors is truncated or corrupt"),
        "missing": (tmp_path / "nope.safetensors", r"nope\.safetensors.*does not exist"),
    }


@pytest.mark.parametrize("case", ["unknown", "shape", "half", "dora", "truncated", "missing"])
def test_bad_lora_files_fail_clearly_before_any_change(case, ours, shapes, tmp_path):
    path, message = _bad_files(tmp_path, shapes)[case]
    base = sample(ours)
    with pytest.raises(LoraError, match=message):
        ours.load_lora(path, target="both")
    assert_untouched(ours)
    assert torch.equal(sample(ours), base)


def test_bad_arguments(ours, shapes, tmp_path):
    path, _ = lora_file(tmp_path, shapes)
    with pytest.raises(LoraError, match="target='cond'"):
        ours.load_lora(path, target="cond")
    with pytest.raises(LoraError, match="finite number"):
        ours.load_lora(path, scale=float("nan"))
    for bad in ("no way", "", ".hidden", 3):  # the runner's rule for lora.N.name (rules.lora_name_problems)
        with pytest.raises(LoraError, match=re.escape(str(rules.lora_name_problems("name", bad)[0]))):
            ours.load_lora(path, name=bad)
    assert_untouched(ours)
    ours.load_lora(path, name="x")
    with pytest.raises(LoraError, match="already loaded"):
        ours.load_lora(path, name="x")
    with pytest.raises(LoraError, match=r"no LoRA named 'y' is loaded \(loaded: 'x'\)"):
        ours.set_lora_scale("y", 1.0)
    with pytest.raises(LoraError, match="'loras/style.safetensors' does not exist"):  # not taken for a hub id
        ours.load_lora("loras/style.safetensors")
    with pytest.raises(LoraError, match="module must be pipe.transformer"):
        ours.load_lora(nn.Linear(2, 2), path)


# --- targets -------------------------------------------------------------------------------------


def velocity(net, seed=0):
    from ideogram4.models.transformer import build_layout

    g = torch.Generator().manual_seed(seed)
    x, t = torch.randn(1, 16, 128, generator=g), torch.tensor([0.4])
    layout = build_layout(net.config, None, 4, 4, 1, "cpu", torch.float32)
    with torch.no_grad():
        return net(x, t, layout)


@pytest.mark.parametrize(
    "target, changed",
    [
        ("transformer", {"transformer"}),
        ("unconditional_transformer", {"unconditional_transformer"}),
        ("both", {"transformer", "unconditional_transformer"}),
    ],
)
def test_target_selects_the_networks(target, changed, ours, shapes, tmp_path):
    path, _ = lora_file(tmp_path, shapes)
    nets = {"transformer": ours.transformer, "unconditional_transformer": ours.unconditional_transformer}
    before = {k: velocity(n) for k, n in nets.items()}
    ours.load_lora(path, target=target)
    assert ours.list_loras()[0]["target"] == target
    for k, n in nets.items():
        assert torch.equal(velocity(n), before[k]) == (k not in changed), k


def test_diffsynth_call_form(ours, shapes, tmp_path):
    path, _ = lora_file(tmp_path, shapes, "diffsynth")
    name = ours.load_lora(ours.unconditional_transformer, str(path), alpha=0.5)
    info = ours.loras[name]
    assert (info.target, info.scale, info.merged, info.layout) == ("unconditional_transformer", 0.5, False, "diffsynth")
    ours.clear_lora()
    ours.load_lora(ours.transformer, ModelConfig(path=str(path)), alpha=1.0)
    assert [(i.target, i.scale, i.merged) for i in ours.loras.values()] == [("transformer", 1.0, False)]


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((), dict(state_dict={})),  # the source is the first argument (a state dict too)
        ((), dict(lora_config="x.safetensors")),
        (("x.safetensors",), dict(alpha=0.5)),  # alpha belongs to DiffSynth's form; here it is scale
        (("x.safetensors",), dict(hotload=False)),  # merge=True
        (("MODULE", "x.safetensors"), dict(scale=0.5)),  # DiffSynth's form takes alpha
    ],
)
def test_one_spelling_per_argument(args, kwargs, ours):
    args = tuple(ours.transformer if a == "MODULE" else a for a in args)
    with pytest.raises(TypeError, match="unexpected keyword argument|missing 1 required"):
        ours.load_lora(*args, **kwargs)
    assert_untouched(ours)


@pytest.mark.slow
def test_without_unconditional_transformer(tiny_original, shapes, tmp_path):
    path, _ = lora_file(tmp_path, shapes)
    single = load(tiny_original, load_unconditional=False)
    with pytest.raises(LoraError, match="has none"):
        single.load_lora(path, target="unconditional_transformer")
    single.load_lora(path, target="both")  # the one network serves both branches
    assert lora_path(single.transformer.layers[0].attention.qkv) is not None


@pytest.mark.slow
def test_lora_added_after_regional_compile_is_applied(tiny_original, ours, shapes, tmp_path):
    path, _ = lora_file(tmp_path, shapes)
    compiled = load(tiny_original, compile_blocks="eager")
    base = sample(compiled)
    compiled.load_lora(path, scale=0.8)
    ours.load_lora(path, scale=0.8)
    assert (sample(compiled) - base).abs().max() > 1e-2
    assert_close(sample(compiled), sample(ours))  # the unconditional blocks (same code, no hooks) stay base
    compiled.set_lora_scale(compiled.list_loras()[0]["name"], 0.0)
    assert_close(sample(compiled), base)


# --- sources, identity, runner helpers -----------------------------------------------------------


def test_hub_sources_go_through_hf_hub_download(monkeypatch, ours, shapes, tmp_path):
    import huggingface_hub

    path, _ = lora_file(tmp_path, shapes)
    calls = []

    def fake_download(repo_id, filename, revision=None, **kw):
        calls.append((repo_id, filename, revision))
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    ours.load_lora("owner/repo/sub/style.safetensors", name="a")
    ours.load_lora("owner/repo", weight_name="style.safetensors", revision="abc123", name="b")
    assert calls == [("owner/repo", "sub/style.safetensors", None), ("owner/repo", "style.safetensors", "abc123")]
    with pytest.raises(LoraError, match="weight_name="):
        ours.load_lora("owner/repo")

    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*a, **kw):
        raise LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(LoraError, match="not in the local cache"):
        ours.load_lora("owner/repo/x.safetensors")


def test_listing_records_identity(ours, shapes, tmp_path):
    path, _ = lora_file(tmp_path, shapes, "kohya")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "style.safetensors").write_bytes(path.read_bytes())
    name = ours.load_lora(folder, scale=0.6)  # a folder with one LoRA file
    assert name == "style" and ours.load_lora(folder) == "style-2"
    info = ours.list_loras()[0]
    data = path.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["addnet_hash"] == hashlib.sha256(data[header_end:]).hexdigest()
    assert {k: info[k] for k in ("scale", "target", "layout", "rank", "merged", "layers")} == dict(
        scale=0.6, target="transformer", layout="kohya", rank=4, merged=False, layers=12
    )
    assert Path(info["path"]) == (folder / "style.safetensors").resolve()


def test_sync_loras_reuses_what_it_can(ours, shapes, tmp_path):
    a, _ = lora_file(tmp_path, shapes, seed=0)
    b, _ = lora_file(tmp_path, shapes, seed=1)
    assert read_lora(a) is read_lora(a)  # read once, then from the cache
    assert ours.lora_manager.sync({"s": {"source": a, "scale": 0.5}}) == {"s": "loaded"}
    assert ours.lora_manager.sync({"s": {"source": a, "scale": 1.0}}) == {"s": "rescaled"}
    assert ours.lora_manager.sync({"s": {"source": a, "scale": 1.0}}) == {"s": "kept"}
    assert ours.lora_manager.sync({"s": {"source": b, "scale": 1.0}, "t": {"source": a, "target": "both"}}) == {
        "s": "reloaded",
        "t": "loaded",
    }
    with pytest.raises(LoraError):
        ours.lora_manager.sync({"u": {"source": tmp_path / "nope.safetensors"}})
    assert set(ours.loras) == {"s", "t"}  # a bad spec changes nothing
    assert ours.lora_manager.sync({}) == {"s": "unloaded", "t": "unloaded"}
    assert_untouched(ours)


def test_state_dict_source(ours, shapes):
    lora = random_lora(shapes, rank=2)
    sd = {f"{k}.lora_A.weight": A for k, (A, _) in lora.layers.items()}
    sd.update({f"{k}.lora_B.weight": B for k, (_, B) in lora.layers.items()})
    name = ours.load_lora(sd)
    info = ours.loras[name]
    assert info.path is None and len(info.sha256) == 64 and info.layout == "diffsynth"


@pytest.mark.slow
def test_bench_lora_runs_at_tiny_size(tmp_path):
    """bench/bench_lora.py's bookkeeping (the numbers are for bench/RESULTS.md, not for CI)."""
    import json
    import sys

    bench = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench))
    try:
        import bench_lora
    finally:
        sys.path.remove(str(bench))
    out = tmp_path / "lora.json"
    args = ["--size", "tiny", "--resolution", "64", "--steps", "2", "--repeats", "1", "--rank", "8", "--out", str(out)]
    assert bench_lora.main(args) == 0
    res = json.loads(out.read_text())["results"][0]
    assert res["gate_pass"] and set(res["results"]) == {"base", "runtime", "runtime both", "merged"}
    assert res["results"]["runtime"]["paired_vs_base"]["step_cpu"]["n"] == 1
    # full model, rank 8: 8 (in + out) / (in * out) summed over qkv, o, w1, w2, w3
    assert abs(res["flop_overhead_full_model"] - 0.00246) < 1e-4


@pytest.mark.slow
def test_bf16_merge_restores_bits_and_matches_the_runtime_path(tiny_original, shapes, tmp_path):
    """In bf16, subtracting a merged delta again would not give the weights back; the kept copy does."""
    path, _ = lora_file(tmp_path, shapes, "kohya")
    bf16 = Ideogram4Pipeline.from_pretrained(str(tiny_original), torch_dtype=torch.bfloat16, device="cpu")
    before = {k: v.clone() for k, v in bf16.transformer.state_dict().items()}
    bf16.load_lora(path, scale=0.8, name="rt")
    runtime = sample(bf16)
    assert bf16.transformer.layers[0].attention.qkv.lora.get("rt").A.dtype == torch.bfloat16
    bf16.unload_lora()
    bf16.load_lora(path, scale=0.8, merge=True)
    merged = sample(bf16)
    bf16.unload_lora()
    after = bf16.transformer.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    rel = ((runtime - merged).abs().mean() / merged.abs().mean()).item()
    assert rel < 0.01  # bf16 rounding of the merged weights vs of the low-rank product
