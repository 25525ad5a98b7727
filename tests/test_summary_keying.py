"""Sweep summaries keyed on what ran (issue 20): images belong to the setting their own manifest line
records, the current sweep is multirun.yaml's, the baseline is the sweep's own, failures are the last
attempt's."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from runner_helpers import TINY, run_cli
from test_summary import PROMPTS, read_csv, record, write_job

from ideogram4.experiment.grid import collect_jobs
from ideogram4.experiment.run.entry import clear_failure, failed_jobs, record_failure
from ideogram4.experiment.summary.table import summarize


def write_multirun(sweep: Path, task: list[str], **top) -> None:
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": task}}, **top}))


def cfg_sweep(sweep: Path, cfgs: list[int], seeds: list[int], extra: list[str] = ()) -> None:
    """What `run.py -m cfg=... seed=...` leaves: multirun.yaml, one job folder per (cfg, seed)."""
    write_multirun(sweep, [f"cfg={','.join(map(str, cfgs))}", f"seed={','.join(map(str, seeds))}", *extra])
    num = 0
    for cfg in cfgs:
        for seed in seeds:
            overrides = [f"cfg={cfg}", f"seed={seed}", *extra]
            recs = [record(p, seed, ocr_ned=cfg / 10 + 0.1 * i + 0.03 * seed) for i, p in enumerate(PROMPTS)]
            job = sweep / str(num)
            if job.exists():  # a reused folder: Hydra rewrites overrides.yaml, the runner appends lines
                (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
                keep = (job / "manifest.jsonl").read_text()
                (job / "manifest.jsonl").unlink()
                (job / ".hydra" / "overrides.yaml").unlink()
                (job / ".hydra").rmdir()
                job.rename(job.with_name(f"{num}.old"))
                write_job(sweep, num, overrides, recs)
                (job / "manifest.jsonl").write_text(keep + (job / "manifest.jsonl").read_text())
                for leftover in job.with_name(f"{num}.old").iterdir():
                    leftover.unlink()
                job.with_name(f"{num}.old").rmdir()
            else:
                write_job(sweep, num, overrides, recs)
            num += 1


def test_a_rerun_with_an_unrelated_override_rebuilds_the_same_summary(tmp_path):
    sweep = tmp_path / "sweep"
    cfg_sweep(sweep, [3, 7], [0, 1])
    summarize(sweep, baseline="cfg=7")
    before = {name: (sweep / name).read_bytes() for name in ("summary.csv", "comparisons.csv")}
    # the same sweep again with tracker=none added: every image is skipped (no new manifest line), but
    # Hydra rewrites multirun.yaml and each job's .hydra/overrides.yaml with the new override
    write_multirun(sweep, ["cfg=3,7", "seed=0,1", "tracker=none"])
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        path = job / ".hydra" / "overrides.yaml"
        path.write_text(yaml.safe_dump([*yaml.safe_load(path.read_text()), "tracker=none"]))
    summarize(sweep, baseline="cfg=7")
    assert {name: (sweep / name).read_bytes() for name in before} == before
    _, rows = read_csv(sweep / "summary.csv")
    assert [(r["cfg"], r["n"]) for r in rows] == [("3", "6"), ("7", "6")]


def test_a_reused_folder_with_other_values_leaves_the_old_images_out_with_one_warning(tmp_path, caplog):
    sweep = tmp_path / "sweep"
    cfg_sweep(sweep, [3, 7], [0, 1])  # jobs 0..3
    cfg_sweep(sweep, [4, 5], [0])  # jobs 0, 1 again; 2 and 3 hold only the first sweep's images
    with caplog.at_level(logging.WARNING, logger="ideogram4.experiment"):
        result = summarize(sweep)
    assert [s.values["cfg"] for s in result.settings] == ["4", "5"]
    assert [(s.n_images, sorted({u[1] for u in s.scores})) for s in result.settings] == [(3, [0]), (3, [0])]
    warnings = [r.getMessage() for r in caplog.records if "Left out" in r.getMessage()]
    assert len(warnings) == 1 and "Left out 9 image(s)" in warnings[0] and "cfg=7: 6; cfg=3: 3" in warnings[0]
    _, comps = read_csv(sweep / "comparisons.csv")
    assert [(c["cfg"], c["baseline"]) for c in comps] == [("5", "cfg=4")]
    assert [j.num for j in collect_jobs(sweep)] == [0, 1]  # the grid reads the same jobs


def test_the_sweeps_own_baseline_survives_a_rebuild_unless_changed(tmp_path):
    sweep = tmp_path / "sweep"
    cfg_sweep(sweep, [3, 5, 7], [0])
    write_multirun(sweep, ["cfg=3,5,7", "seed=0"], summary_baseline="cfg=7")
    summarize(sweep)  # as `score` and `summary` rebuild it: no baseline given
    _, comps = read_csv(sweep / "comparisons.csv")
    assert {c["baseline"] for c in comps} == {"cfg=7"}
    summarize(sweep, baseline="cfg=5")  # explicitly changed
    _, comps = read_csv(sweep / "comparisons.csv")
    assert {c["baseline"] for c in comps} == {"cfg=5"}


def test_failed_jobs_reports_the_last_attempt_of_each_job(tmp_path):
    record_failure(tmp_path, 1, ["cfg=7"], 4, "Output: disk full")
    record_failure(tmp_path, 2, ["cfg=9"], 2, "cfg: bad")
    clear_failure(tmp_path, 1)  # job 1 succeeded on resume
    assert [f["job"] for f in failed_jobs(tmp_path)] == [2]
    clear_failure(tmp_path, 5)  # a job that never failed: nothing changes
    assert [f["job"] for f in failed_jobs(tmp_path)] == [2]


@pytest.mark.slow
def test_real_sweep_rerun_and_reuse_through_run_py(tmp_path, runner_env):
    """The issue's case end to end: a finished tiny sweep, re-run with `tracker=none` added, rebuilds
    byte-identical summaries; the folder reused with other values leaves the stale setting out."""
    sweep = tmp_path / "sweep"
    base = ["-m", *TINY, "prompts=smoke", "metrics=[image_stats]", f"hydra.sweep.dir={sweep}"]
    env = {**runner_env, "WANDB_MODE": "offline"}
    first = run_cli([*base, "cfg=3,7", "seed=0,1"], env, timeout=600)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    before = {name: (sweep / name).read_bytes() for name in ("summary.csv", "comparisons.csv")}
    images = sorted(sweep.glob("*/images/*.png"))

    again = run_cli([*base, "cfg=3,7", "seed=0,1", "tracker=none"], env, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert sorted(sweep.glob("*/images/*.png")) == images  # nothing new was made
    assert {name: (sweep / name).read_bytes() for name in before} == before

    reused = run_cli([*base, "cfg=4,5", "seed=0"], env, timeout=600)
    assert reused.returncode == 0, (reused.stdout + reused.stderr)[-3000:]
    _, rows = read_csv(sweep / "summary.csv")
    assert sorted(r["cfg"] for r in rows) == ["4", "5"]
    warnings = [line for line in (reused.stdout + reused.stderr).splitlines() if "left out" in line.lower()]
    assert len(warnings) == 1, (reused.stdout + reused.stderr)[-3000:]
