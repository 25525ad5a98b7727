"""Sweep summaries (issue 9, item 9) on synthetic sweep folders with known numbers."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ideogram4.experiment.summary.__main__ import main
from ideogram4.experiment.summary.intervals import clustered_mean_ci
from ideogram4.experiment.summary.table import log_summary, summarize

PROMPTS = ["bakery_sign", "poster_headline", "menu_board"]


def write_job(sweep: Path, num: int, overrides: list[str], records: list[dict]) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    with open(job / "manifest.jsonl", "w") as f:
        for r in records:
            line = {
                "image": f"images/{r['prompt_id']}__seed{r['seed']}.png",
                "job": {"num": num, "overrides": overrides},
            }
            f.write(json.dumps({**line, **r}) + "\n")


def record(prompt_id: str, seed: int, **metrics) -> dict:
    return {"prompt_id": prompt_id, "seed": seed, "metrics": metrics, "metric_versions": {"ocr": "1"}}


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def unit_score(prompt: int, seed: int) -> float:
    return 0.1 * prompt + 0.05 * seed  # prompt and seed effects that every setting shares


def grid_sweep(tmp_path: Path) -> Path:
    """cfg in {3, 10} x sampler.steps in {12, 20}, 3 prompts x 2 seeds, the seed override swept too."""
    sweep = tmp_path / "sweep"
    num = 0
    for cfg in (10, 3):  # written in the "wrong" order: rows are sorted numerically (3 before 10)
        for steps in (12, 20):
            for seed in (0, 1):  # one job per seed, as `seed=0,1` on the command line makes
                recs = [
                    record(p, seed, ocr_word_accuracy=cfg / 10 + steps / 100 + unit_score(i, seed))
                    for i, p in enumerate(PROMPTS)
                ]
                overrides = [f"cfg={cfg}", f"sampler.steps={steps}", f"seed={seed}", "prompts=typography"]
                write_job(sweep, num, overrides, recs)
                num += 1
    return sweep


def test_summary_means_are_exact_and_columns_named_as_the_overrides(tmp_path):
    sweep = grid_sweep(tmp_path)
    result = summarize(sweep)
    assert result.swept_keys == ["cfg", "sampler.steps"]  # seed is the unit, prompts did not change
    columns, rows = read_csv(sweep / "summary.csv")
    m = "ocr_word_accuracy"
    metric_columns = [f"{m}_{f}" for f in ("better", "n", "mean", "ci_low", "ci_high", "ci_note")]
    assert columns == ["cfg", "sampler.steps", "n", *metric_columns]
    assert {r[f"{m}_better"] for r in rows} == {"higher"}  # the registry's direction
    assert [(r["cfg"], r["sampler.steps"]) for r in rows] == [("3", "12"), ("3", "20"), ("10", "12"), ("10", "20")]
    shared = np.mean([unit_score(i, s) for i in range(3) for s in (0, 1)])
    for r in rows:
        assert r["n"] == "6" and r[f"{m}_n"] == "6"
        expected = int(r["cfg"]) / 10 + int(r["sampler.steps"]) / 100 + shared
        assert float(r[f"{m}_mean"]) == pytest.approx(expected, abs=1e-9)
        assert float(r[f"{m}_ci_low"]) <= float(r[f"{m}_mean"]) <= float(r[f"{m}_ci_high"])
    # default baseline: the first setting in sort order; paired differences are exact (shared unit effects)
    columns, comps = read_csv(sweep / "comparisons.csv")
    assert columns[:3] == ["cfg", "sampler.steps", "baseline"]
    assert {c["baseline"] for c in comps} == {"cfg=3, sampler.steps=12"} and len(comps) == 3
    for c in comps:
        shift = (int(c["cfg"]) - 3) / 10 + (int(c["sampler.steps"]) - 12) / 100
        for field in (f"{m}_diff_mean", f"{m}_diff_ci_low", f"{m}_diff_ci_high"):
            assert float(c[field]) == pytest.approx(shift, abs=1e-9)
        assert c[f"{m}_n"] == "6" and c[f"{m}_better"] == "higher"
    png = sweep / "summary.png"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 300
    assert result.paths == [sweep / "summary.csv", sweep / "comparisons.csv", png, sweep / "summary.json"]
    meta = json.loads((sweep / "summary.json").read_text())
    assert "student-t" in meta["interval"]["method"] and meta["directions"] == {m: "higher"}


def test_baseline_on_some_keys_pairs_within_the_other_keys(tmp_path):
    sweep = grid_sweep(tmp_path)
    summarize(sweep, baseline="cfg=10")
    _, comps = read_csv(sweep / "comparisons.csv")
    assert [(c["cfg"], c["sampler.steps"], c["baseline"]) for c in comps] == [
        ("3", "12", "cfg=10, sampler.steps=12"),
        ("3", "20", "cfg=10, sampler.steps=20"),
    ]
    for c in comps:
        assert float(c["ocr_word_accuracy_diff_mean"]) == pytest.approx(-0.7, abs=1e-9)
    summarize(sweep, baseline=["cfg=3.0", "sampler.steps=20"])  # 3.0 matches the override text "3"
    _, comps = read_csv(sweep / "comparisons.csv")
    assert {c["baseline"] for c in comps} == {"cfg=3, sampler.steps=20"} and len(comps) == 3


def test_bad_baseline_names_the_key_and_the_values(tmp_path):
    sweep = grid_sweep(tmp_path)
    with pytest.raises(ValueError, match=r"'guidance' is not a swept key.*cfg, sampler.steps"):
        summarize(sweep, baseline="guidance=3")
    with pytest.raises(ValueError, match=r"cfg=5 is not a value of this sweep; cfg took 3, 10"):
        summarize(sweep, baseline={"cfg": 5})
    assert main([str(sweep), "--baseline", "cfg"]) == 2
    assert not (sweep / "summary.csv").exists()  # a bad baseline changes no file
    summarize(sweep)
    before = {p.name: p.read_bytes() for p in sweep.glob("summary.*")}
    assert main([str(sweep), "--baseline", "cfg=5"]) == 2
    assert {p.name: p.read_bytes() for p in sweep.glob("summary.*")} == before


def noisy_sweep(tmp_path: Path, n_prompts: int, shift: float, seed: int = 1) -> Path:
    """Two settings, large unit-to-unit spread, the second = the first + `shift` on every unit."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.0, 1.0, size=(n_prompts, 2))  # (prompt, seed)
    sweep = tmp_path / f"noisy{n_prompts}"
    for num, cfg in enumerate((4, 7)):
        recs = [
            record(f"p{i}", s, ocr_ned=float(base[i, s] + (shift if cfg == 7 else 0.0)))
            for i in range(n_prompts)
            for s in (0, 1)
        ]
        write_job(sweep, num, [f"cfg={cfg}", "seed=[0,1]"], recs)
    return sweep


def test_ci_contains_the_mean_narrows_with_n_and_is_reproducible(tmp_path):
    widths = {}
    for n_prompts in (4, 100):
        sweep = noisy_sweep(tmp_path, n_prompts, shift=0.25)
        summarize(sweep)
        _, rows = read_csv(sweep / "summary.csv")
        for r in rows:
            low, mean, high = (float(r[f"ocr_ned_{f}"]) for f in ("ci_low", "mean", "ci_high"))
            assert low < mean < high and r["ocr_ned_ci_note"] == ""
        widths[n_prompts] = float(rows[0]["ocr_ned_ci_high"]) - float(rows[0]["ocr_ned_ci_low"])
        # paired: the constant shift is exact although the two settings' own intervals overlap
        _, comps = read_csv(sweep / "comparisons.csv")
        assert float(comps[0]["ocr_ned_diff_mean"]) == pytest.approx(0.25, abs=1e-9)
        assert float(comps[0]["ocr_ned_diff_ci_high"]) - float(comps[0]["ocr_ned_diff_ci_low"]) < 1e-9
    assert widths[100] < widths[4] / 2
    before = (sweep / "summary.csv").read_bytes()
    summarize(sweep)
    assert (sweep / "summary.csv").read_bytes() == before


def test_interval_is_the_t_interval_of_the_prompt_means():
    from scipy import stats

    rng = np.random.default_rng(0)
    prompt_effect = rng.normal(size=6)  # (prompt,)
    x = (prompt_effect[:, None] + 0.1 * rng.normal(size=(6, 3))).ravel()  # 6 prompts x 3 seeds
    labels = [f"p{i}" for i in range(6) for _ in range(3)]
    ci = clustered_mean_ci(x, labels)
    means = x.reshape(6, 3).mean(axis=1)  # an independent oracle: scipy's t interval of the 6 prompt means
    low, high = stats.t.interval(0.95, 5, loc=means.mean(), scale=stats.sem(means))
    assert (ci.n, ci.clusters, ci.note) == (18, 6, "")
    assert (ci.mean, ci.low, ci.high) == pytest.approx((x.mean(), low, high), abs=1e-12)
    flat = clustered_mean_ci(x)  # the same values as 18 independent images: narrower (ignores the clustering)
    assert flat.high - flat.low < (high - low) / 2
    one_prompt = clustered_mean_ci([1.0, 2.0, 4.0], ["a", "a", "a"])  # one prompt: its seeds are the units
    assert one_prompt.clusters == 3 and one_prompt.low == pytest.approx(
        stats.t.interval(0.95, 2, loc=7 / 3, scale=stats.sem([1.0, 2.0, 4.0]))[0]
    )


def test_n_of_one_has_no_interval_and_says_why(tmp_path):
    sweep = tmp_path / "sweep"
    write_job(sweep, 0, ["cfg=3"], [record("a", 0, ocr_ned=0.5)])
    write_job(sweep, 1, ["cfg=7"], [record("a", 0, ocr_ned=0.7), record("b", 0, ocr_ned=0.9)])
    summarize(sweep)
    _, (r3, r7) = read_csv(sweep / "summary.csv")
    assert (r3["ocr_ned_n"], r3["ocr_ned_mean"], r3["ocr_ned_ci_low"], r3["ocr_ned_ci_high"]) == ("1", "0.5", "", "")
    assert r3["ocr_ned_ci_note"] == "n=1: no interval from a single value"
    assert r7["ocr_ned_ci_low"] != "" and r7["ocr_ned_ci_note"] == ""
    _, (comp,) = read_csv(sweep / "comparisons.csv")
    assert comp["ocr_ned_diff_ci_low"] == "" and comp["ocr_ned_diff_ci_note"].startswith("n=1")


def test_none_values_are_skipped_with_n_per_metric_and_latest_line_wins(tmp_path):
    sweep = tmp_path / "sweep"
    write_job(
        sweep,
        0,
        ["cfg=3"],
        [
            record("a", 0, ocr_exact_match=0.0, palette_delta_e=10.0),  # superseded by the next line
            record("a", 0, ocr_exact_match=1.0, palette_delta_e=4.0),
            record("b", 0, ocr_exact_match=None, palette_delta_e=8.0),  # nothing to read in b
            record("c", 0, ocr_exact_match=0.5, palette_delta_e=None),
        ],
    )
    write_job(sweep, 1, ["cfg=7"], [record(p, 0, ocr_exact_match=None, palette_delta_e=2.0) for p in "abc"])
    summarize(sweep)
    _, rows = read_csv(sweep / "summary.csv")
    r3, r7 = rows
    assert (r3["n"], r3["ocr_exact_match_n"], r3["palette_delta_e_n"]) == ("3", "2", "2")
    assert float(r3["ocr_exact_match_mean"]) == 0.75 and float(r3["palette_delta_e_mean"]) == 6.0
    assert (r7["ocr_exact_match_n"], r7["ocr_exact_match_mean"], r7["ocr_exact_match_ci_low"]) == ("0", "", "")
    _, comps = read_csv(sweep / "comparisons.csv")
    assert comps[0]["palette_delta_e_n"] == "2"  # a and b have the metric in both settings
    assert float(comps[0]["palette_delta_e_diff_mean"]) == pytest.approx(((2 - 4) + (2 - 8)) / 2)
    assert comps[0]["ocr_exact_match_n"] == "0" and comps[0]["ocr_exact_match_diff_mean"] == ""


def test_no_metrics_gives_counts_and_a_clear_message(tmp_path, caplog):
    sweep = tmp_path / "sweep"
    for num, cfg in enumerate((3, 7)):
        write_job(sweep, num, [f"cfg={cfg}"], [{"prompt_id": "a", "seed": 0}, {"prompt_id": "b", "seed": 0}])
    with caplog.at_level(logging.WARNING, logger="ideogram4.experiment"):
        result = summarize(sweep)
    assert "No metric values" in caplog.text and "ideogram4.experiment.score" in caplog.text
    columns, rows = read_csv(sweep / "summary.csv")
    assert columns == ["cfg", "n"] and [r["n"] for r in rows] == ["2", "2"]
    assert result.paths == [sweep / "summary.csv", sweep / "summary.json"]
    assert not (sweep / "comparisons.csv").exists() and not (sweep / "summary.png").exists()
    assert main([str(tmp_path / "empty")]) == 1  # no job folders at all: a message, exit 1


def test_single_combination(tmp_path):
    sweep = tmp_path / "sweep"
    write_job(sweep, 0, ["cfg=3"], [record(p, 0, ocr_word_accuracy=v) for p, v in zip("abcd", (0.2, 0.4, 0.6, 0.8))])
    result = summarize(sweep)
    columns, rows = read_csv(sweep / "summary.csv")
    assert columns[:3] == ["n", "ocr_word_accuracy_better", "ocr_word_accuracy_n"] and len(rows) == 1
    assert float(rows[0]["ocr_word_accuracy_mean"]) == pytest.approx(0.5)
    assert result.comparisons_csv is None and (sweep / "summary.png").exists()


def test_log_summary_sends_tables_and_plot_to_the_tracker(tmp_path):
    class FakeTracker:
        def __init__(self):
            self.tables, self.images = {}, {}

        def log_table(self, key, columns, rows, image_column=None):
            self.tables[key] = (columns, rows)

        def log_image(self, key, image, caption):
            self.images[key] = (image, caption)

    sweep = grid_sweep(tmp_path)
    tracker = FakeTracker()
    log_summary(tracker, summarize(sweep))
    columns, rows = tracker.tables["sweep_summary"]
    assert columns[:3] == ["cfg", "sampler.steps", "n"]
    assert [row[:2] for row in rows] == [[3, 12], [3, 20], [10, 12], [10, 20]]  # numbers, so W&B can plot them
    assert len(tracker.tables["sweep_comparisons"][1]) == 3
    image, caption = tracker.images["sweep_summary_plot"]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and "student-t" in caption


def test_cli_writes_the_files(tmp_path, capsys):
    sweep = grid_sweep(tmp_path)
    assert main([str(sweep), "--baseline", "cfg=3", "sampler.steps=20"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(sweep / n) for n in ("summary.csv", "comparisons.csv", "summary.png", "summary.json")]


def test_log_summary_into_an_offline_wandb_run(tmp_path, monkeypatch):
    from ideogram4.experiment.run.tracker import make_tracker

    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    sweep = tmp_path / "sweep"  # empty cells (None) and integer counts in the same table
    write_job(sweep, 0, ["cfg=3"], [record("a", 0, ocr_ned=0.5), record("b", 0, ocr_ned=None)])
    write_job(sweep, 1, ["cfg=7"], [record("a", 0, ocr_ned=None), record("b", 0, ocr_ned=None)])
    tracker = make_tracker({"name": "wandb", "mode": "offline"}, name="summary", group=None, config={}, out_dir=sweep)
    assert tracker.enabled
    log_summary(tracker, summarize(sweep))
    failures = tracker.failures
    tracker.finish()
    assert failures == 0
    media = sorted(p.name.split("_")[1] for p in sweep.glob("wandb/offline-run-*/files/media/*/sweep_*"))
    assert media == ["comparisons", "summary", "summary"]  # two tables and the plot
