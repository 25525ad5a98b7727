"""One check layer: each value rule lives in `ideogram4.rules` (API names, limits from `spec`); the
pipeline raises its first finding, the runner reports every finding under its config keys through the
one table `API_TO_CONFIG`. No second copy of a rule or a limit in the runner."""

import ast
import math
import re
from pathlib import Path

import pytest
from runner_helpers import compose

from ideogram4 import checks, rules, spec
from ideogram4.errors import ArgumentError
from ideogram4.experiment.config.plan import build_plan
from ideogram4.experiment.config.problems import API_TO_CONFIG, ConfigError, to_config_keys

ROOT = Path(__file__).resolve().parents[1]
RUNNER_CHECKS = [ROOT / "ideogram4/experiment/config" / name for name in ("checks.py", "plan.py", "edit_plan.py")]
LIMITS = {
    spec.TOKEN_PIXELS,
    spec.MIN_SIDE,
    spec.MAX_SIDE,
    spec.MAX_ASPECT,
    spec.MAX_TEXT_TOKENS,
    spec.MAX_STEPS,
    spec.MAX_SEED,
    spec.GRID_CELL_SIZE,
}


def numbers_in_rules(path: Path) -> list[str]:
    """Numeric literals equal to a spec limit, anywhere in the module (comparisons, `%`, ranges, ...)."""
    tree = ast.parse(path.read_text())
    return [
        f"{path.name}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
        and node.value in LIMITS
    ]


def test_runner_checks_define_no_numeric_limit():
    offenders = [hit for path in RUNNER_CHECKS for hit in numbers_in_rules(path)]
    assert not offenders, "limits belong in ideogram4/spec.py:\n" + "\n".join(offenders)


def test_the_limit_scan_catches_a_restated_rule(tmp_path):
    copied = tmp_path / "copied.py"
    copied.write_text("def bad(v):\n    return v % 16 or not 256 <= v <= 2048 or v > 6\n")
    assert len(numbers_in_rules(copied)) == 4


def test_each_rule_is_defined_once_and_imported_from_its_home():
    rule_names = {name for name in vars(rules) if name.endswith("_problems")}
    assert {"side_problems", "schedule_problems", "strength_problems", "seed_problems"} <= rule_names
    redefined = []
    for path in [*ROOT.joinpath("ideogram4").rglob("*.py"), *ROOT.joinpath("hydra_plugins").rglob("*.py")]:
        if path == ROOT / "ideogram4/rules.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in rule_names:
                redefined.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name}")
    assert not redefined, "\n".join(redefined)
    from ideogram4.experiment.config import checks as runner_checks
    from ideogram4.experiment.config import plan

    assert runner_checks.rules is rules and plan.seed_problems is rules.seed_problems


def raised(call) -> ArgumentError:
    with pytest.raises(ArgumentError) as info:
        call()
    return info.value


# (config overrides, the same value through the API's check)
SAME_RULE = [
    (["resolution.width=1000"], lambda: checks.check_resolution(1024, 1000, spec.side_range({}))),
    (["sampler.steps=0"], lambda: checks.check_schedule(0, None, 7.0)),
    (["cfg=nan"], lambda: checks.check_schedule(4, None, math.nan)),
    (["sampler.std=0"], lambda: checks.check_number("std", 0.0, 1.5, positive=True)),
    (["sampler.steps=2", "sampler.guidance_schedule=[7]"], lambda: checks.check_schedule(2, [7.0], 7.0)),
    (["denoising_strength=0.5"], lambda: checks.check_strength(0.5, img2img=False)),
    (["seed=-1"], lambda: checks.check_seed("seeds", -1)),
    (["sampler=quality_48", "sampler.steps=2"], lambda: rules.raise_first(rules.polish_problems(3, 2))),
    (["sampler.polish_steps=-1"], lambda: rules.raise_first(rules.polish_problems(-1, 48))),
    (
        ["model.compile_mode=max-autotune"],
        lambda: rules.raise_first(rules.compile_problems("auto", "max-autotune", "cpu")),
    ),
    (
        ["model.compile_blocks=false", "model.compile_mode=max-autotune"],
        lambda: rules.raise_first(rules.compile_problems(False, "max-autotune")),
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides, api_call", SAME_RULE, ids=[o[0] for o, _ in SAME_RULE])
def test_runner_and_api_report_the_same_finding(overrides, api_call):
    finding = raised(api_call)
    with pytest.raises(ConfigError) as info:
        build_plan(compose(["model=tiny", "device=cpu", *overrides]), check_tokens=False)
    key = API_TO_CONFIG.get(finding.name, finding.name)
    mine = [p for p in info.value.problems if p.startswith(f"{key} = ")]
    assert len(mine) == 1, info.value.problems
    what = to_config_keys(finding.what)  # e.g. "for num_inference_steps=2" -> "for sampler.steps=2"
    assert f": {what}. Fix: " in mine[0], (mine[0], str(finding))
    assert not re.search(r"(?<![\w.])(num_inference_steps|cfg_scale|seeds|compile_blocks)\b", mine[0]), mine[0]
    assert not re.search(r"\b(\w+\.)\1", mine[0]), mine[0]  # translated once: no "sampler.sampler.std"


def test_every_finding_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        build_plan(compose(["model=tiny", "device=cpu", "resolution.width=1000", "sampler.steps=0", "cfg=inf"]))
    keys = [p.split(" = ")[0] for p in info.value.problems]
    assert {"resolution.width", "sampler.steps", "cfg"} <= set(keys), info.value.problems


def test_a_wrong_kind_is_a_type_error_and_an_argument_error():
    (finding,) = rules.side_problems("height", 64.0)
    assert isinstance(finding, TypeError) and isinstance(finding, ArgumentError)
    assert str(finding) == "height=64.0 is a float: pass an int multiple of 16, e.g. 1024"


# --- the model's side range: one rule, one reading of the range, for the API and the runner -------------

RELEASED_SIZES = [(192, 256), (256, 3008), (256, 3000), (1792, 256), (64, 64)]


@pytest.mark.parametrize("height, width", RELEASED_SIZES)
def test_runner_and_api_judge_a_size_with_the_same_range(height, width):
    from ideogram4.experiment.config.checks import check_resolution
    from ideogram4.experiment.config.problems import core_problem
    from ideogram4.experiment.config.schema import ModelConf, ResolutionConf

    released = ModelConf()  # the fp8 release on the hub: its DiT config carries no range
    finding = raised(lambda: checks.check_resolution(height, width, (spec.MIN_SIDE, spec.MAX_SIDE)))
    problems = check_resolution(ResolutionConf(height=height, width=width), released)
    assert problems and problems[0] == core_problem(finding), problems
    assert isinstance(finding, ValueError) and "\n" not in str(finding)


def test_the_runner_reads_the_range_the_loader_reads(tmp_path, monkeypatch):
    from ideogram4.experiment.config import components
    from ideogram4.experiment.config.schema import ModelConf

    monkeypatch.setattr(components, "original_cwd", lambda: str(tmp_path))
    assert components.model_side_range(ModelConf()) == (spec.MIN_SIDE, spec.MAX_SIDE) == (256, 2048)
    assert components.model_side_range(ModelConf(source="tiny")) == (spec.TINY_MIN_SIDE, spec.MAX_SIDE)
    assert components.model_side_range(ModelConf(tiny_variants=True)) == (spec.TINY_MIN_SIDE, spec.MAX_SIDE)
    folder = tmp_path / "model"
    (folder / "transformer").mkdir(parents=True)
    local = ModelConf(source="local", path=str(folder))
    assert components.model_side_range(local) == (256, 2048)  # no config.json yet: the released range
    (folder / "transformer" / "config.json").write_text('{"min_side": 64, "max_side": 512}')
    assert components.model_side_range(local) == (64, 512) == spec.side_range({"min_side": 64, "max_side": 512})
    with pytest.raises(ConfigError) as info:
        build_plan(compose(["model=local", f"model.path={folder}", "device=cpu", "resolution.height=1024"]))
    assert any(p.startswith("resolution.height = 1024: is outside 64..512") for p in info.value.problems)


def test_the_tiny_build_declares_the_range_the_runner_assumes():
    from ideogram4.tiny import TINY_DIT, diffusers_dit_config

    assert TINY_DIT.side_range == (spec.TINY_MIN_SIDE, spec.MAX_SIDE) and TINY_DIT.min_side <= 64
    assert spec.side_range(diffusers_dit_config(TINY_DIT)) == TINY_DIT.side_range


def test_the_lora_name_rule_is_the_core_rule_in_the_runners_words():
    with pytest.raises(ConfigError) as info:
        build_plan(compose(["model=tiny", "lora=[{path:a/b/c.safetensors,name:'no way'}]"]), check_tokens=False)
    (finding,) = rules.lora_name_problems("name", "no way")
    assert f"lora.0.name = 'no way': {finding.what}. Fix: {finding.fix}" in info.value.problems
    assert rules.lora_name_problems("name", "style-v1.2") == []
