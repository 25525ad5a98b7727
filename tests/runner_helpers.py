"""Helpers for the runner tests: shared overrides, `python run.py` in a subprocess (closed stdin, so a
login prompt fails the test instead of hanging it), in-process composition and runs. Their fixtures
(`tiny_root`, `runner_env`) are in conftest.py."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# small and fast: the real tiny pipeline at 64x64 with 2 steps (turbo_12 has 1 polish step)
TINY = [
    "model=tiny",
    "resolution.height=64",
    "resolution.width=64",
    "sampler=turbo_12",
    "sampler.steps=2",
]

# Bad inputs caught by the runner's own validation: overrides -> the field the message names.
# Used through the API (test_runner_config) and as real `python run.py` calls (test_runner_cli).
BAD_CONFIG = [
    (["resolution.height=1000"], "resolution.height"),
    (["resolution.width=4096"], "resolution.width"),
    (["resolution.height=256", "resolution.width=2048"], "aspect ratio"),
    (["sampler.steps=0"], "sampler.steps"),
    (["sampler.steps=4", "sampler.guidance_schedule=[7,7,3]"], "sampler.guidance_schedule"),
    (["sampler=quality_48", "sampler.steps=2"], "sampler.polish_steps"),  # quality_48 has 3 polish steps
    (["prompts.file=/nonexistent/prompts.jsonl"], "prompts.file"),
    (['prompt=\'{"high_level_description": "x",, }\''], "line 1, column"),
    (["model=local"], "model.path"),
    (["model.dtype=float8"], "model.dtype"),
    (["tracker.mode=sometimes"], "tracker.mode"),
    (["seed=-1"], "seed"),
    (["model.fp8_mode=fastest"], "model.fp8_mode"),
    (["model.layout=weird"], "model.layout"),
    (["prompts.max_tokens=9999"], "prompts.max_tokens"),
    (["model.compile_mode=turbo"], "model.compile_mode"),
    (["cfg=nan"], "cfg"),
    (["sampler.std=inf"], "sampler.std"),
    (["seed=[]"], "seed"),
    (["sampler.steps=1000000000"], "sampler.steps"),
    (["grid.scores=[ocr_word_accuracy]"], "grid.scores"),  # metrics=[image_stats] does not produce it
]


def run_cli(args: list[str], env: dict, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "run.py"), *args],
        cwd=str(cwd or REPO),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_manifest(folder: Path) -> list[dict]:
    path = Path(folder) / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compose(overrides: list[str], return_hydra_config: bool = False):
    """Compose conf/config.yaml in-process (the same way run.py does)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ideogram4.experiment import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)


def run_inprocess(overrides: list[str], out_dir: Path, tiny_root: str):
    from ideogram4.experiment.run.runner import run

    cfg = compose([*overrides, f"model.cache_dir={tiny_root}"])
    return run(cfg, out_dir=out_dir)


# --- commands written in the docs (README.md, `python run.py --help`) ---

FENCE = re.compile(r"```bash\n(.*?)```", re.S)
INLINE = re.compile(r"`(python run\.py [^`]*)`")


def _strip_comment(line: str) -> str:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
    lexer.whitespace_split, lexer.commenters = True, "#"
    return shlex.join(lexer)


def documented_commands(text: str, fenced: bool = True) -> list[str]:
    """`python run.py ...` from bash blocks and inline code spans (fenced) or from every line,
    comments removed; placeholders (`...`) are not commands."""
    blocks = [block.replace("\\\n", " ") for block in FENCE.findall(text)]  # continuation lines joined
    lines = [x for block in blocks for x in block.splitlines()] if fenced else text.splitlines()
    found = [x[x.index("python run.py") :] for x in lines if "python run.py" in x]
    found += INLINE.findall(text) if fenced else []
    return [_strip_comment(x) for x in found if "..." not in x]


def sigint_by_default() -> None:
    """A child started from a background job inherits SIGINT ignored (then Python installs no
    KeyboardInterrupt handler and Ctrl-C does nothing): restore the default, as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
