"""The documented commands work as written: every `python run.py ...` in README.md and in
`python run.py --help` parses and composes, and the help page says what it should."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from runner_helpers import CONF, REPO, compose, documented_commands

from ideogram4.experiment.config.overrides import check_overrides, group_options, overrides_from_argv


def _help_text() -> str:
    res = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def first_job(overrides: list[str]) -> list[str]:
    """A sweep's first job: each comma list or range reduced to its first value, as the sweeper does."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for text, o in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        if o.is_sweep_override():
            text = f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
        out.append(text)
    return out


def _readme_commands() -> list[str]:
    return documented_commands((REPO / "README.md").read_text(encoding="utf-8"))


def test_readme_has_the_commands_this_test_checks():
    commands = _readme_commands()
    assert len(commands) >= 20 and any(" -m " in c for c in commands) and any("lora=" in c for c in commands)


@pytest.mark.slow
@pytest.mark.parametrize("command", _readme_commands())
def test_readme_run_commands_parse_and_compose(command):
    argv = shlex.split(command)[2:]
    overrides = overrides_from_argv(argv)
    check_overrides(overrides, CONF)  # unknown keys, group options, quoting: one clear line
    jobs = first_job([o for o in overrides if not o.startswith("hydra")])
    if not any(o.startswith("model=") for o in jobs):
        jobs.append("model=tiny")  # composing needs no weights; the tiny model keeps it that way
    cfg = compose(jobs)
    assert cfg.model.name


@pytest.mark.slow
def test_help_is_the_runners_own_page():
    text = _help_text()
    lines = text.splitlines()
    assert len(lines) < 80 and "powered by Hydra" not in text
    assert "bbox" not in text and not re.search(r"^\s*- \d+$", text, re.M)  # no caption dump
    for group, options in group_options(CONF).items():
        (listed,) = [x for x in lines if x.startswith(f"{group}: ")]
        assert listed.split(": ")[1].split(", ") == options
        assert any(x.strip().startswith(f"{group} ") and len(x.split()) > 3 for x in lines), f"{group}: no description"
    tools = ["captions", "metrics", "experiment.score", "experiment.summary", "experiment.reproduce", "lora"]
    for tool in tools:
        assert f"python -m ideogram4.{tool} " in text
    commands = documented_commands(text, fenced=False)
    assert len(commands) >= 5
    for command in commands:
        overrides = overrides_from_argv(shlex.split(command)[2:])
        check_overrides(overrides, CONF)
        compose([*first_job(overrides), "model=tiny"] if "model=" not in command else first_job(overrides))
