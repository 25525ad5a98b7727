"""Reproducing an image from its PNG alone (issue 14): same pixels, named differences, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from runner_helpers import REPO, TINY, read_manifest, run_cli, run_inprocess

from ideogram4.determinism import CUBLAS_WORKSPACE_ENV, determinism_state, deterministic
from ideogram4.experiment.reproduce.__main__ import main
from ideogram4.experiment.reproduce.regenerate import EXIT_REFUSED, run_from_hydra
from ideogram4.experiment.run.provenance import compare_provenance, png_provenance

FAST = [*TINY, "tracker=none", "progress=false"]
CAPTION = 'prompt=\'{"high_level_description": "A sign that says \\"OPEN\\"."}\''


def reproduce_cli(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(env, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "ideogram4.experiment.reproduce", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)


def reproduce(args: list[str], capsys) -> tuple[int, str, str]:
    """The CLI in this process (the tiny pipeline stays cached): (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def edit_png_text(src: Path, dst: Path, edit) -> None:
    """Rewrite the text chunks of `src` into `dst` (same pixels: PNG is lossless)."""
    with Image.open(src) as im:
        im.load()
        text = edit(dict(im.text))
        info = PngInfo()
        for k, v in text.items():
            info.add_text(k, v)
        im.save(dst, pnginfo=info)


def edit_json_chunk(key: str, change):
    def edit(text: dict) -> dict:
        value = json.loads(text[key])
        change(value)
        return dict(text, **{key: json.dumps(value)})

    return edit


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_root) -> Path:
    """One image made in this process by the runner (cfg 4, seed 3); tests copy it before changing it."""
    out = tmp_path_factory.mktemp("made")
    run_inprocess([*FAST, "prompt=a red cube", "cfg=4", "seed=3"], out, tiny_root)
    return out / "images" / "prompt__seed3.png"


# --- end to end, other process and folder --------------------------------------------------------


@pytest.mark.slow
def test_run_py_image_reproduces_bit_for_bit_from_the_png_alone(tmp_path, runner_env):
    job = tmp_path / "job"
    res = run_cli([*FAST, CAPTION, "seed=5", "cfg=4", f"hydra.run.dir={job}"], runner_env)
    assert res.returncode == 0, res.stderr[-3000:]
    png = tmp_path / "elsewhere" / "kept.png"
    png.parent.mkdir()
    shutil.copy(job / "images" / "prompt__seed5.png", png)
    shutil.rmtree(job)  # the PNG alone: no manifest, no job folder, no prompt file
    original = png.read_bytes()

    cwd = tmp_path / "other"
    cwd.mkdir()
    res = reproduce_cli([str(png)], runner_env, cwd)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "Identical: all 4096 pixels match" in res.stdout
    assert "differs:" not in res.stdout  # same code, versions, device and weights
    again = cwd / "outputs" / "reproduce" / "kept" / "images" / "prompt__seed5.png"
    assert np.array_equal(pixels(again), pixels(png))
    assert png.read_bytes() == original  # the original is never touched
    rec = read_manifest(again.parents[1])[0]
    assert rec["settings"]["cfg"] == 4.0 and rec["seed"] == 5
    assert rec["caption"] == '{"high_level_description": "A sign that says \\"OPEN\\"."}'
    report = json.loads((again.parents[1] / "reproduce.json").read_text())
    assert report["identical"] and report["pixels"]["max_abs"] == 0


@pytest.mark.slow
def test_sweep_image_made_in_a_batch_reproduces_through_run_py(tmp_path, runner_env):
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "prompts=smoke", "batch_size=2", "cfg=3,7", f"hydra.sweep.dir={sweep}"]
    res = run_cli(args, runner_env)
    assert res.returncode == 0, res.stderr[-3000:]
    png = sweep / "1" / "images" / "sign_hello__seed0.png"  # job 1: cfg=7, the second image of its batch
    assert read_manifest(sweep / "1")[1]["batch_size"] == 2

    out = tmp_path / "again"
    res = run_cli([f"+reproduce={png}", f"hydra.run.dir={out}"], runner_env)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    # sampled as 2 copies of itself: the kernels see the batch shape it was made in (alone, a CPU GEMM
    # rounds 1 pixel of 4096 differently on some machines), so nothing differs and nothing is named
    assert "Identical" in res.stdout
    assert "generated in a batch of" not in res.stdout
    again = read_manifest(out)
    assert len(again) == 1 and again[0]["settings"]["cfg"] == 7.0 and again[0]["batch_size"] == 2
    assert [p.name for p in (out / "images").glob("*.png")] == ["sign_hello__seed0.png"]


# --- differences named before sampling -----------------------------------------------------------


@pytest.mark.slow
def test_changed_package_version_is_named_and_strict_refuses_before_loading(tmp_path, made, capsys, monkeypatch):
    png = tmp_path / "edited.png"
    edit_png_text(made, png, edit_json_chunk("ideogram4:provenance", lambda p: p["versions"].update(torch="2.12.0")))
    out = tmp_path / "out"

    code, stdout, _ = reproduce([png, "--out", out, "--strict"], capsys)
    assert code == EXIT_REFUSED
    assert f"torch 2.12.0 then, {torch.__version__} now" in stdout
    assert "Refusing to sample (--strict): 1 difference in settings, software and device" in stdout
    assert not list(out.glob("images/*.png"))  # nothing sampled

    code, stdout, _ = reproduce([png, "--out", out], capsys)
    assert code == 0 and "Identical" in stdout and "torch 2.12.0 then" in stdout

    monkeypatch.chdir(tmp_path)  # run.py's form, outside Hydra: the default folder is outputs/reproduce/<stem>
    assert run_from_hydra(OmegaConf.create({"reproduce": str(png), "reproduce_strict": True})) == EXIT_REFUSED
    assert "torch 2.12.0 then" in capsys.readouterr().out
    assert not list((tmp_path / "outputs" / "reproduce" / "edited").glob("images/*.png"))


@pytest.mark.slow
def test_other_weights_are_named_per_component_and_differ_in_pixels(tmp_path, tiny_root, capsys):
    from ideogram4.tiny import ensure_tiny_checkpoint

    seed0 = ensure_tiny_checkpoint(tiny_root, "original")
    seed1 = ensure_tiny_checkpoint(tmp_path / "cache", "original", seed=1)
    local = [
        *FAST,
        "model=local",
        f"model.path={seed0}",
        "model.dtype=float32",
        "device=cpu",
        "prompt=a cube",
    ]
    run_inprocess(local, tmp_path / "job", tiny_root)
    png = tmp_path / "job" / "images" / "prompt__seed0.png"
    out = tmp_path / "out"

    code, stdout, _ = reproduce([png, "--out", out, "--strict", f"model.path={seed1}"], capsys)
    assert code == EXIT_REFUSED
    assert "Recorded vs now, settings, software and device: no differences" in stdout
    for component in ("transformer", "unconditional transformer", "text encoder", "vae"):
        assert f"  differs: {component} weights fingerprint differs:" in stdout
    assert "Refusing to sample (--strict): 4 differences in weights" in stdout
    assert "note: model.path" in stdout  # another folder is only a note; its files decide
    assert not list(out.glob("images/*.png"))

    code, stdout, _ = reproduce([png, "--out", out, f"model.path={seed1}"], capsys)
    assert code == 1
    assert "Different: max |difference|" in stdout
    diff = out / "prompt__seed0.diff.png"
    assert diff.exists() and pixels(diff).max() == 255  # stretched: the largest difference is white
    report = json.loads((out / "reproduce.json").read_text())
    assert not report["identical"] and report["pixels"]["max_abs"] > 0 and len(report["differences"]) == 4

    code, _, err = reproduce([png, "--out", out], capsys)  # a path in a PNG is never followed
    assert code == 2 and f"made with local weights ({json.dumps(str(seed0))})" in err and "Fix: pass model.path=" in err
    code, stdout, _ = reproduce([png, "--out", out, f"model.path={seed0}"], capsys)  # the original weights again
    assert code == 0 and "Identical" in stdout


@pytest.mark.slow
def test_changed_setting_is_named_and_pixels_differ(tmp_path, made, capsys):
    code, stdout, _ = reproduce([made, "--out", tmp_path / "out", "cfg=2"], capsys)
    assert code == 1
    assert "differs: cfg 4.0 then, 2.0 now" in stdout and "differs: guidance_schedule" in stdout
    assert "mean" in stdout and (tmp_path / "out" / "prompt__seed3.diff.png").exists()


def test_png_from_before_provenance_still_reproduces_and_says_what_is_unknown(tmp_path, made, capsys):
    png = tmp_path / "old.png"
    edit_png_text(made, png, lambda t: {k: v for k, v in t.items() if k != "ideogram4:provenance"})
    code, stdout, _ = reproduce([png, "--out", tmp_path / "out"], capsys)
    assert code == 0 and "Identical" in stdout and "provenance not recorded in the PNG" in stdout
    code, stdout, _ = reproduce([png, "--out", tmp_path / "out", "--strict"], capsys)
    assert code == EXIT_REFUSED


def test_config_key_unknown_to_this_runner_is_a_named_difference(tmp_path, made, capsys):
    png = tmp_path / "newer.png"  # e.g. made by a newer runner with an option this one lacks
    edit_png_text(made, png, edit_json_chunk("ideogram4:config", lambda c: c.update(upscale={"factor": 2})))
    code, stdout, _ = reproduce([png, "--out", tmp_path / "out"], capsys)
    assert code == 0 and 'differs: config key upscale = {"factor": 2} is unknown to this runner: ignored' in stdout


def test_never_writes_over_the_original(tmp_path, made, capsys):
    job = tmp_path / "job"
    shutil.copytree(made.parents[1], job)
    before = (job / "images" / made.name).read_bytes()
    code, _, err = reproduce([job / "images" / made.name, "--out", job], capsys)
    assert code == 2 and "would overwrite the original image" in err
    assert (job / "images" / made.name).read_bytes() == before


# --- img2img: the same input image or nothing ------------------------------------------------------


@pytest.mark.slow
def test_img2img_needs_the_same_input_image(tmp_path, tiny_root, capsys):
    source = tmp_path / "input.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(source)
    run_inprocess(
        [*FAST, "prompt=a cube", f"input_image={source}", "denoising_strength=0.6"], tmp_path / "job", tiny_root
    )
    png = tmp_path / "job" / "images" / "prompt__seed0.png"
    with Image.open(png) as im:
        provenance = json.loads(im.text["ideogram4:provenance"])
    assert provenance["input_image"]["path"] == str(source) and len(provenance["input_image"]["sha256"]) == 64
    kept = tmp_path / "kept.png"
    source.rename(kept)

    Image.new("RGB", (64, 64), "white").save(source)  # another picture where the PNG says the input was
    code, _, err = reproduce([png, "--out", tmp_path / "out"], capsys)  # named, never read from the PNG's path
    assert code == 2 and str(source) in err and "Fix: pass input_image=" in err
    assert len(err.strip().splitlines()) == 1

    code, _, err = reproduce([png, "--out", tmp_path / "out", f"input_image={source}"], capsys)
    assert code == 2 and "is not the one prompt__seed0.png was made from" in err
    code, _, err = reproduce([png, "--out", tmp_path / "out", f"input_image={tmp_path / 'gone.png'}"], capsys)
    assert code == 2 and "does not exist" in err

    code, stdout, _ = reproduce([png, "--out", tmp_path / "out", f"input_image={kept}"], capsys)
    assert code == 0 and "Identical" in stdout and "note: input_image" in stdout


# --- unusable input: one line, exit 2 --------------------------------------------------------------


def _bad_pngs(folder: Path, made: Path) -> dict[str, tuple[Path, str]]:
    plain = folder / "plain.png"
    Image.new("RGB", (16, 16), "red").save(plain)
    data = made.read_bytes()
    truncated = folder / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    flipped = folder / "flipped.png"
    at = data.index(b"IDAT") + 20
    flipped.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :])
    text = folder / "notes.png"
    text.write_text("not an image")
    jpeg = folder / "photo.jpg"
    Image.new("RGB", (16, 16), "red").save(jpeg)
    return {
        "no metadata": (plain, "has no Ideogram 4 runner metadata"),
        "truncated": (truncated, "is damaged or truncated"),
        "flipped byte": (flipped, "is damaged or truncated"),
        "not an image": (text, "is not an image"),
        "jpeg": (jpeg, "is a JPEG, not a PNG"),
        "missing": (folder / "missing.png", "no such file"),
    }


def test_unusable_pngs_give_one_clear_line(tmp_path, made, capsys):
    for name, (path, message) in _bad_pngs(tmp_path, made).items():
        code, stdout, err = reproduce([path, "--out", tmp_path / "out"], capsys)
        assert code == 2, name
        assert message in err and str(path) in err, (name, err)
        assert len(err.strip().splitlines()) == 1 and not stdout, name


@pytest.mark.slow
def test_unusable_png_through_both_commands_has_no_traceback(tmp_path, runner_env):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (16, 16), "red").save(plain)
    res = reproduce_cli([str(plain)], runner_env, tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "no Ideogram 4 runner metadata" in res.stderr
    res = run_cli([f"+reproduce={plain}", f"hydra.run.dir={tmp_path / 'r'}"], runner_env)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "no Ideogram 4 runner metadata" in res.stderr


# --- deterministic mode ----------------------------------------------------------------------------


def test_deterministic_context_sets_and_restores(monkeypatch):
    monkeypatch.delenv(CUBLAS_WORKSPACE_ENV, raising=False)
    before = determinism_state()
    assert not before["deterministic"]
    with deterministic():
        on = determinism_state()
        assert on["deterministic"] and on["cudnn_deterministic"] and not on["cudnn_benchmark"]
        assert os.environ[CUBLAS_WORKSPACE_ENV] == ":4096:8"
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert determinism_state() == before and CUBLAS_WORKSPACE_ENV not in os.environ
    with deterministic(False):
        assert determinism_state() == before


@pytest.mark.slow
def test_deterministic_run_on_cpu_is_recorded_and_reproduces(tmp_path, tiny_root, capsys):
    run_inprocess([*FAST, "prompt=a cube", "deterministic=true"], tmp_path / "job", tiny_root)
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the job
    png = tmp_path / "job" / "images" / "prompt__seed0.png"
    with Image.open(png) as im:
        provenance = json.loads(im.text["ideogram4:provenance"])
    assert provenance["determinism"]["deterministic"] is True
    assert provenance["determinism"]["cublas_workspace"] == ":4096:8"

    code, stdout, _ = reproduce([png, "--out", tmp_path / "out"], capsys)
    assert code == 0 and "Identical" in stdout and "differs:" not in stdout
    code, stdout, _ = reproduce([png, "--out", tmp_path / "out", "deterministic=false"], capsys)
    assert code == 0 and "differs: deterministic mode on then, off now" in stdout


# --- provenance comparison (unit) ------------------------------------------------------------------


def test_provenance_lines_name_each_cause():
    record = {
        "settings": {"input_image": None, "input_image_sha256": None},
        "versions": {"torch": "2.13.0", "diffusers": "0.42.1"},
        "git": {"commit": "a" * 40, "dirty": False},
        "gpu": "NVIDIA H100 80GB HBM3",
        "weights": {"format": "fp8", "fingerprints": {"transformer": "1111", "vae": "2222"}, "load_s": 3.0},
        "determinism": {"deterministic": True},
        "batch_size": 1,
    }
    then = png_provenance(record)
    assert "load_s" not in then["weights"]  # where and when the weights were read is no identity
    now = json.loads(json.dumps(then))
    now["versions"].update(torch="2.14.0", diffusers=None)
    now["gpu"] = "NVIDIA A100-SXM4-80GB"
    now["weights"]["fingerprints"]["transformer"] = "3333"
    now["determinism"]["deterministic"] = False
    now["git"]["commit"] = "b" * 40
    lines = compare_provenance(then, now).differences
    assert sorted(lines) == sorted([
        "torch 2.13.0 then, 2.14.0 now",
        "diffusers 0.42.1 then, not installed now",
        "device NVIDIA H100 80GB HBM3 then, NVIDIA A100-SXM4-80GB now",
        "transformer weights fingerprint differs: 1111 then, 3333 now (other file)",
        "deterministic mode on then, off now",
        f"git revision {'a' * 12} then, {'b' * 12} now",
    ])  # fmt: skip
    assert compare_provenance(then, json.loads(json.dumps(then))).differences == []
