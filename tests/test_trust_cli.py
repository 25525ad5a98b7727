"""Bad input at the command line is one line (issue 19): the field, the bad value and the fix on stderr,
exit 2 (config) or 4 (a folder, file or database that cannot be used), no traceback, before any weights
load. Every case runs the real command in a subprocess; none of them may get as far as an image."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from runner_helpers import REPO, TINY
from test_trust import _bad_images

from ideogram4.experiment.run.exits import EXIT_CONFIG, EXIT_OUTPUT

pytestmark = pytest.mark.slow  # subprocesses, as tests/test_runner_cli.py

SEED_SET = REPO / "conf" / "prompts" / "seed_example.yaml"
# a search over the tiny model whose objective the default metrics (image_stats) produce
SEARCH = ["-m", "hydra/sweeper=optuna", *TINY, "tracker=none", "hydra.sweeper.objective=[{metric:pixel_std}]"]


def env(tmp_path: Path, **extra: str) -> dict:
    """No weights anywhere (an empty cache: a run that got as far as loading would fail), no W&B, no network."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return (
        base
        | dict(
            PYTHONPATH=str(REPO),
            IDEOGRAM4_CACHE=str(tmp_path / "no-weights"),
            HF_HUB_OFFLINE="1",
            WANDB_MODE="disabled",
        )
        | extra
    )


def run(args: list[str], environment: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line(res: subprocess.CompletedProcess, code: int, *named: str) -> str:
    both = res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert res.returncode == code and len(lines) == 1 and "Traceback" not in both, both[-3000:]
    assert all(n in lines[0] for n in named) and "Fix" in lines[0], lines[0]
    assert "Loading pipeline" not in both
    return lines[0]


def no_images(folder: Path) -> bool:
    return not list(folder.rglob("*.png"))


# --- Optuna search: its space, its storage, its study ---------------------------------------------


@pytest.mark.parametrize(
    "sweep, named",
    [
        ("cfg=interval(9,2)", ["cfg", "interval(9,2)", "interval(2.0, 9.0)"]),
        ("cfg=range(5,1)", ["cfg", "range(5,1)", "is empty"]),
        ("cfg=tag(log, interval(0,1))", ["cfg", "tag(log, interval(0,1))", "interval(0.001, 1.0)"]),
        ("sampler.polish_cfg=glob(*)", ["sampler.polish_cfg", "glob(*)", "choice("]),
    ],
)
def test_a_search_space_that_is_empty_or_impossible_is_one_line(tmp_path, sweep, named):
    sweep_dir = tmp_path / "sweep"
    res = run(["run.py", *SEARCH, sweep, f"hydra.sweep.dir={sweep_dir}"], env(tmp_path))
    assert_one_line(res, EXIT_CONFIG, *named)
    assert not (sweep_dir / "study.db").exists() and no_images(tmp_path)


def _study(path: Path, fixed: list[str]) -> None:
    """A study as a search over the tiny model left it: its objective and fixed overrides recorded."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="search", directions=["maximize"])
    study.set_user_attr("objective", [{"metric": "pixel_std", "direction": "maximize"}])
    study.set_user_attr("fixed_overrides", sorted(fixed))
    study.set_user_attr("padding", "x" * 20000)  # pages beyond the header, so a cut file is a damaged one


def _garbage(db: Path) -> None:
    db.write_bytes(b"not a database, just bytes " * 200)


def _truncated(db: Path) -> None:
    _study(db, [])
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])


@pytest.mark.parametrize(
    "storage, damage, code, named",
    [
        ("foo://bar", None, EXIT_CONFIG, ["hydra.sweeper.storage", "foo://bar", "sqlite:///"]),
        ("sqlite:///{tmp}/missing/study.db", None, EXIT_OUTPUT, ["hydra.sweeper.storage", "missing", "does not exist"]),
        (None, _garbage, EXIT_OUTPUT, ["study.db", "not a database", "move it aside"]),
        (None, _truncated, EXIT_OUTPUT, ["study.db", "malformed", "move it aside"]),
    ],
    ids=["unknown scheme", "missing folder", "garbage study.db", "truncated study.db"],
)
def test_a_storage_that_cannot_be_used_is_one_line(tmp_path, storage, damage, code, named):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    args = ["run.py", *SEARCH, "cfg=interval(2,9)", f"hydra.sweep.dir={sweep_dir}"]
    if storage:
        args.append(f"hydra.sweeper.storage={storage.format(tmp=tmp_path)}")
    if damage:
        damage(sweep_dir / "study.db")
    assert_one_line(run(args, env(tmp_path)), code, *named)
    assert no_images(tmp_path) and not (tmp_path / "missing").exists()


def test_a_study_locked_by_another_process_is_one_line_after_the_lock_timeout(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    _study(sweep_dir / "study.db", [])
    holder = sqlite3.connect(sweep_dir / "study.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another worker in the middle of a write, for longer than we wait
    try:
        args = ["run.py", *SEARCH, "cfg=interval(2,9)", f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.lock_timeout=1"]
        line = assert_one_line(run(args, env(tmp_path)), EXIT_OUTPUT, "study.db", "locked", "lock_timeout")
    finally:
        holder.close()
    assert "waited 1 s" in line and no_images(tmp_path)


def test_resuming_a_study_with_a_changed_fixed_override_is_one_line(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    first = [*SEARCH[2:], f"hydra.sweep.dir={sweep_dir}"]
    _study(sweep_dir / "study.db", [o for o in first if not o.startswith(("hydra", "cfg="))] + ["seed=1"])
    args = ["run.py", *SEARCH, "cfg=interval(2,9)", "seed=2", f"hydra.sweep.dir={sweep_dir}"]
    line = assert_one_line(run(args, env(tmp_path)), EXIT_CONFIG, "hydra.sweeper.study_name", "'search'")
    assert "seed=1" in line and "seed=2" in line and no_images(tmp_path)


def test_the_optuna_sweeper_without_optuna_is_one_line(tmp_path):
    broken = tmp_path / "no_optuna" / "optuna"  # first on the path: `import optuna` fails as if not installed
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('No module named optuna')\n")
    environment = env(tmp_path, PYTHONPATH=f"{broken.parent}{os.pathsep}{REPO}")
    res = run(["run.py", *SEARCH, "cfg=interval(2,9)", f"hydra.sweep.dir={tmp_path / 'sweep'}"], environment)
    assert_one_line(res, EXIT_CONFIG, "hydra/sweeper", "optuna", "pip install -e '.[search]'")


# --- the output folder: Hydra would fail opening its log there -------------------------------------


@pytest.mark.parametrize(
    "mode, key, folder",
    [
        ("run", "hydra.run.dir", "{file}/run"),  # its parent is a regular file: an OSError even for root
        ("multirun", "hydra.sweep.dir", "{file}/sweep"),
        ("run", "hydra.run.dir", "/proc/ideogram4-test/run"),  # /proc takes no new folders, root or not
    ],
)
def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, mode, key, folder):
    file = tmp_path / "a_file"
    file.write_text("not a folder")
    folder = folder.format(file=file)
    sweep = ["-m", "seed=0,1"] if mode == "multirun" else []
    res = run(["run.py", *sweep, *TINY, "tracker=none", f"{key}={folder}"], env(tmp_path))
    assert_one_line(res, EXIT_OUTPUT, key, folder, "writable folder")
    assert file.read_text() == "not a folder" and no_images(tmp_path)


# --- image files given on the command line or found in an output folder ---------------------------


@pytest.mark.parametrize("kind", ["big", "not an image"])
def test_captions_draw_over_a_bad_image_is_one_line(tmp_path, kind):
    path, message = _bad_images(tmp_path)[kind]
    out = tmp_path / "overlay.png"
    res = run(["-m", "ideogram4.captions", "draw", str(SEED_SET), "--image", str(path), "-o", str(out)], env(tmp_path))
    assert_one_line(res, EXIT_CONFIG, str(path), message)
    assert not out.exists()


def test_the_wandb_table_skips_an_oversized_image_with_one_warning(tmp_path, caplog):
    from ideogram4.experiment.run.runner import Item, _log_job_table

    (tmp_path / "images").mkdir()
    big, message = _bad_images(tmp_path)["big"]
    big.rename(tmp_path / "images" / "big.png")
    Image.new("RGB", (64, 48), "red").save(tmp_path / "images" / "ok.png")
    tables = []

    class Tracker:
        enabled = True

        def log_table(self, name, columns, rows, image_column):
            tables.append(rows)

        def summary(self, values):
            pass

    record = {"prompt_id": "p", "caption": "c", "seed": 0, "rng_device": "cpu", "settings_hash": "h", "settings": {}}
    items = [
        Item(None, 0, name, f"images/{name}.png", record | {"image": f"images/{name}.png"}) for name in ("big", "ok")
    ]
    _log_job_table(Tracker(), items, tmp_path)
    (rows,) = tables
    assert rows[0][0] is None and rows[1][0].size == (64, 48)  # the row stays, without the oversized image
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "big.png" in warning and message in warning
