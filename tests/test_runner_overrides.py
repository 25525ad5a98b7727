"""Command-line overrides checked against the typed schema: one line, exit 2, before Hydra composes."""

from __future__ import annotations

import os
import sys

import pytest
from runner_helpers import CONF, REPO, compose

from ideogram4.experiment.config.overrides import check_overrides, group_options, overrides_from_argv
from ideogram4.experiment.config.problems import ConfigError


def _problem(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        check_overrides(overrides, CONF)
    (line,) = e.value.problems
    return line


@pytest.mark.parametrize(
    "override, named, nearest",
    [
        ("+cfgg=3", "cfgg", "did you mean cfg?"),
        ("cfgg=3", "cfgg", "did you mean cfg?"),
        ("++sampler.stpes=3", "sampler.stpes", "did you mean sampler.steps?"),
        ("model.bogus_key_xyz=1", "model.bogus_key_xyz", "use one of name, source, path"),
        ("lora.style.path=a.safetensors", "lora.style", "lora is a list"),
        ("lora=[{path:a.safetensors,sclae:2}]", "lora.0.sclae", "did you mean lora.0.scale?"),
        ("+lora.0.pth=a", "lora.0.pth", "did you mean lora.0.path?"),
    ],
)
def test_unknown_keys_name_the_key_and_the_nearest_valid_one(override, named, nearest):
    line = _problem(["model=tiny", override])
    assert line.startswith(f"{named} = ") and "is not a config key" in line and nearest in line


def test_unknown_group_options_list_the_options():
    line = _problem(["sampler=turbo12"])
    assert line.startswith("sampler = 'turbo12': is not a sampler option")
    options = line.split("choose one of: ")[1].split(", ")
    from ideogram4.spec import PRESETS

    assert options == sorted(PRESETS)  # registered in code, not a YAML file
    assert "turbo13" in _problem(["sampler=turbo_12,turbo13"])  # sweeps: every choice
    assert "typography" in _problem(["prompts=typo"])
    assert sorted(f[:-5] for f in os.listdir(CONF / "model")) == group_options(CONF)["model"]


def test_unparsable_override_says_how_to_quote():
    line = _problem(["summary_baseline=cfg=7"])
    assert "mismatched input" in line and "'summary_baseline=\"cfg=7\"'" in line
    check_overrides(['summary_baseline="cfg=7"'], CONF)


def test_valid_overrides_pass_and_compose():
    good = [
        "model=tiny",
        "cfg=3",
        "seed=[0,1]",
        "lora=[{path:a.safetensors,scale:0.5,name:style}]",
        "lora.0.scale=0.25",
        "+metric_options.ocr.margin=30",
        "prompts.items=[{id:a,prompt:b}]",
        "hydra.run.dir=/tmp/x",
        "+experiment=seeds",
        "~negative_prompt",
    ]
    check_overrides(good, CONF)
    cfg = compose([o for o in good if not o.startswith(("hydra.", "+experiment", "~"))])
    assert cfg.lora[0].scale == 0.25 and cfg.lora[0].name == "style"


def test_argv_flags_are_not_overrides():
    assert overrides_from_argv(["-m", "cfg=3", "--cfg", "job", "seed=1"]) == ["cfg=3", "seed=1"]
    assert overrides_from_argv(["--config-name", "other", "cfg=3"]) == ["cfg=3"]
    assert overrides_from_argv(["--help"]) is None and overrides_from_argv(["--info", "defaults"]) is None


@pytest.mark.parametrize("override", ["+cfgg=3", "cfgg=3", "sampler=turbo12"])
def test_run_py_gives_one_line_and_exit_2_before_any_weights(override, tmp_path):
    import subprocess

    env = {**os.environ, "IDEOGRAM4_CACHE": str(tmp_path / "never-built")}
    res = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "model=tiny", override],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 2, out
    assert len(out.splitlines()) == 1 and "Traceback" not in out and out.startswith("Config: ")
    assert not (tmp_path / "never-built").exists() and not (tmp_path / "outputs").exists()
