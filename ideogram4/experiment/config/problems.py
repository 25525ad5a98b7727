"""Config problems in one wording: ``field = value: what is wrong. Fix: what to do``, all collected into
one :class:`ConfigError`; the core's findings (``ideogram4.rules``, API argument names) turned into config
keys by the one table ``API_TO_CONFIG``. Below every config check (checks, edit_plan, prompt_plan, plan).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ideogram4 import rules
from ideogram4.errors import ArgumentError, NoGpu

# The one table from the core's argument names (`ideogram4.checks`, the Python API) to config keys.
API_TO_CONFIG = {
    "height": "resolution.height",
    "width": "resolution.width",
    "num_inference_steps": "sampler.steps",
    "polish_steps": "sampler.polish_steps",
    "cfg_scale": "cfg",
    "guidance_schedule": "sampler.guidance_schedule",
    "mu": "sampler.mu",
    "std": "sampler.std",
    "final_step": "sampler.final_step",
    "rand_device": "sampler.rand_device",
    "seeds": "seed",
    "torch_dtype": "model.dtype",
    "fp8_mode": "model.fp8_mode",
    "compile_mode": "model.compile_mode",
    "device": "device",
    "compile_blocks": "model.compile_blocks",
    "width x height": "resolution",
    "load_unconditional": "model.load_unconditional",
    "negative_prompt": "negative_prompt",
}


class ConfigError(ValueError):
    """One or more problems in the run configuration, each naming the field, the value and the fix."""

    def __init__(self, problems: list[str], warnings: list[str] = ()):
        self.problems, self.warnings = list(problems), list(warnings)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        also = "".join(f"\n  warning: {w}" for w in self.warnings)
        super().__init__(f"{len(self.problems)} problem(s) in the run configuration:\n{lines}{also}")


def problem(field_name: str, value: Any, what: str, fix: str) -> str:
    return f"{field_name} = {_show(value)}: {what}. Fix: {fix}"


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def one_of(field_name: str, value: Any, allowed: tuple, what: str = "is not a known option") -> list[str]:
    return core_problems(rules.choice_problems(field_name, value, allowed, what))


def finite(field_name: str, value: Any) -> list[str]:
    return core_problems(rules.number_problems(field_name, value, 7.0))


def core_problems(findings: list[ArgumentError]) -> list[str]:
    """The core's findings (`ideogram4.rules`, API names) as problems in config keys."""
    return [core_problem(e) for e in findings]


def to_config_keys(text: str, names: dict[str, str] = API_TO_CONFIG) -> str:
    """Every API argument named in `text` (as `name=` or `name[`) by its config key, in one pass."""
    pattern = r"(?<![\w.])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")(?=[=\[]|$)"
    return re.sub(pattern, lambda m: names[m.group(1)], text)


def core_problem(e: ArgumentError, field_name: str | None = None) -> str:
    """The core's finding in this runner's words: its argument named by its config key (or `field_name`)."""
    names = API_TO_CONFIG | ({e.name: field_name} if field_name else {})
    key = names.get(e.name) or to_config_keys(e.name, names)
    fix = to_config_keys(e.fix, names)
    if isinstance(e, NoGpu):
        fix = "run on a GPU machine, or try the runner on CPU with `model=tiny device=cpu`"
    return problem(key, e.value, to_config_keys(e.what, names) or "is not valid", fix)
