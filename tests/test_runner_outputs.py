"""Outputs, manifest, resume keys, grid and W&B failure handling (in-process, real tiny pipeline)."""

from __future__ import annotations

import json
import socket

import pytest
from PIL import Image
from runner_helpers import TINY, compose, read_manifest, run_inprocess

from ideogram4.experiment.grid import build_grid, collect_jobs, make_sweep_grid
from ideogram4.experiment.run import outputs as om
from ideogram4.experiment.run.jobs import count_sweep_jobs
from ideogram4.experiment.run.records import schedule_text

FAST = [*TINY, "prompts=smoke", "tracker=none"]


# --- unit: atomic writes, manifest, hashes -----------------------------------------------------------


def test_atomic_png_write_leaves_no_partial_file(tmp_path):
    class Boom:
        def save(self, f, **kw):
            f.write(b"\x89PNG partial")
            raise OSError("disk full")

    target = tmp_path / "images" / "a__seed0.png"
    with pytest.raises(OSError, match="disk full"):
        om.save_png_atomic(Boom(), target, {"parameters": "x"})
    assert not target.exists() and not list(target.parent.iterdir())

    om.save_png_atomic(Image.new("RGB", (8, 8), "red"), target, {"parameters": "p", "ideogram4:caption": "ünïcode ✓"})
    assert om.read_png_text(target)["ideogram4:caption"] == "ünïcode ✓"


def test_manifest_lines_are_whole_and_torn_line_is_skipped(tmp_path):
    om.append_manifest(tmp_path, {"image": "images/a.png", "settings_hash": "h", "n": 1})
    om.append_manifest(tmp_path, {"image": "images/a.png", "settings_hash": "h", "n": 2})
    with open(tmp_path / om.MANIFEST, "a") as f:
        f.write('{"image": "images/b.png", "n"')  # a torn last line
    recs = om.read_manifest(tmp_path)
    assert [r["n"] for r in recs] == [1, 2]
    assert om.latest_records(recs)["images/a.png"]["n"] == 2


def test_settings_hash_tracks_settings_and_weights():
    s = {"steps": 2, "cfg": 7.0, "seed": 0}
    w = {"source": "x", "dtype": "float32"}
    assert om.settings_hash(s, w) == om.settings_hash(dict(s), dict(w))
    assert om.settings_hash({**s, "cfg": 3.0}, w) != om.settings_hash(s, w)
    assert om.settings_hash(s, {**w, "source": "y"}) != om.settings_hash(s, w)


def test_schedule_text_and_uniformity():
    assert schedule_text([7.0] * 45 + [3.0] * 3) == "45x7.0+3x3.0"
    from ideogram4.metrics.image_stats import pixel_std

    assert pixel_std(Image.new("RGB", (32, 32), (128, 128, 128))) == 0.0


def test_count_sweep_jobs():
    from omegaconf import open_dict

    cfg = compose(["+experiment=steps_x_cfg"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.overrides.task = ["seed=0,1", "model=tiny"]
    assert count_sweep_jobs(cfg) == 3 * 3 * 2


def test_grid_from_folders_marks_missing_cells(tmp_path):
    for num, cfg in ((0, "3"), (1, "7")):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- model=tiny\n- cfg={cfg}\n")
        seeds = (0, 1) if num == 0 else (0,)
        for seed in seeds:
            rel = f"images/p__seed{seed}.png"
            om.save_png_atomic(Image.new("RGB", (16, 16), "blue"), job / rel, {})
            om.append_manifest(
                job,
                {
                    "image": rel,
                    "prompt_id": "p",
                    "seed": seed,
                    "settings_hash": "h",
                    "flags": {"near_uniform": seed == 1},
                },
            )
    grid = build_grid(collect_jobs(tmp_path))
    assert grid.columns == ["cfg=3", "cfg=7"] and grid.rows == [("p", 0), ("p", 1)]
    assert len(grid.cells) == 3
    (path,), _ = make_sweep_grid(tmp_path, cell=32)
    info = json.loads((tmp_path / "comparison_grid.json").read_text())
    assert info["n_cells"] == 4 and info["n_filled"] == 3 and path.exists()
    # the same from the command line (rebuilding a grid after an interrupted sweep)
    from ideogram4.experiment.grid import main

    path.unlink()
    assert main([str(tmp_path), "--cell", "32"]) == 0 and path.exists()


# --- in-process runs with the real tiny pipeline ------------------------------------------------------


@pytest.mark.slow
def test_resume_skips_identical_settings_and_overwrite_forces(tmp_path, tiny_root):
    out = tmp_path / "job"
    r1 = run_inprocess([*FAST, "seed=[0,1]"], out, tiny_root)
    assert len(r1.made) == 4 and not r1.skipped
    first = {r["image"]: (out / r["image"]).read_bytes() for r in r1.made}
    # a different cfg in the same folder: settings differ, so everything is generated again, under
    # new names: the first images are kept byte for byte (nothing is overwritten silently)
    r2 = run_inprocess([*FAST, "seed=[0,1]", "cfg=3"], out, tiny_root)
    assert len(r2.made) == 4 and not {r["image"] for r in r2.made} & set(first)
    assert all((out / name).read_bytes() == data for name, data in first.items())
    # same settings again: all skipped, nothing appended
    n = len(read_manifest(out))
    r3 = run_inprocess([*FAST, "seed=[0,1,2]", "cfg=3"], out, tiny_root)
    assert len(r3.skipped) == 4 and [(r["prompt_id"], r["seed"]) for r in r3.made] == [
        ("red_cube", 2),
        ("sign_hello", 2),
    ]
    assert len(read_manifest(out)) == n + 2
    r4 = run_inprocess([*FAST, "seed=[0]", "cfg=3", "output.overwrite=true"], out, tiny_root)
    assert len(r4.made) == 2 and not r4.skipped
    # a deleted image is remade even though its manifest line exists
    (deleted,) = [r["image"] for r in r2.made if (r["prompt_id"], r["seed"]) == ("red_cube", 1)]
    (out / deleted).unlink()
    r5 = run_inprocess([*FAST, "seed=[1]", "cfg=3"], out, tiny_root)
    assert [(r["prompt_id"], r["seed"]) for r in r5.made] == [("red_cube", 1)]
    assert (out / r5.made[0]["image"]).exists()


def test_near_uniform_image_is_flagged(tmp_path, tiny_root, caplog, monkeypatch):
    from ideogram4.experiment.run import cache

    run_inprocess([*FAST, "prompt=warm up"], tmp_path / "warm", tiny_root)  # make sure a pipeline is cached
    pipe = cache._CURRENT.pipe
    real = type(pipe).generate

    def grey(self, *a, **kw):
        out = real(self, *a, **kw)
        out.images = [Image.new("RGB", im.size, (127, 127, 127)) for im in out.images]
        return out

    monkeypatch.setattr(type(pipe), "generate", grey)
    out = tmp_path / "job"
    with caplog.at_level("WARNING", logger="ideogram4.experiment"):
        res = run_inprocess([*FAST, "prompt=a grey wall"], out, tiny_root)
    rec = read_manifest(out)[0]
    assert rec["flags"] == {"near_uniform": True, "pixel_std": 0.0} and res.made[0]["flags"]["near_uniform"]
    assert "FLAGGED" in caplog.text and "near-uniform" in caplog.text


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.slow
def test_wandb_unreachable_loses_nothing_and_falls_back_offline(tmp_path, tiny_root, monkeypatch, caplog):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    out = tmp_path / "job"
    with caplog.at_level("WARNING", logger="ideogram4.experiment"):
        res = run_inprocess(
            [*TINY, "prompts=smoke", "seed=[0,1]", "tracker.mode=online", "tracker.init_timeout=3"], out, tiny_root
        )
    assert len(res.made) == 4 and len(read_manifest(out)) == 4
    assert all((out / r["image"]).exists() for r in res.made)
    assert "logging offline instead" in caplog.text
    # what was not sent is kept for `wandb sync`
    assert list(out.glob("wandb/offline-run-*/files/media/images/*.png"))


def test_wandb_failing_mid_run_is_a_warning(tmp_path, tiny_root, monkeypatch, caplog):
    from ideogram4.experiment.run import tracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    made = []
    real_make = tracker.make_tracker

    def failing_tracker(*a, **kw):
        t = real_make(*a, **kw)

        def boom(*a, **kw):
            raise ConnectionError("W&B went away")

        if t.enabled:
            t.run.log = boom
        made.append(t)
        return t

    monkeypatch.setattr(tracker, "make_tracker", failing_tracker)
    out = tmp_path / "job"
    with caplog.at_level("WARNING", logger="ideogram4.experiment"):
        res = run_inprocess([*TINY, "prompts=smoke", "seed=[0,1]"], out, tiny_root)
    assert made and made[0].failures >= 4
    assert len(res.made) == 4 and len(read_manifest(out)) == 4
    assert "W&B went away" in caplog.text


def test_out_of_memory_suggests_memory_modes(tmp_path, tiny_root, monkeypatch):
    import torch

    from ideogram4.experiment.run import cache

    run_inprocess([*FAST, "prompt=warm up"], tmp_path / "warm", tiny_root)
    pipe = cache._CURRENT.pipe

    def oom(self, *a, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(type(pipe), "generate", oom)
    out = tmp_path / "job"
    with pytest.raises(RuntimeError, match="model=nf4.*load_unconditional=false"):
        run_inprocess([*FAST, "prompt=big"], out, tiny_root)
    assert not list(out.glob("images/*.png")) and not (out / "manifest.jsonl").exists()
