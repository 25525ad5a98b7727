"""Bad arguments to from_pretrained / generate / __call__: a clear error naming the argument, the value
and the fix, raised before any file is read or any model runs. Out of GPU memory: tips as data.

Most tests need no weights: `from_pretrained` is checked with the loading steps replaced by ones that
fail the test if reached, `generate` on a pipeline whose models are all None (any model use would
crash with an AttributeError instead of the expected message).
"""

import math
import re
from pathlib import Path

import pytest
import torch

from ideogram4 import Ideogram4Pipeline, loading
from ideogram4.errors import GpuOutOfMemory, MemoryTip, memory_tips
from ideogram4.spec import MAX_SIDE, MAX_STEPS, MIN_SIDE
from ideogram4.tiny import TINY_DIT

FAST = dict(height=64, width=64, num_inference_steps=3, guidance_schedule=[7.0, 7.0, 3.0], progress=False)


@pytest.fixture
def no_loading(monkeypatch):
    def reached(*a, **kw):
        raise AssertionError("weights were looked for before the options were checked")

    monkeypatch.setattr(loading, "resolve_paths", reached)
    monkeypatch.setattr(loading, "load_components", reached)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(fp8_mode="fastest"),
            ValueError,
            r"fp8_mode='fastest' is not an option: use one of 'auto', 'dequantize_per_call'",
        ),
        (dict(torch_dtype=torch.float64), ValueError, r"torch_dtype=torch\.float64: use one of torch\.bfloat16"),
        (dict(device="tpu"), ValueError, r"device='tpu' is not a device: use one of 'cpu', 'cuda'"),
        (dict(device="meta"), ValueError, r"device='meta' is not a device: use one of 'cpu', 'cuda'"),
        (dict(offload_text_encoder="yes"), TypeError, r"offload_text_encoder='yes' is a str: pass True or False"),
        (dict(vae_tiling=1), TypeError, r"vae_tiling=1 is a int: pass True or False"),
        (dict(load_unconditional=None), TypeError, r"load_unconditional=None"),
        (
            dict(compile_blocks=1),
            TypeError,
            r"compile_blocks=1: pass 'auto' \(inductor on CUDA\), True \(inductor\), False, or a torch.compile",
        ),
        (
            dict(compile_blocks=True, compile_mode="fast"),
            ValueError,
            r"compile_mode='fast' is not an option.*'reduce-overhead'",
        ),
        (
            dict(compile_blocks=False, compile_mode="max-autotune"),
            ValueError,
            r"compile_mode='max-autotune' is an inductor mode but compile_blocks=False: pass compile_blocks=True",
        ),
        (
            dict(compile_mode="max-autotune"),  # compile_blocks="auto" compiles on CUDA only
            ValueError,
            r"compile_mode='max-autotune' with compile_blocks='auto' on cpu: .* pass compile_blocks=True",
        ),
        (dict(compile_blocks="eager", compile_mode="default"), ValueError, r"compile_blocks='eager'"),
        (dict(source=42), TypeError, r"source=42: pass a folder path or a hub repo id"),
        (dict(source=None), ValueError, r"pass a source .*, model_configs=.*, or both"),
        # a source and configs together are allowed (each config replaces its component), strings are not configs
        (dict(model_configs=["transformer/x.safetensors"]), TypeError, r"pass a list of ModelConfig"),
        (
            dict(source=None, model_configs="transformer/"),
            TypeError,
            r"model_configs='transformer/': pass a list of ModelConfig",
        ),
        (dict(revision=3), TypeError, r"revision=3: pass a string"),
    ],
)
def test_bad_load_options_fail_before_any_file_is_read(no_loading, kwargs, error, message):
    args = dict(source="/no/such/folder", torch_dtype=torch.float32, device="cpu") | kwargs
    with pytest.raises(error, match=message):
        Ideogram4Pipeline.from_pretrained(args.pop("source"), **args)


def test_fp8_mode_fastest_names_the_field_and_options(no_loading):
    with pytest.raises(ValueError) as info:
        Ideogram4Pipeline.from_pretrained("/no/such/folder", device="cpu", fp8_mode="fastest")
    assert all(mode in str(info.value) for mode in ("dequantize_per_call", "dequantize_once", "fp8_matmul"))


@pytest.fixture
def modelless():
    """A pipeline with no models: only the checks can run."""
    pipe = Ideogram4Pipeline(None, None, None, None, device="cpu", dtype=torch.float32)
    pipe.side_range = TINY_DIT.side_range  # the tiny model's: the cases render 64 px
    return pipe


@pytest.fixture
def image_file(tmp_path):
    from PIL import Image

    path = tmp_path / "input.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(path)
    return path


@pytest.mark.parametrize(
    "prompts, seeds, kwargs, error, message",
    [
        ("a cat", None, {}, TypeError, r"prompts is a single str: pass a list, e\.g\. prompts=\[prompt\]"),
        ([], None, {}, ValueError, r"prompts is empty"),
        ([42], None, {}, TypeError, r"prompts\[0\]=42: a prompt is a string or a caption mapping"),
        (["x"], ["42"], {}, TypeError, r"seeds\[0\]='42' is a str: pass an int, e\.g\. seeds\[0\]=42"),
        (["x"], [2**64], {}, ValueError, r"seeds\[0\]=18446744073709551616 is outside 0\.\.2\*\*63-1"),
        (["x"], [-1], {}, ValueError, r"seeds\[0\]=-1 is outside 0\.\.2\*\*63-1"),
        (["x"], [1.5], {}, TypeError, r"seeds\[0\]=1\.5 is a float: pass an int"),
        (["x", "y"], [1], {}, ValueError, r"got 1 seeds for 2 prompts"),
        (["x"], None, dict(height=0), ValueError, r"height=0 must be positive: use a multiple of 16"),
        (["x"], None, dict(width=100), ValueError, r"width=100 is not a multiple of 16 .*: use 96"),
        (["x"], None, dict(height=64.0), TypeError, r"height=64\.0 is a float: pass an int multiple of 16"),
        (
            ["x"],
            None,
            dict(num_inference_steps=MAX_STEPS + 1),
            ValueError,
            rf"num_inference_steps={MAX_STEPS + 1} is outside 1\.\.{MAX_STEPS}",
        ),
        (["x"], None, dict(num_inference_steps=0), ValueError, r"num_inference_steps=0 is outside 1\.\."),
        (["x"], None, dict(num_inference_steps="4"), TypeError, r"num_inference_steps='4' is a str"),
        (
            ["x"],
            None,
            dict(cfg_scale=math.nan),
            ValueError,
            r"cfg_scale=nan is not finite: pass a finite number, e\.g\. cfg_scale=7\.0",
        ),
        (["x"], None, dict(cfg_scale=math.inf), ValueError, r"cfg_scale=inf is not finite"),
        (["x"], None, dict(cfg_scale="7"), TypeError, r"cfg_scale='7' is a str: pass a number"),
        (
            ["x"],
            None,
            dict(guidance_schedule=[7.0, math.nan, 3.0]),
            ValueError,
            r"guidance_schedule\[1\]=nan is not finite",
        ),
        (
            ["x"],
            None,
            dict(guidance_schedule=[7.0, 3.0]),
            ValueError,
            r"guidance_schedule has 2 entries for num_inference_steps=3",
        ),
        (["x"], None, dict(guidance_schedule=7.0), TypeError, r"guidance_schedule=7\.0: pass a list of floats"),
        (["x"], None, dict(std=math.inf), ValueError, r"std=inf is not finite"),
        (["x"], None, dict(std=0.0), ValueError, r"std=0\.0 must be > 0"),
        (["x"], None, dict(mu=math.nan), ValueError, r"mu=nan is not finite"),
        (
            ["x", "y"],
            None,
            dict(negative_prompt=["a", "b", "c"]),
            ValueError,
            r"negative_prompt has 3 entries for 2 prompts",
        ),
        (["x"], None, dict(negative_prompt=5), TypeError, r"negative_prompt=5: pass a list"),
        (["x"], None, dict(denoising_strength=0.5), ValueError, r"denoising_strength=0\.5 needs an input_image"),
        (
            ["x"],
            None,
            dict(output_type="jpeg"),
            ValueError,
            r"output_type='jpeg' is not an option: use one of 'pil', 'np', 'latent'",
        ),
        (
            ["x"],
            None,
            dict(final_step="end"),
            ValueError,
            r"final_step='end' is not an option: use one of 'official', 'clean'",
        ),
        (["x"], None, dict(rand_device="gpu"), ValueError, r"rand_device='gpu' is not a device"),
        (
            ["x"],
            None,
            dict(latents=torch.zeros(1, 15, 128)),
            ValueError,
            r"latents has shape \(1, 15, 128\); expected \(1, 16, 128\)",
        ),
        (
            ["x"],
            None,
            dict(latents=[0.0]),
            TypeError,
            r"latents is a list: pass a float tensor of shape \(1, 16, 128\)",
        ),
        (["x"], None, dict(progress="yes"), TypeError, r"progress='yes' is a str: pass True or False"),
        (["x"], None, dict(step_callback=5), TypeError, r"step_callback=5 is not callable"),
    ],
)
def test_bad_generate_arguments_fail_before_any_model_runs(modelless, prompts, seeds, kwargs, error, message):
    with pytest.raises(error, match=message):
        modelless.generate(prompts, seeds, **(FAST | kwargs))


@pytest.mark.parametrize(
    "strength, message",
    [
        (
            1.0,
            r"denoising_strength=1\.0 starts from pure noise and would ignore it: lower denoising_strength \(e\.g\. 0\.6\), or drop input_image",
        ),
        (0.0, r"denoising_strength=0\.0 must be in \(0, 1\]"),
        (1.5, r"denoising_strength=1\.5 must be in \(0, 1\]"),
        (math.nan, r"denoising_strength=nan is not finite"),
    ],
)
def test_img2img_strength_is_checked(modelless, image_file, strength, message):
    with pytest.raises(ValueError, match=message):
        modelless.generate(["x"], [0], input_image=image_file, denoising_strength=strength, **FAST)


def test_input_image_files_are_checked(modelless, tmp_path, image_file):
    missing = tmp_path / "missing.png"
    with pytest.raises(ValueError, match=rf"input_image='{re.escape(str(missing))}': no such file"):
        modelless.generate(["x"], [0], input_image=str(missing), denoising_strength=0.5, **FAST)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.png' is not an image PIL can read"):
        modelless.generate(["x"], [0], input_image=text, denoising_strength=0.5, **FAST)
    with pytest.raises(ValueError, match=r"input_image is 64x64 \(WxH\) but the output is 96x64: resize it first"):
        modelless.generate(["x"], [0], input_image=image_file, denoising_strength=0.5, **(FAST | dict(width=96)))
    with pytest.raises(TypeError, match=r"input_image is a int: pass a PIL image or the path of an image file"):
        modelless.generate(["x"], [0], input_image=3, denoising_strength=0.5, **FAST)
    with pytest.raises(ValueError, match=r"input_image has 2 images for 1 prompts"):
        modelless.generate(["x"], [0], input_image=[image_file] * 2, denoising_strength=0.5, **FAST)


@pytest.mark.parametrize(
    "seed, error, message",
    [
        ("42", TypeError, r"seed='42' is a str: pass an int"),
        (2**64, ValueError, r"seed=18446744073709551616 is outside"),
        ([1, "2"], TypeError, r"seed\[1\]='2'"),
    ],
)
def test_bad_seed_in_the_call_form(modelless, seed, error, message):
    with pytest.raises(error, match=message):
        modelless("x", seed=seed, height=64, width=64, num_inference_steps=2, progress=False)


@pytest.mark.slow
def test_input_image_path_equals_the_pil_image(pipe, image_file):
    from PIL import Image

    img2img = dict(denoising_strength=0.5, output_type="latent", **FAST)
    from_path = pipe.generate(["a boat"], [1], input_image=Path(image_file), **img2img).latents
    from_str = pipe.generate(["a boat"], [1], input_image=str(image_file), **img2img).latents
    from_pil = pipe.generate(["a boat"], [1], input_image=Image.open(image_file), **img2img).latents
    assert torch.equal(from_path, from_pil) and torch.equal(from_str, from_pil)


@pytest.mark.slow
def test_seed_range_ends_are_accepted(pipe):
    out = pipe.generate(["x", "x"], [0, 2**63 - 1], output_type="latent", **FAST)
    assert out.seeds == [0, 2**63 - 1] and not torch.equal(out.latents[0], out.latents[1])


# --- the model's side range ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def released_range_pipe(tiny_original, tmp_path_factory):
    """The tiny model loaded from a folder whose DiT config.json has no side range, as the released
    checkpoints' have none: the loader gives it the released range (spec.MIN_SIDE..MAX_SIDE)."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("released") / "model"
    shutil.copytree(tiny_original, folder)
    for name in ("transformer", "unconditional_transformer"):
        config = folder / name / "config.json"
        raw = json.loads(config.read_text())
        assert raw.pop("min_side") == TINY_DIT.min_side  # the tiny build declares its own range
        config.write_text(json.dumps(raw))
    return Ideogram4Pipeline.from_pretrained(folder, torch_dtype=torch.float32, device="cpu")


@pytest.mark.parametrize(
    "size, message",
    [
        ((200, 200), r"^height=200 is not a multiple of 16 \(one token is 16x16 pixels\): use 256$"),
        ((192, 256), r"^height=192 is outside 256\.\.2048: pick a value in 256\.\.2048$"),
        ((256, 3000), r"^width=3000 is not a multiple of 16 \(one token is 16x16 pixels\): use 2048$"),
        ((256, 3008), r"^width=3008 is outside 256\.\.2048: pick a value in 256\.\.2048$"),
        (
            (256, 1792),
            r"^width x height='1792x256' has aspect ratio 7\.00:1, beyond 6:1: bring width/height within 6:1",
        ),
        ((64, 64), r"^height=64 is outside 256\.\.2048"),
    ],
)
def test_sizes_outside_the_models_range_fail_in_one_line_before_sampling(
    released_range_pipe, monkeypatch, size, message
):
    assert released_range_pipe.side_range == (MIN_SIDE, MAX_SIDE) == (256, 2048)

    def reached(*a, **kw):
        raise AssertionError("the text encoder ran before the size was checked")

    monkeypatch.setattr(released_range_pipe, "encode_prompt", reached)
    height, width = size
    for call in (
        lambda: released_range_pipe("x", height=height, width=width, num_inference_steps=2, progress=False),
        lambda: released_range_pipe.generate(["x"], [0], height=height, width=width, progress=False),
    ):
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_a_pipeline_takes_its_side_range_from_its_dit_config(pipe, released_range_pipe):
    assert pipe.transformer.config.side_range == pipe.side_range == (TINY_DIT.min_side, MAX_SIDE)
    assert released_range_pipe.transformer.config.side_range == (MIN_SIDE, MAX_SIDE)
    assert Ideogram4Pipeline(None, None, None, None, device="cpu").side_range == (MIN_SIDE, MAX_SIDE)
    # the tiny model renders at 64 (its declared range); the released range at its smallest side
    assert pipe.generate(["x"], [0], output_type="latent", **FAST).latents.shape == (1, 16, 128)
    out = released_range_pipe.generate(["x"], [0], output_type="latent", **(FAST | dict(height=256, width=256)))
    assert out.latents.shape == (1, 256, 128)


# --- out of GPU memory ----------------------------------------------------------------------------


def test_memory_tips_follow_the_options_already_on():
    every = memory_tips({}, batch=4, height=2048, width=2048)
    assert [t.option for t in every] == [
        "batch",
        "offload_text_encoder",
        "vae_tiling",
        "load_unconditional",
        "source",
        "offload_transformers",
        "resolution",
    ]
    assert every[0] == MemoryTip("batch", 1, "generate fewer images per call: 4 now")
    spared = dict(
        offload_text_encoder=True, vae_tiling=True, load_unconditional=False, offload_transformers=True, format="nf4"
    )
    assert [t.option for t in memory_tips(spared, batch=1, height=1024, width=1024)] == []
    assert memory_tips({"fp8_mode": "dequantize_once"})[0] == MemoryTip(
        "fp8_mode", "dequantize_per_call", "keeps the fp8 weights in 1 byte per parameter"
    )


def raise_oom(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


@pytest.mark.slow
def test_generate_out_of_memory_carries_tips(pipe, monkeypatch):
    monkeypatch.setattr(pipe.transformer, "forward", raise_oom)
    with pytest.raises(GpuOutOfMemory) as info:
        pipe.generate(["x", "y"], [0, 1], output_type="latent", **FAST)
    err = info.value
    assert isinstance(err, RuntimeError) and isinstance(err.__cause__, torch.OutOfMemoryError)
    assert [t.option for t in err.tips][:2] == ["batch", "offload_text_encoder"]
    message = str(err)
    assert "out of memory (CUDA out of memory. Tried to allocate 20.00 GiB)" in message
    assert "a batch of 1" in message and "offload_text_encoder=True" in message
    assert not re.search(r"\bmodel[.=]|batch_size", message), message


def test_kernel_out_of_memory_runtime_error_is_recognised(pipe, monkeypatch):
    def cublas_oom(*args, **kwargs):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(pipe.transformer, "forward", cublas_oom)
    with pytest.raises(GpuOutOfMemory, match="offload_transformers=True"):
        pipe.generate(["x"], [0], output_type="latent", **FAST)
    monkeypatch.setattr(pipe.transformer, "forward", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # other errors pass through untouched
        pipe.generate(["x"], [0], output_type="latent", **FAST)


def test_load_out_of_memory_carries_tips_for_the_options_given(monkeypatch):
    monkeypatch.setattr(loading, "resolve_paths", lambda *a: {})
    monkeypatch.setattr(loading, "load_components", raise_oom)
    with pytest.raises(GpuOutOfMemory) as info:
        Ideogram4Pipeline.from_pretrained("/some/folder", device="cpu", offload_text_encoder=True)
    options = [t.option for t in info.value.tips]
    assert "offload_text_encoder" not in options
    assert options[:3] == ["load_unconditional", "source", "offload_transformers"]


# --- messages in API terms ------------------------------------------------------------------------


def test_core_messages_name_no_runner_config_keys():
    """The runner translates API option names to its config keys; the core never names them."""
    core = Path(__file__).resolve().parents[1] / "ideogram4"
    runner_key = re.compile(
        r"\bmodel\.(path|offload|fp8_mode|vae_tiling|load_unconditional|compile)|\bmodel=\w|batch_size="
    )
    offenders = [
        f"{path.relative_to(core)}:{n}: {line.strip()}"
        for path in sorted(core.rglob("*.py"))
        if "experiment" not in path.parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if runner_key.search(line)
    ]
    assert not offenders, "\n".join(offenders)
