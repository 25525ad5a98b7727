"""`python -m ideogram4.lora make-example`: one LoRA for the tiny model in three trainers' layouts, and
the README's LoRA walk-through run as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
import torch
from runner_helpers import REPO, read_manifest

from ideogram4.lora import linear_shapes, map_lora, read_lora
from ideogram4.lora.__main__ import main
from ideogram4.lora.example import EXAMPLE_LAYOUTS, example_factors
from ideogram4.models.transformer import Ideogram4Transformer
from ideogram4.tiny import TINY_DIT

DETECTED = {"aitk": "ai-toolkit", "kohya": "kohya", "peft": "peft"}


def test_each_layout_is_detected_and_places_the_same_deltas(tmp_path):
    with torch.device("meta"):
        shapes = linear_shapes(Ideogram4Transformer(TINY_DIT))
    expected = {name: B @ A for name, (A, B) in example_factors().items()}
    assert len(expected) == TINY_DIT.num_layers * 5  # qkv, o, w1, w2, w3 in every layer
    for layout in EXAMPLE_LAYOUTS:
        out = tmp_path / f"{layout}.safetensors"
        assert main(["make-example", str(out), "--layout", layout]) == 0
        placed = map_lora(read_lora(out), shapes)
        assert placed.layout == DETECTED[layout] and placed.rank == 4
        assert set(placed.layers) == set(expected)
        for name, (A, B) in placed.layers.items():
            torch.testing.assert_close(B @ A, expected[name], rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["make-example", str(tmp_path / "style.pt")])
    assert e.value.code == 2 and "must end in .safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["make-example", str(tmp_path / "x.safetensors"), "--layout", "comfy"])


def _readme_lora_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- lora-try -->\n```bash\n(.*?)```", text, re.S).group(1).replace("\\\n", " ")
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert [c[:3] for c in commands] == [["python", "-m", "ideogram4.lora"], ["python", "run.py", "-m"]]
    commands[1][1] = str(REPO / "run.py")
    return [[sys.executable, *c[1:]] for c in commands]


@pytest.mark.slow
def test_readme_lora_section_runs_as_written(tmp_path, runner_env):
    log = ""
    for command in _readme_lora_commands():
        res = subprocess.run(command, cwd=tmp_path, env=runner_env, capture_output=True, text=True, timeout=600)
        log += res.stdout + res.stderr
        assert res.returncode == 0, log[-3000:]
    sweep = tmp_path / "outputs" / "sweeps" / "lora_try"
    records = [r for job in sorted(sweep.glob("[0-9]")) for r in read_manifest(job)]
    assert sorted(r["loras"][0]["scale"] for r in records) == [0.0, 1.0]
    assert log.count("Loading pipeline") == 1  # one base load for both scales
    assert (sweep / "comparison_grid.png").exists()
    from PIL import Image

    pixels = [Image.open(job / r["image"]).tobytes() for job in sorted(sweep.glob("[0-9]")) for r in read_manifest(job)]
    assert pixels[0] != pixels[1], "the LoRA did not change the image"
