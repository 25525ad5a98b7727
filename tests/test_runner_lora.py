"""LoRA in the runner: a typed `lora` list, scale sweeps on one loaded base, LoRAs in every record."""

from __future__ import annotations

import json

import pytest
from lora_writers import random_lora, write_ai_toolkit
from runner_helpers import TINY, compose, read_manifest, run_cli, run_inprocess

from ideogram4.experiment.config.plan import build_plan
from ideogram4.experiment.config.problems import ConfigError
from ideogram4.experiment.run import outputs as om
from ideogram4.experiment.run.records import PNG_SETTINGS_KEY

FAST = [*TINY, "tracker=none", "prompt=a cat"]


@pytest.fixture(scope="module")
def lora_file(tiny_original, tmp_path_factory):
    import torch

    from ideogram4.lora import linear_shapes
    from ideogram4.models.transformer import Ideogram4Transformer
    from ideogram4.tiny import TINY_DIT

    with torch.device("meta"):
        shapes = linear_shapes(Ideogram4Transformer(TINY_DIT))
    path = tmp_path_factory.mktemp("lora") / "style.safetensors"
    write_ai_toolkit(path, random_lora(shapes, rank=4, seed=0))
    return path


def test_bad_lora_settings_are_config_errors(tmp_path):
    cases = [
        (["lora=[{path:/nonexistent/style.safetensors}]"], "lora.0.path"),
        ([f"lora=[{{path:{tmp_path}/x.safetensors}}]"], "no such file"),
        (["lora=[{path:a/b/c.safetensors,target:both_ways}]"], "lora.0.target"),
        (["lora=[{path:a/b/c.safetensors}]", "lora.0.scale=nan"], "lora.0.scale"),
        (["lora=[{scale:1}]"], r"lora\[0\].path|lora.0.path"),
        (["lora=[{path:a/b/c.safetensors},{path:x/y/c.safetensors}]"], "lora.1.name = 'c': names two LoRAs"),
        (["lora=[{path:a/b/c.safetensors,name:'no way'}]"], "lora.0.name"),
    ]
    for overrides, field in cases:
        with pytest.raises(ConfigError, match=field):
            build_plan(compose(["model=tiny", *overrides]), check_tokens=False)


def test_scale_sweep_reuses_the_base_and_records_each_lora(tmp_path, tiny_root, lora_file):
    from ideogram4.experiment.run import cache

    runs = {}
    for scale in (0.0, 1.0):
        for cfg in (3, 7):
            res = run_inprocess([*FAST, f"lora=[{{path:{lora_file},scale:{scale}}}]", f"cfg={cfg}"],
                                tmp_path / f"{scale}-{cfg}", tiny_root)  # fmt: skip
            runs[(scale, cfg)] = res.made[0]
    loads = {r["pipeline"]["load_id"] for r in runs.values()}
    assert len(loads) == 1, "the base weights were loaded more than once"
    rec = runs[(1.0, 7)]
    (lora,) = rec["loras"]
    assert (lora["name"], lora["scale"], lora["target"], lora["layout"]) == ("style", 1.0, "transformer", "ai-toolkit")
    assert len(lora["sha256"]) == 64 and rec["settings"]["loras"][0]["sha256"] == lora["sha256"]
    png = om.read_png_text(tmp_path / "1.0-7" / rec["image"])
    assert "Lora hashes" in png["parameters"] and json.loads(png[PNG_SETTINGS_KEY])["loras"][0]["name"] == "style"
    # the scale changes the image; scale 0 is the base image (the LoRA does nothing)
    assert rec["settings_hash"] != runs[(0.0, 7)]["settings_hash"]
    (base,) = run_inprocess([*FAST, "cfg=7"], tmp_path / "base", tiny_root).made
    pixels = {k: _pixels(tmp_path / f"{k[0]}-{k[1]}" / r["image"]) for k, r in runs.items()}
    assert _pixels(tmp_path / "base" / base["image"]) == pixels[(0.0, 7)] != pixels[(1.0, 7)]
    assert base["loras"] == [] and cache._CURRENT.pipe.list_loras() == []  # a job without LoRA unloads it


def _pixels(path) -> bytes:
    from PIL import Image

    with Image.open(path) as im:
        return im.tobytes()


@pytest.mark.slow
def test_cli_sweep_over_lora_scale_and_cfg_loads_base_weights_once(tmp_path, runner_env, lora_file):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *FAST,
        f"lora=[{{path:{lora_file}}}]",
        "lora.0.scale=0,0.5,1",
        "cfg=4,7",
        f"hydra.sweep.dir={sweep}",
    ]
    res = run_cli(args, runner_env)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-3000:]
    assert log.count("Loading pipeline") == 1 and "scale changed in place" in log
    scales = sorted(r["loras"][0]["scale"] for j in sweep.glob("[0-9]") for r in read_manifest(j))
    assert scales == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
