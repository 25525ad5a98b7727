"""Issue 9 in the runner: metrics in every manifest line, PNG and W&B; scoring later; sweep summaries."""

from __future__ import annotations

import csv
import json

import pytest
from runner_helpers import TINY, compose, read_manifest, run_cli, run_inprocess

from ideogram4.experiment.config.plan import build_plan
from ideogram4.experiment.config.problems import ConfigError
from ideogram4.experiment.run import outputs as om
from ideogram4.experiment.run.records import PNG_SETTINGS_KEY


def test_unknown_metric_or_option_is_a_config_error():
    with pytest.raises(ConfigError, match="metrics.*ocrr"):
        build_plan(compose(["model=tiny", "metrics=[ocrr]"]), check_tokens=False)
    with pytest.raises(ConfigError, match="metrics.*marg"):
        build_plan(compose(["model=tiny", "metrics=[ocr]", "+metric_options.ocr.marg=3"]), check_tokens=False)


def test_metrics_land_in_manifest_and_png(tmp_path, tiny_root):
    out = tmp_path / "job"
    res = run_inprocess([*TINY, "prompts=smoke", "tracker=none", "metrics=[image_stats,palette]"], out, tiny_root)
    assert len(res.made) == 2
    for rec in read_manifest(out):
        assert set(rec["metrics"]) >= {"pixel_std", "sharpness", "colorfulness", "near_uniform", "palette_delta_e"}
        assert rec["metric_versions"].keys() == {"image_stats", "palette"}
        png = json.loads(om.read_png_text(out / rec["image"])[PNG_SETTINGS_KEY])
        assert png["metrics"] == rec["metrics"] and png["settings_hash"] == rec["settings_hash"]
    # the sign caption has no palette: nothing to score is None, not 0
    sign = next(r for r in read_manifest(out) if r["prompt_id"] == "sign_hello")
    assert sign["metrics"]["palette_delta_e"] is None


def test_score_cli_adds_a_metric_without_rewriting_lines(tmp_path, tiny_root, capsys):
    from ideogram4.experiment.score import main

    out = tmp_path / "job"
    run_inprocess([*TINY, "prompts=smoke", "tracker=none"], out, tiny_root)
    before = (out / "manifest.jsonl").read_text()
    assert main([str(out), "--metrics", "palette"]) == 0
    after = (out / "manifest.jsonl").read_text()
    assert after.startswith(before) and len(after.splitlines()) == 4
    latest = om.latest_records(om.read_manifest(out))
    assert all({"palette_delta_e", "pixel_std"} <= set(r["metrics"]) and r["rescored_at"] for r in latest.values())
    assert main([str(out), "--metrics", "palette"]) == 0  # already scored at this version: nothing appended
    assert (out / "manifest.jsonl").read_text() == after
    # options: the same METRIC.NAME=VALUE form as `python -m ideogram4.metrics` (and +metric_options.* in run.py)
    with pytest.raises(SystemExit):
        main([str(out), "--metrics", "palette", "--option", "palette.colours=8"])
    assert "no option 'colours'" in capsys.readouterr().err
    assert main([str(out), "--metrics", "palette", "--option", "palette.colors=8", "--force"]) == 0


@pytest.mark.slow
def test_sweep_with_ocr_and_palette_writes_metrics_summary_and_wandb_tables(tmp_path, runner_env):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *TINY,
        "cfg=3,7",
        "seed=0,1",
        "prompts=typography",
        "metrics=[ocr,palette]",
        f"hydra.sweep.dir={sweep}",
    ]
    res = run_cli(args, {**runner_env, "WANDB_MODE": "offline"}, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    for job in sweep.glob("[0-9]*"):
        recs = read_manifest(job)
        assert recs and all(
            {"ocr_word_accuracy", "ocr_ned", "ocr_exact_match", "palette_delta_e"} <= set(r["metrics"]) for r in recs
        )
        assert all("ocr" in r["metric_details"] for r in recs)
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert [r["cfg"] for r in rows] == ["3", "7"] and {"ocr_word_accuracy_mean", "ocr_word_accuracy_ci_low"} <= set(
        rows[0]
    )
    assert (sweep / "comparisons.csv").exists() and (sweep / "summary.png").exists()
    tables = [p.name for p in tmp_path.rglob("*.table.json")]
    assert any(t.startswith("images_table") for t in tables) and any(t.startswith("sweep_summary") for t in tables)
    table = json.loads(next(tmp_path.rglob("images_table*.table.json")).read_text())
    assert "ocr_word_accuracy" in table["columns"]
