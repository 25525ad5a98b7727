"""The report of a real tiny-model sweep (2 parameters x 2 seeds x 2 prompts, OCR on) opened in headless
Chromium (Debian's `chromium`, installed by .ci/run): a screenshot, the DOM after the page's script ran,
and the per-image page's reproduce command run for identical pixels (issue 22)."""

from __future__ import annotations

import csv
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_helpers import Links
from runner_helpers import TINY, run_cli
from test_report import table_cells

BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOT = (1280, 1800)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("headless Chromium is needed for the report check: apt-get install -y chromium (as .ci/run does)")
    return found


def browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium(), *BROWSER_FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def dom(page: Path, profile: Path) -> Links:
    res = browse(page, profile, "--dump-dom")
    assert res.returncode == 0 and "<html" in res.stdout, res.stderr[-2000:]
    return Links(res.stdout)


@pytest.mark.slow
def test_report_of_a_tiny_sweep_in_headless_chromium(tmp_path, runner_env):
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "cfg=3,7", "sampler.polish_cfg=1,3", "seed=0,1", "prompts=typography"]
    res = run_cli([*args, "metrics=[image_stats,ocr]", "tracker=none", f"hydra.sweep.dir={sweep}"], runner_env, 600)
    assert res.returncode == 0, res.stderr[-3000:]
    index = sweep / "report" / "index.html"
    assert index.is_file(), res.stderr[-3000:]

    shot = tmp_path / "report.png"
    res = browse(index, tmp_path / "profile", f"--screenshot={shot}", f"--window-size={SHOT[0]},{SHOT[1]}")
    assert res.returncode == 0, res.stderr[-2000:]
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[:2] == (SHOT[1], SHOT[0]) and pixels.std() > 10  # drawn, not blank

    page = dom(index, tmp_path / "profile")
    assert len(page.find("th", cls="sort")) > 0  # the page's script ran (it marks sortable headers)
    _summary_equals_csv(page, sweep / "summary.csv")
    for link in page.links:
        assert (index.parent / link).is_file(), link
    assert [t for _, t in page.find("th", cls="x-head")] == ["cfg=3", "cfg=7"] * 4
    assert [t for _, t in page.find("th", cls="y-head")] == ["sampler.polish_cfg=1", "sampler.polish_cfg=3"] * 4

    cell_link = next(a["href"] for a, _ in page.find("a") if a.get("href", "").startswith("images/"))
    image_page = index.parent / cell_link
    detail = dom(image_page, tmp_path / "profile")
    for link in detail.links:
        assert (image_page.parent / link).is_file(), link
    assert any("read:" in text for _, text in detail.find("div", cls="box"))  # OCR readings over the boxes
    ((_, command),) = detail.find("code", id="reproduce")
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "ideogram4.experiment.reproduce"]
    original = Path(argv[3])
    work = tmp_path / "again"
    work.mkdir()
    run = dict(cwd=work, env=runner_env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    again = subprocess.run([sys.executable, *argv[1:]], **run)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    (made,) = (work / "outputs" / "reproduce" / original.stem / "images").glob("*.png")
    assert np.array_equal(np.asarray(Image.open(made).convert("RGB")), np.asarray(Image.open(original).convert("RGB")))


def _summary_equals_csv(page: Links, path: Path) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert table_cells(page, "summary") == rows and len(rows) == 4
