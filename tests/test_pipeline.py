"""The pipeline on tiny checkpoints: formats, img2img, guidance variants, errors before heavy work."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ideogram4 import CheckpointError, Ideogram4Pipeline, ModelConfig
from ideogram4.tiny import dequantized_twin

FAST = dict(height=64, width=64, num_inference_steps=3, guidance_schedule=[7.0, 7.0, 3.0], progress=False)


def load(folder, **kw):
    return Ideogram4Pipeline.from_pretrained(str(folder), torch_dtype=torch.float32, device="cpu", **kw)


@pytest.mark.slow
def test_fp8_equals_its_dequantised_twin(tiny_fp8, tmp_path):
    fp8 = load(tiny_fp8)
    twin = load(dequantized_twin(tiny_fp8, tmp_path / "twin"))
    assert fp8.describe()["format"] == "fp8" and twin.describe()["format"] == "plain"
    a = fp8.generate(["a lighthouse"], [5], output_type="latent", **FAST).latents
    b = twin.generate(["a lighthouse"], [5], output_type="latent", **FAST).latents
    assert (a - b).abs().max().item() < 1e-5
    assert a.abs().mean() > 0.1


@pytest.mark.slow
def test_fp8_dequantize_once_matches_per_call(tiny_fp8):
    once = load(tiny_fp8, fp8_mode="dequantize_once")
    per_call = load(tiny_fp8, fp8_mode="dequantize_per_call")
    assert not any(type(m).__name__ == "Fp8Linear" for m in once.transformer.modules())
    assert any(type(m).__name__ == "Fp8Linear" for m in per_call.transformer.modules())
    a = once.generate(["x"], [1], output_type="latent", **FAST).latents
    b = per_call.generate(["x"], [1], output_type="latent", **FAST).latents
    assert torch.equal(a, b)


@pytest.mark.slow
def test_diffusers_layout_folder_loads_with_the_same_values(tiny_diffusers, pipe):
    ours_from_diffusers = load(tiny_diffusers)
    assert ours_from_diffusers.describe()["layout"] == "diffusers"
    a = ours_from_diffusers.generate(["a cat"], [0], output_type="latent", **FAST).latents
    b = pipe.generate(["a cat"], [0], output_type="latent", **FAST).latents
    # identical weights; CPU GEMM kernels may block differently for differently-allocated tensors (~1e-6)
    assert (a - b).abs().max().item() < 1e-5


@pytest.mark.slow
def test_sharded_index_is_read(tiny_original, tmp_path, pipe):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "sharded"
    shutil.copytree(tiny_original, folder)
    single = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(single))
    keys = sorted(sd)
    halves = {
        "diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    for name, ks in halves.items():
        save_file({k: sd[k] for k in ks}, str(folder / "transformer" / name))
    index = {"metadata": {}, "weight_map": {k: name for name, ks in halves.items() for k in ks}}
    (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    single.unlink()
    a = load(folder).generate(["a cat"], [0], output_type="latent", **FAST).latents
    b = pipe.generate(["a cat"], [0], output_type="latent", **FAST).latents
    assert (a - b).abs().max().item() < 1e-5


@pytest.mark.slow
def test_diffsynth_style_model_configs(tiny_original, pipe):
    root = tiny_original
    configs = [
        ModelConfig(path=f"{root}/{c}/{f}")
        for c, f in [
            ("transformer", "diffusion_pytorch_model.safetensors"),
            ("unconditional_transformer", "diffusion_pytorch_model.safetensors"),
            ("text_encoder", "model.safetensors"),
            ("vae", "diffusion_pytorch_model.safetensors"),
        ]
    ]
    p = Ideogram4Pipeline.from_pretrained(
        torch_dtype=torch.float32,
        device="cpu",
        model_configs=configs,
        tokenizer_config=ModelConfig(path=f"{root}/tokenizer/"),
    )
    image = p(prompt="a red kite", height=64, width=64, num_inference_steps=2, cfg_scale=7.0, seed=42, progress=False)
    assert image.size == (64, 64) and image.mode == "RGB"
    ref = pipe(prompt="a red kite", height=64, width=64, num_inference_steps=2, cfg_scale=7.0, seed=42, progress=False)
    assert np.abs(np.asarray(image).astype(int) - np.asarray(ref).astype(int)).max() <= 1


@pytest.mark.slow
def test_without_unconditional_transformer_the_conditional_one_serves(tiny_original, pipe, caplog):
    with caplog.at_level("WARNING"):
        p = load(tiny_original, load_unconditional=False)
    assert "unconditional" in caplog.text
    out = p.generate(["a cat"], [0], output_type="latent", **FAST)
    assert out.unconditional == "conditional fallback"
    assert not torch.equal(out.latents, pipe.generate(["a cat"], [0], output_type="latent", **FAST).latents)


def test_negative_prompt_runs_classic_cfg(pipe):
    plain = pipe.generate(["a cat"], [0], output_type="latent", **FAST)
    neg = pipe.generate(["a cat"], [0], negative_prompt="blurry", output_type="latent", **FAST)
    assert neg.unconditional.startswith("conditional transformer + negative prompt")
    assert plain.unconditional == "unconditional_transformer"
    assert (plain.latents - neg.latents).abs().max() > 1e-3


def test_text_features_are_cached_per_caption(pipe):
    before = pipe.text_encoder_calls
    first = pipe.generate(["a unique prompt for caching"], [0], output_type="latent", **FAST)
    second = pipe.generate(["a unique prompt for caching"], [1], output_type="latent", **FAST)
    assert pipe.text_encoder_calls == before + 1
    assert first.text_cache_hits == [False] and second.text_cache_hits == [True]


def test_img2img_strength_one_is_refused_not_ignored(pipe):
    """Strength 1 starts from pure noise (tests/test_sampling.py), so an input_image would be ignored: say so."""
    init = pipe("a house", height=64, width=64, num_inference_steps=2, seed=9, progress=False)
    calls = pipe.text_encoder_calls
    with pytest.raises(ValueError, match=r"denoising_strength=1\.0.*ignore it.*e\.g\. 0\.6.*drop input_image"):
        pipe.generate(["a boat never seen"], [3], input_image=init, denoising_strength=1.0, **FAST)
    assert pipe.text_encoder_calls == calls


def test_img2img_small_strength_stays_close_to_the_input(pipe):
    from PIL import Image

    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, 64)[None, :, None] * np.ones((64, 1, 3))
    source = Image.fromarray((gradient * 0.8 + rng.integers(0, 50, (64, 64, 3))).astype(np.uint8))
    # What the VAE alone does to the image: the best any img2img can do.
    roundtrip = pipe.vae.decode(
        pipe.vae.encode(torch.from_numpy(np.asarray(source, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1), 4, 4
    )
    roundtrip = ((roundtrip.clamp(-1, 1) + 1) * 127.5).round()[0].permute(1, 2, 0).numpy()

    def distance(strength):
        img2img = dict(input_image=source, denoising_strength=strength) if strength < 1 else {}  # 1: text-to-image
        img = pipe(
            "a boat",
            **img2img,
            height=64,
            width=64,
            num_inference_steps=4,
            seed=1,
            progress=False,
            output_type="np",
        )
        return np.abs(img.astype(np.float32) - roundtrip).mean()

    # A random tiny model's velocities are noise, so "close" is relative: the distance to the input
    # grows with the strength, and a small strength keeps well under half of a full re-generation's.
    d = [distance(s) for s in (0.05, 0.2, 0.5, 1.0)]
    assert d == sorted(d), f"distance to the input should grow with strength: {d}"
    assert d[0] < 0.4 * d[-1], f"strength 0.05 moved the image by {d[0]:.1f} levels vs {d[-1]:.1f} at 1.0"


def test_batch_form_and_output_types(pipe):
    images = pipe(["one", "two two two"], seed=[1, 2], height=64, width=96, num_inference_steps=2, progress=False)
    assert [im.size for im in images] == [(96, 64), (96, 64)]
    arr = pipe("one", seed=1, height=64, width=96, num_inference_steps=2, progress=False, output_type="np")
    assert arr.shape == (64, 96, 3) and arr.dtype == np.uint8
    # batching (left padding + mask) does not change an image beyond float noise
    assert np.abs(arr.astype(int) - np.asarray(images[0]).astype(int)).max() <= 1
    lat = pipe("one", seed=1, height=64, width=96, num_inference_steps=2, progress=False, output_type="latent")
    assert lat.shape == (1, 24, 128)


def test_structured_caption_is_serialised_compactly_in_official_order(pipe):
    caption = {
        "compositional_deconstruction": {"elements": [{"desc": "é", "type": "obj"}], "background": "b"},
        "high_level_description": "h",
    }
    out = pipe.generate([caption], [0], output_type="latent", **FAST)
    assert (
        out.captions[0]
        == '{"high_level_description":"h","compositional_deconstruction":{"background":"b","elements":[{"type":"obj","desc":"é"}]}}'
    )


# --- clear errors -------------------------------------------------------------------------------


def test_prompt_over_2048_tokens_is_rejected_naming_the_limit(pipe):
    with pytest.raises(ValueError, match="2048"):
        pipe.generate(["word " * 2100], [0], output_type="latent", **FAST)


@pytest.mark.parametrize("height, width, field", [(70, 64, "height"), (64, 100, "width")])
def test_size_not_multiple_of_16(pipe, height, width, field):
    calls = pipe.text_encoder_calls
    with pytest.raises(ValueError, match=rf"{field}={height if field == 'height' else width} is not a multiple of 16"):
        pipe.generate(["x"], [0], **{**FAST, "height": height, "width": width})
    assert pipe.text_encoder_calls == calls  # rejected before any model ran


def test_guidance_schedule_length_must_match_steps(pipe):
    with pytest.raises(ValueError, match="guidance_schedule has 2 entries for num_inference_steps=3"):
        pipe.generate(["x"], [0], **{**FAST, "guidance_schedule": [7.0, 3.0]})


@pytest.mark.parametrize("component", ["vae", "text_encoder", "transformer"])
def test_folder_missing_a_component(tiny_original, tmp_path, component):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_original, folder)
    shutil.rmtree(folder / component)
    with pytest.raises(CheckpointError, match=f"missing {component}/"):
        load(folder)


def test_truncated_safetensors_names_the_file(tiny_original, tmp_path):
    folder = tmp_path / "truncated"
    shutil.copytree(tiny_original, folder)
    f = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"diffusion_pytorch_model\.safetensors is truncated or corrupt"):
        load(folder)


def test_wrong_shapes_are_named(tiny_original, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "wrong"
    shutil.copytree(tiny_original, folder)
    f = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(f))
    sd["layers.0.attention.o.weight"] = torch.zeros(3, 3)
    save_file(sd, str(f))
    with pytest.raises(CheckpointError, match=r"wrong shapes.*layers\.0\.attention\.o\.weight"):
        load(folder)


def test_hub_source_offline_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="not in the local cache.*hf download ideogram-ai/ideogram-4-fp8"):
        Ideogram4Pipeline.from_pretrained("ideogram-ai/ideogram-4-fp8", torch_dtype=torch.float32, device="cpu")


def test_cuda_requested_without_a_gpu(tiny_original):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="device='cuda'.*no CUDA GPU.*device='cpu'"):
        Ideogram4Pipeline.from_pretrained(tiny_original, device="cuda")


def test_nf4_without_bitsandbytes_is_a_clear_error(tiny_original, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nf4"
    shutil.copytree(tiny_original, folder)
    f = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(f))
    sd["layers.0.attention.o.weight.quant_state.bitsandbytes__nf4"] = torch.zeros(8, dtype=torch.uint8)
    save_file(sd, str(f))
    with pytest.raises(CheckpointError, match="nf4"):
        load(folder)


@pytest.mark.slow
def test_regional_compile_keeps_results(tiny_original, pipe):
    compiled = load(tiny_original, compile_blocks="eager")
    assert all(
        hasattr(b, "_compiled_call_impl") and b._compiled_call_impl is not None for b in compiled.transformer.layers
    )
    a = compiled.generate(["a cat"], [0], output_type="latent", **FAST).latents
    b = pipe.generate(["a cat"], [0], output_type="latent", **FAST).latents
    assert (a - b).abs().max().item() < 1e-5


def test_out_of_memory_advice_names_the_memory_modes(pipe):
    from ideogram4.errors import GpuOutOfMemory, memory_tips

    tips = memory_tips(pipe.describe(), batch=2, height=2048, width=2048)
    advice = str(GpuOutOfMemory(tips))
    for option in ("batch of 1", "offload_text_encoder=True", "vae_tiling=True", "offload_transformers=True"):
        assert option in advice


@pytest.mark.slow
def test_fp8_matmul_mode_quantises_activations_only_where_safe(tiny_fp8):
    fast = load(tiny_fp8, fp8_mode="fp8_matmul")
    ref = load(tiny_fp8, fp8_mode="dequantize_per_call")
    modes = {n: m.mode for n, m in fast.transformer.named_modules() if type(m).__name__ == "Fp8Linear"}
    assert modes["layers.0.attention.qkv"] == modes["layers.1.feed_forward.w3"] == "fp8_matmul"
    assert modes["layers.0.feed_forward.w2"] == "fp8_matmul"
    for fragile in (
        "llm_cond_proj",
        "adaln_proj",
        "final_layer.linear",
        "layers.1.adaln_modulation",
    ):
        assert modes[fragile] == "dequantize_per_call", fragile
    assert fast.describe()["fp8_mode"] == "fp8_matmul"
    paths = fast.describe()["fp8_paths"]
    assert paths["fp8_matmul"] == 5 * 2 and paths["dequantize_per_call"] == len(modes) - 10  # qkv, o, w1-3 x 2 layers
    a = fast.generate(["a cat"], [0], output_type="latent", **FAST).latents
    b = ref.generate(["a cat"], [0], output_type="latent", **FAST).latents
    rel = ((a - b).abs().mean() / b.abs().mean()).item()
    assert 0 < rel < 0.05, f"fp8 activations moved the latents by {rel:.3%} on average"


@pytest.mark.parametrize(
    "error, message",
    [
        ("GatedRepoError", "is gated: accept its licence"),
        ("RepositoryNotFoundError", "was not found, or it is gated/private"),
        ("RevisionNotFoundError", "has no revision 'v9'"),
    ],
)
def test_hub_failures_say_what_to_do(monkeypatch, error, message):
    """No request leaves the machine: snapshot_download is replaced by one that raises the hub's error."""
    import httpx
    import huggingface_hub
    from huggingface_hub import errors

    response = httpx.Response(401, request=httpx.Request("GET", "http://127.0.0.1/api/models/x"))

    def refuse(repo_id, allow_patterns=None, revision=None):
        assert allow_patterns and all(
            p.split("/")[0] in {"transformer", "unconditional_transformer", "text_encoder", "vae", "tokenizer"}
            for p in allow_patterns
        )
        raise getattr(errors, error)("refused", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(CheckpointError, match=message):
        Ideogram4Pipeline.from_pretrained(
            "ideogram-ai/ideogram-4-fp8", revision="v9", torch_dtype=torch.float32, device="cpu"
        )


@pytest.mark.slow
def test_model_config_path_to_a_named_file_is_used_as_named(tiny_original, tmp_path, pipe):
    """DiffSynth users point ModelConfig(path=...) at files with their own names, next to other files."""
    root = Path(tiny_original)
    folder = tmp_path / "weights" / "transformer"
    folder.mkdir(parents=True)
    shutil.copy(root / "transformer" / "config.json", folder / "config.json")
    shutil.copy(root / "transformer" / "diffusion_pytorch_model.safetensors", folder / "my_dit.safetensors")
    shutil.copy(
        root / "unconditional_transformer" / "diffusion_pytorch_model.safetensors", folder / "decoy.safetensors"
    )
    configs = [
        ModelConfig(path=str(folder / "my_dit.safetensors")),
        ModelConfig(path=str(root / "unconditional_transformer")),
        ModelConfig(path=str(root / "text_encoder" / "model.safetensors")),
        ModelConfig(path=str(root / "vae")),
    ]
    p = Ideogram4Pipeline.from_pretrained(
        torch_dtype=torch.float32,
        device="cpu",
        model_configs=configs,
        tokenizer_config=ModelConfig(path=str(root / "tokenizer")),
    )
    assert p.describe()["fingerprints"]["transformer"] == pipe.describe()["fingerprints"]["transformer"]
    a = p.generate(["a cat"], [0], output_type="latent", **FAST).latents
    assert (a - pipe.generate(["a cat"], [0], output_type="latent", **FAST).latents).abs().max().item() < 1e-5
