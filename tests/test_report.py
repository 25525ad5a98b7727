"""The sweep report and the X/Y/Z grid on synthetic sweep folders with known numbers (issue 22).
The browser check of a real tiny-model sweep is in test_report_browser.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from report_helpers import PROMPTS, Links, score, write_job, write_sweep

from ideogram4.experiment.present import round_value, swept_labels
from ideogram4.experiment.report.build import write_report
from ideogram4.experiment.report.thumbs import THUMB_SIDE
from ideogram4.experiment.summary.table import summarize


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def table_cells(index: Links, table_id: str) -> list[dict]:
    """Per body row of the table: CSV column -> the CSV text it carries; numbers shown rounded checked."""
    (table,) = index.index("table", id=table_id)
    shown = []
    for tr in [i for i in index.index("tr") if table in index.parents[i]][1:]:  # the header row first
        cells = [(a["data-col"], a["data-value"], text) for a, text in index.find(inside=tr) if "data-col" in a]
        shown.append({col: value for col, value, _ in cells})
        for col, value, text in cells:
            if col.endswith(("mean", "ci_low", "ci_high")) and value:
                assert abs(float(text) - float(value)) <= 0.005 * abs(float(value)) + 1e-12  # shown rounded
    return shown


def page(path: Path) -> Links:
    return Links(path.read_text(encoding="utf-8"))


def test_swept_values_are_rounded_to_what_differs_and_metric_values_to_three_digits():
    # worked by hand: two decimals are the fewest that keep 6.2193.. and 6.25 apart
    assert swept_labels(["6.2193436325015075", "3.1795", "6.25"]) == ["6.22", "3.18", "6.25"]
    assert swept_labels(["6.2193436325015075", "3.1795"]) == ["6.2", "3.2"]  # two significant digits at least
    assert swept_labels(["3", "7", "10"]) == ["3", "7", "10"] and swept_labels(["euler", "dpm"]) == ["euler", "dpm"]
    assert swept_labels(["0.001", "0.0012"]) == ["0.001", "0.0012"]
    assert [round_value(v) for v in (3107.57, 41.918, 0.52345, 0.0, -0.00123)] == [
        "3108",
        "41.9",
        "0.523",
        "0",
        "-0.00123",
    ]


@pytest.mark.slow
def test_summary_and_comparison_tables_show_the_csv_values_with_best_and_significant_marked(tmp_path):
    sweep = write_sweep(tmp_path)
    summarize(sweep, baseline="cfg=3 sampler.steps=12")
    index = page(write_report(sweep))
    for table, name in (("summary", "summary.csv"), ("comparisons", "comparisons.csv")):
        rows = read_csv(sweep / name)
        assert table_cells(index, table) == rows  # every CSV cell at full precision, rows in CSV order
    rows = read_csv(sweep / "summary.csv")
    # the best mean of a metric with a direction is marked, once; pixel_std has none
    best = [a["data-col"] for a, _ in index.find("td", cls="best")]
    assert best == ["ocr_word_accuracy_mean"]
    top = max(rows, key=lambda r: float(r["ocr_word_accuracy_mean"]))
    assert top["cfg"] == "7" and top["sampler.steps"] == "20"
    # every unit gains the same under cfg=7: the paired interval excludes 0 and higher is better
    better = [a["data-col"] for a, _ in index.find("td", cls="better")]
    assert better.count("ocr_word_accuracy_diff_mean") == 3 and not index.find("td", cls="worse")


@pytest.mark.slow
def test_grid_axes_name_the_swept_values_and_every_link_resolves(tmp_path):
    sweep = write_sweep(tmp_path, size=300)
    out = write_report(sweep, x="sampler.steps", y="cfg")
    index = page(out)
    assert [t for _, t in index.find("th", cls="x-head")] == ["sampler.steps=12", "sampler.steps=20"] * 4
    assert [t for _, t in index.find("th", cls="y-head")] == ["cfg=3", "cfg=7"] * 4
    sections = [a["data-text"] for a, _ in index.find("div", cls="grid-section")]
    assert sections == [f"{p} \u00b7 seed {s}" for p in PROMPTS for s in (0, 1)]
    pages = sorted((out.parent / "images").glob("*.html"))
    assert len(pages) == 16
    for html in [out, *pages]:
        for link in page(html).links:
            assert (html.parent / link).is_file(), (html.name, link)
    thumbs = sorted((out.parent / "thumbs").glob("*.jpg"))
    assert len(thumbs) == 16 and all(max(Image.open(t).size) == THUMB_SIDE for t in thumbs)
    # made once: a second report keeps them
    stamps = [t.stat().st_mtime_ns for t in thumbs]
    write_report(sweep, x="sampler.steps", y="cfg")
    assert [t.stat().st_mtime_ns for t in thumbs] == stamps


def test_image_page_shows_boxes_with_ocr_readings_and_the_reproduce_command(tmp_path):
    sweep = write_sweep(tmp_path)
    out = write_report(sweep)
    image = page(out.parent / "images" / "3__poster_headline__seed1.html")
    ((_, command),) = image.find("code", id="reproduce")
    assert (
        command
        == f"python -m ideogram4.experiment.reproduce {(sweep / '3/images/poster_headline__seed1.png').resolve()}"
    )
    boxes = image.find("div", cls="box")
    assert [a["style"] for a, _ in boxes] == [
        "left:20.00%;top:10.00%;width:60.00%;height:20.00%",
        "left:10.00%;top:50.00%;width:30.00%;height:40.00%",
    ]
    assert "read: \u201cOPFN\u201d (0/1 words)" in boxes[0][1]
    metrics = {text: a["data-value"] for a, text in image.find("td") if "data-value" in a}
    rec = json.loads((sweep / "3" / "manifest.jsonl").read_text().splitlines()[-1])
    assert metrics[round_value(rec["metrics"]["ocr_word_accuracy"])] == json.dumps(rec["metrics"]["ocr_word_accuracy"])


@pytest.mark.parametrize("module", ["report", "grid"])
def test_a_bad_axis_is_one_line_naming_it_and_the_choices(tmp_path, module, caplog):
    import importlib

    sweep = write_sweep(tmp_path)
    main = importlib.import_module(
        f"ideogram4.experiment.{module}.__main__" if module == "report" else "ideogram4.experiment.grid"
    ).main
    assert main([str(sweep), "--x", "sampler.stepz"]) == 2
    assert (
        "--x=sampler.stepz: not a swept key of this sweep; choose one of cfg, sampler.steps, prompt, seed"
        in caplog.text
    )
    assert not (sweep / "report").exists()


def test_png_grid_one_sheet_per_z_value_with_scores_and_titles(tmp_path):
    from ideogram4.experiment.grid import make_sweep_grid

    sweep = write_sweep(tmp_path)
    paths, grid = make_sweep_grid(sweep, cell=32, x="cfg", y="seed", z="sampler.steps", scores=["ocr_word_accuracy"])
    assert [p.name for p in paths] == ["comparison_grid__sampler.steps=12.png", "comparison_grid__sampler.steps=20.png"]
    for path in paths:
        with Image.open(path) as im:
            sheet = np.asarray(im.convert("RGB"))
        # each source image of this Z value is pasted whole (32 px cells, no resampling)
        steps = path.stem.rsplit("=", 1)[1]
        jobs = [
            j
            for j in sweep.iterdir()
            if j.is_dir() and f"sampler.steps={steps}" in (j / ".hydra/overrides.yaml").read_text()
        ]
        for png in [p for j in jobs for p in (j / "images").glob("*.png")]:
            source = np.asarray(Image.open(png).convert("RGB"))
            assert _contains(sheet, source), png


def _contains(sheet: np.ndarray, patch: np.ndarray) -> bool:
    ys, xs = np.nonzero(np.all(sheet == patch[0, 0], axis=-1))
    h, w = patch.shape[:2]
    return any(np.array_equal(sheet[y : y + h, x : x + w], patch) for y, x in zip(ys, xs))


def test_search_report_has_history_importances_and_trials_by_objective(tmp_path):
    import optuna

    sweep = tmp_path / "sweep"
    rng = np.random.default_rng(1)
    params = [(6.2193436325015075, 3.1795), (2.5, 4.75), (8.125, 1.5), (4.0, 2.0)]
    study = optuna.create_study(
        storage=f"sqlite:///{sweep.mkdir() or sweep / 'study.db'}", study_name="s", direction="maximize"
    )
    dist = {
        "cfg": optuna.distributions.FloatDistribution(2, 9),
        "sampler.polish_cfg": optuna.distributions.FloatDistribution(1, 5),
    }
    for num, (cfg, polish) in enumerate(params):
        overrides = ["model=tiny", f"cfg={cfg}", f"sampler.polish_cfg={polish}"]
        write_job(sweep, num, overrides, cfg, 12, (0,), 32, rng)
        values = [
            json.loads(line)["metrics"]["ocr_word_accuracy"]
            for line in (sweep / str(num) / "manifest.jsonl").read_text().splitlines()
        ]
        trial = optuna.trial.create_trial(
            params={"cfg": cfg, "sampler.polish_cfg": polish}, distributions=dist, value=float(np.mean(values))
        )
        study.add_trial(trial)
    objective = [{"metric": "ocr_word_accuracy", "direction": "maximize"}]
    (sweep / "multirun.yaml").write_text(
        yaml.safe_dump(
            {"hydra": {"overrides": {"task": ["+experiment=search_cfg"]}, "sweeper": {"objective": objective}}}
        )
    )
    index = page(write_report(sweep))
    assert index.find("h1", id="title")[0][1] == "experiment search_cfg"
    ranked = [t for _, t in index.find("td") if t.startswith("#")]
    by_cfg = sorted(range(4), key=lambda i: -params[i][0])  # the score grows with cfg
    assert ranked == [f"#{i}" for i in by_cfg]
    assert len(index.find("circle", cls="dot")) == 4 and index.find("polyline", cls="best-line")
    names = [t for a, t in index.find("td") if t in ("cfg", "sampler.polish_cfg")]
    assert sorted(names) == ["cfg", "sampler.polish_cfg"]  # importances from Optuna, one per parameter
    heads = [t for _, t in index.find("th", cls="x-head")]
    best = (score(8.125, 12, 0, 0) + score(8.125, 12, 1, 0)) / 2  # trial 2 (cfg 8.125): both prompts, seed 0
    assert heads[0].split("\n") == [f"#2: {round_value(best)}", "cfg=8.1", "polish_cfg=1.5"]  # best trial first


def test_titles_name_the_experiment_and_overrides_and_metrics_their_direction(tmp_path):
    from ideogram4.experiment.present import metric_label, sweep_title

    sweep = write_sweep(tmp_path, task=["+experiment=steps_x_cfg", "model=tiny", "cfg=3,7"])
    assert sweep_title(sweep) == "experiment steps_x_cfg: model=tiny cfg=3,7"
    assert sweep_title(tmp_path) == f"sweep {tmp_path.name}"  # no multirun.yaml: the folder's name
    assert metric_label("ocr_word_accuracy") == "ocr_word_accuracy (higher is better)"
    assert metric_label("palette_delta_e", arrow=True) == "palette_delta_e \u2193"
    assert metric_label("pixel_std") == "pixel_std"  # a statistic with no better direction
