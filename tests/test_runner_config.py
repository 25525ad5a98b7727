"""Config composition and validation (no weights, mostly no torch)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from runner_helpers import BAD_CONFIG, CONF, REPO, compose

from ideogram4.checks import cuda_visible as cuda_driver_present
from ideogram4.experiment.config.plan import build_plan
from ideogram4.experiment.config.problems import ConfigError


def options(group: str) -> list[str]:
    """A group's choices: its YAML files, plus the entries registered in code (the sampler presets)."""
    from hydra.core.config_store import ConfigStore

    from ideogram4.experiment import register_configs

    register_configs()
    stored = ConfigStore.instance().repo.get(group, {})
    return sorted({p.stem for p in (CONF / group).glob("*.yaml")} | {k.removesuffix(".yaml") for k in stored})


def plan(overrides: list[str], **kw):
    return build_plan(compose(overrides), check_tokens=kw.pop("check_tokens", False), **kw)


# --- issue 3, point 5 ----------------------------------------------------------------------------------


def test_cfg7_steps48_resolves_to_official_schedule():
    p = plan(["cfg=7", "sampler.steps=48", "device=cpu"])
    assert p.gen.guidance_schedule == [7.0] * 45 + [3.0] * 3
    assert p.gen.steps == 48 and p.gen.cfg == 7.0 and p.gen.mu == 0.0 and p.gen.std == 1.5

    from ideogram4.sampling import official_guidance_schedule

    assert p.gen.guidance_schedule == official_guidance_schedule(48, 7.0, 3, 3.0)


def test_sampler_presets_match_core_presets():
    from ideogram4.sampling import PRESETS

    for name in ("quality_48", "default_20", "turbo_12"):
        cfg = compose([f"sampler={name}"])
        preset = PRESETS[name]
        assert (
            cfg.sampler.steps,
            cfg.sampler.polish_steps,
            cfg.sampler.polish_cfg,
            cfg.sampler.mu,
            cfg.sampler.std,
        ) == (
            preset.steps,
            preset.polish_steps,
            preset.polish_cfg,
            preset.mu,
            preset.std,
        ), name
        assert plan([f"sampler={name}", "device=cpu"]).gen.guidance_schedule == list(preset.guidance_schedule)


def test_constant_sampler_and_explicit_schedule():
    p = plan(["sampler=constant", "cfg=5", "device=cpu"])
    assert p.gen.guidance_schedule == [5.0] * 48 and p.gen.final_step == "clean"
    p = plan(["sampler.steps=4", "sampler.guidance_schedule=[9,8,7,1]", "device=cpu"])
    assert p.gen.guidance_schedule == [9.0, 8.0, 7.0, 1.0]


@pytest.mark.slow
@pytest.mark.parametrize("group", ["model", "sampler", "resolution", "prompts", "tracker"])
def test_every_group_option_composes_and_validates(group, tmp_path):
    for option in options(group):
        extra = ["device=cpu"]
        if group == "model" and option == "local":
            extra.append(f"model.path={tmp_path}")
        if group == "resolution" or group == "prompts":
            extra.append("model=tiny")
        cfg = compose([f"{group}={option}", *extra])
        assert cfg[group].name == option or group == "model", (group, option)
        p = build_plan(cfg, check_tokens=False)
        assert p.prompts, (group, option)


@pytest.mark.slow
def test_every_experiment_composes():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.ideogram4_optuna._space import parse_space

    names = options("experiment")
    assert {"steps_x_cfg", "sampler_presets", "resolutions", "fp8_vs_bf16", "search_cfg"} <= set(names)
    for name in names:
        cfg = compose([f"+experiment={name}"], return_hydra_config=True)
        params = OmegaConf.to_container(cfg.hydra.sweeper.params)
        assert params, name
        # the first value of every swept parameter (a list sweep or a search space) is a valid override
        space, fixed = parse_space(OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()]))
        cfg2 = compose([f"+experiment={name}", *fixed, *[p.override(p.first()) for p in space]])
        build_plan(OmegaConf.merge(cfg2, {"device": "cpu"}), check_tokens=False)


@pytest.mark.slow
def test_prompt_sets_content():
    seed = compose(["prompts=seed_example"]).prompts["items"]
    f1 = OmegaConf.to_container(seed[0].prompt)
    assert "Formula 1" in f1["high_level_description"] and len(f1["compositional_deconstruction"]["elements"]) == 17
    layout = OmegaConf.to_container(compose(["prompts=layout"]).prompts["items"])
    assert all("bbox" in e for item in layout for e in item["prompt"]["compositional_deconstruction"]["elements"])
    plain = OmegaConf.to_container(compose(["prompts=plain"]).prompts["items"])
    assert all(isinstance(i["prompt"], str) for i in plain)
    # the structured sets pass the core's schema check
    for name in ("seed_example", "typography", "layout", "smoke"):
        assert all(not p.issues for p in plan([f"prompts={name}", "model=tiny"]).prompts), name


def test_single_prompt_and_prompt_file(tmp_path):
    p = plan(["model=tiny", "prompt=a red fox in snow"])
    assert [(x.id, x.caption) for x in p.prompts] == [("prompt", "a red fox in snow")]
    f = tmp_path / "mine.jsonl"
    f.write_text(
        json.dumps({"id": "a", "prompt": "one"})
        + "\n"
        + json.dumps(
            {
                "id": "b",
                "prompt": {
                    "high_level_description": "x",
                    "compositional_deconstruction": {"background": "y", "elements": []},
                },
            }
        )
        + "\n"
    )
    p = plan(["model=tiny", f"prompts.file={f}"])
    assert [x.id for x in p.prompts] == ["a", "b"]
    assert (
        p.prompts[1].caption
        == '{"high_level_description":"x","compositional_deconstruction":{"background":"y","elements":[]}}'
    )
    y = tmp_path / "mine.yaml"
    y.write_text("- id: c\n  prompt: three\n")
    assert [x.id for x in plan(["model=tiny", f"prompts.file={y}"]).prompts] == ["c"]


def test_seeds_and_device_defaults():
    p = plan(["model=tiny", "seed=[3,7]"])
    assert p.seeds == [3, 7] and p.model.device == "cpu"
    assert plan(["model=tiny", "seed=5", "images_per_prompt=3"]).seeds == [5, 6, 7]


def test_structured_config_rejects_typos_and_wrong_types():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="sampler.stepz"):
        compose(["sampler.stepz=4"])
    with pytest.raises(ConfigCompositionException, match="cfg"):
        compose(["cfg=seven"])
    with pytest.raises(Exception, match="model/fp9"):
        compose(["model=fp9"])


# --- issue 5: fail fast with messages naming field, value and fix -----------------------------------------


def _bad_json_file(tmp_path: Path) -> str:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "a", "prompt": "ok"}\n{"id": "b", "prompt": \n')
    return str(f)


@pytest.mark.slow
@pytest.mark.parametrize("overrides,field", BAD_CONFIG, ids=[b[1] + str(i) for i, b in enumerate(BAD_CONFIG)])
def test_bad_input_names_field_value_and_fix(overrides, field):
    base = ["device=cpu"] if overrides[0].startswith("model=") else ["model=tiny"]
    with pytest.raises(ConfigError) as e:
        plan([*base, *overrides])
    msg = str(e.value)
    assert field in msg and "Fix:" in msg, msg


def test_malformed_prompt_file_reports_line(tmp_path):
    with pytest.raises(ConfigError, match=r"prompts.file.*line 2"):
        plan(["model=tiny", f"prompts.file={_bad_json_file(tmp_path)}"])


def test_caption_schema_warns_by_default_errors_when_strict():
    bad = 'prompt=\'{"high_level_description": "x", "compositional_deconstruction": {"background": "y", "elements": [{"type": "obj", "bbox": [10, 20, 5, 1200], "desc": "z"}]}}\''
    p = plan(["model=tiny", bad])
    assert any("bbox" in w for w in p.warnings)
    with pytest.raises(ConfigError, match="bbox"):
        plan(["model=tiny", bad, "prompts.strict=true"])


def test_caption_over_token_limit():
    long = "prompt='" + " ".join(f"word{i}" for i in range(2500)) + "'"
    with pytest.raises(ConfigError, match=r"prompt\[prompt\].*tokens"):
        plan(["model=tiny", long], check_tokens=True)


@pytest.mark.skipif(cuda_driver_present(), reason="a CUDA driver is present")
def test_cuda_without_gpu_suggests_tiny_cpu():
    with pytest.raises(ConfigError, match="model=tiny device=cpu"):
        plan(["device=cuda"])
    with pytest.raises(ConfigError, match="model.device"):
        plan([])  # model=fp8 defaults to cuda


def test_config_error_is_fast_and_imports_no_torch():
    """A bad config is reported in seconds because validation imports no torch (lazy imports): that is what
    this asserts. The wall-clock bound only catches a hang; a tight one flaked on a loaded 2-core machine."""
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "sys.path.insert(0, 'tests')\n"
        "from runner_helpers import compose\n"
        "from ideogram4.experiment import ConfigError, build_plan\n"
        "try:\n    build_plan(compose(['model=tiny', 'resolution.height=1000']))\nexcept ConfigError as e:\n    print('ERR', e)\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'wandb') if m in sys.modules]\n"
        "print('HEAVY', heavy, round(time.perf_counter() - t, 2))\n"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    dt = time.perf_counter() - t0
    assert "ERR" in out.stdout and "resolution.height" in out.stdout, out.stdout + out.stderr
    assert "HEAVY []" in out.stdout, (
        f"heavy modules imported while validating: {out.stdout.splitlines()[-1]} (ideogram4/__init__.py must import lazily)"
    )
    assert dt < 30.0, f"config error took {dt:.1f} s"


def test_full_validation_with_token_count_imports_no_torch_or_transformers():
    """Token counting for long captions uses the fast `tokenizers` library (issue 8, point 6)."""
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from runner_helpers import compose\n"
        "from ideogram4.experiment import build_plan\n"
        "plan = build_plan(compose(['model=tiny', 'prompts=seed_example']), check_tokens=True)\n"
        "from ideogram4.prompts import fast_tokenizer\n"
        "assert fast_tokenizer.cache_info().currsize == 1, 'the long caption was not counted'\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'wandb') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_tokens_counted_fast_equal_the_pipeline_tokenizer():
    from ideogram4.prompts import bundled_tokenizer_dir, count_tokens, count_tokens_fast, load_tokenizer

    tok = load_tokenizer(bundled_tokenizer_dir())
    f1 = OmegaConf.to_container(compose(["prompts=seed_example"]).prompts["items"][0].prompt)
    for caption in ("A red fox asleep in the snow, watercolor", "ünïcode ✓ 日本語\n  two lines", f1):
        assert count_tokens_fast(caption) == count_tokens(tok, caption)
    assert count_tokens_fast(f1) > 1000


def test_launcher_configs_compose():
    cfg = compose(["hydra/launcher=slurm_1gpu"], return_hydra_config=True)
    assert cfg.hydra.launcher.gpus_per_node == 1 and "SlurmLauncher" in cfg.hydra.launcher._target_
    cfg = compose(["hydra/launcher=submitit_local"], return_hydra_config=True)
    assert "LocalLauncher" in cfg.hydra.launcher._target_
    assert "ComparisonGridCallback" in cfg.hydra.callbacks.comparison_grid._target_


def test_model_compile_and_fp8_settings_are_checked():
    from ideogram4.experiment.config.checks import check_model
    from ideogram4.experiment.config.schema import ModelConf

    assert check_model(ModelConf()) == []  # defaults: fp8_mode=auto, compile_blocks=auto
    for ok in (True, False, "auto", "aot_eager"):
        assert check_model(ModelConf(compile_blocks=ok)) == []
    (bad,) = check_model(ModelConf(compile_blocks=""))
    assert bad.startswith("model.compile_blocks") and "auto" in bad
    (bad,) = check_model(ModelConf(fp8_mode="fastest"))
    assert "model.fp8_mode" in bad and "auto" in bad


def test_runner_jobs_grow_cuda_segments():
    """PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True is set before any job touches CUDA."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
    code = "import os, ideogram4.experiment.run.entry; print(os.environ['PYTORCH_CUDA_ALLOC_CONF'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "expandable_segments:True"
