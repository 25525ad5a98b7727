"""The runner's Hydra config (conf/) is package data: found through importlib.resources, so the
reproduce command composes it from an installed package as well as from a source checkout."""

import fnmatch
import json
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_globs_cover_every_conf_file():
    from ideogram4.experiment.reproduce.config import conf_dir

    assert conf_dir().resolve() == (REPO / "conf").resolve()  # in a checkout: the top-level conf/
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = REPO / "ideogram4" / "experiment"
    files = [p.relative_to(package).as_posix() for p in (package / "conf").rglob("*") if p.is_file()]
    assert len(files) > 10 and "conf/config.yaml" in files
    missed = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs["ideogram4.experiment"])]
    assert missed == []


def test_the_conf_is_found_and_composed_outside_a_checkout(tmp_path):
    """The package alone, conf resolved into it as a wheel holds it, imported from elsewhere."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "ideogram4", site / "ideogram4", ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "import json; from ideogram4.experiment.reproduce.config import conf_dir, compose_overrides; "
        "print(json.dumps([str(conf_dir()), compose_overrides(['cfg=3', 'resolution=portrait_3_4'])]))"
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    where, composed = json.loads(run.stdout.splitlines()[-1])
    assert Path(where) == site / "ideogram4" / "experiment" / "conf" and not Path(where).is_symlink()
    assert composed["cfg"] == 3 and composed["resolution"]["height"] > composed["resolution"]["width"]
