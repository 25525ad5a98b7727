"""Masked editing through the runner: config keys, the edit (with file hashes) in the manifest, the PNG and
the resume key, reproduction with the mask matched by hash, edit metrics in a sweep summary."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
from PIL import Image
from runner_helpers import TINY, read_manifest, run_cli, run_inprocess

from ideogram4.experiment.reproduce.__main__ import main as reproduce_main
from ideogram4.experiment.run import outputs as om

FAST = [*TINY, "tracker=none", "progress=false", "prompt=a red cube"]


def _files(folder, side=64):
    source, mask = folder / "input.png", folder / "mask.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(source)
    half = np.zeros((side, side), np.uint8)
    half[:, : side // 2] = 255
    Image.fromarray(half).save(mask)
    return source, mask


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_masked_run_records_the_edit_and_resumes_by_mask_content(tmp_path, tiny_root):
    source, mask = _files(tmp_path)
    args = [*FAST, f"input_image={source}", f"mask_image={mask}", "mask_blur=8", "metrics=[edit]"]
    first = run_inprocess(args, tmp_path / "job", tiny_root)
    (record,) = first.made
    edit = record["settings"]["edit"]
    assert edit["kind"] == "mask_image" and edit["mask_blur"] == 8.0 and edit["mask_image"] == str(mask)
    assert edit["mask_image_sha256"] == _sha256(mask) and "edit_margin" not in edit
    assert record["metrics"]["kept_psnr"] > 0 and 0 < record["metrics"]["edited_change"]
    parameters = om.read_png_text(tmp_path / "job" / record["image"])["parameters"]
    assert f'Edit: "mask_image, mask_image {_sha256(mask)[:12]}"' in parameters

    again = run_inprocess(args, tmp_path / "job", tiny_root)
    assert not again.made and len(again.skipped) == 1, "same input and mask: nothing to redo"
    Image.fromarray(255 - np.asarray(Image.open(mask))).save(mask)  # another mask under the same name
    third = run_inprocess(args, tmp_path / "job", tiny_root)
    assert len(third.made) == 1 and third.made[0]["settings_hash"] != record["settings_hash"]
    assert third.made[0]["image"] != record["image"], "the first image must be kept"


@pytest.mark.slow
def test_masked_image_reproduces_with_the_mask_matched_by_hash(tmp_path, tiny_root, capsys):
    source, mask = _files(tmp_path)
    run_inprocess([*FAST, f"input_image={source}", f"mask_image={mask}"], tmp_path / "job", tiny_root)
    png = tmp_path / "job" / "images" / "prompt__seed0.png"
    moved = tmp_path / "moved.png"
    mask.rename(moved)

    def reproduce(*extra):
        code = reproduce_main([str(png), "--out", str(tmp_path / "out"), f"input_image={source}", *extra])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, _, err = reproduce()
    assert code == 2 and "mask image" in err and "Fix: pass mask_image=" in err and len(err.strip().splitlines()) == 1
    code, _, err = reproduce(f"mask_image={source}")
    assert code == 2 and "is not the one prompt__seed0.png was made from" in err
    code, out, _ = reproduce(f"mask_image={moved}")
    assert code == 0 and "Identical" in out


@pytest.mark.slow
def test_outpaint_through_the_runner(tmp_path, tiny_root):
    source, _ = _files(tmp_path, side=256)
    Image.open(source).crop((0, 0, 256, 192)).save(source)
    args = [*FAST, "resolution.height=256", "resolution.width=256", f"input_image={source}", "outpaint.top=64"]
    (record,) = run_inprocess(args, tmp_path / "job", tiny_root).made
    assert record["settings"]["edit"]["outpaint"] == {"left": 0, "right": 0, "top": 64, "bottom": 0}
    with Image.open(tmp_path / "job" / record["image"]) as image:
        assert image.size == (256, 256)


@pytest.mark.slow
def test_sweep_over_strength_and_blur_summarises_the_keep_change_trade_off(tmp_path, runner_env):
    source, mask = _files(tmp_path)
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, f"input_image={source}", f"mask_image={mask}", "metrics=[edit]"]
    args += ["denoising_strength=0.2,1.0", "mask_blur=0,8", f"hydra.sweep.dir={sweep}"]
    res = run_cli(args, {**runner_env, "WANDB_MODE": "offline"}, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert {(r["denoising_strength"], r["mask_blur"]) for r in rows} == {
        (s, b) for s in ("0.2", "1.0") for b in ("0", "8")
    }
    assert {"kept_psnr_mean", "kept_ssim_mean", "edited_change_mean"} <= set(rows[0])
    change = {(r["denoising_strength"], r["mask_blur"]): float(r["edited_change_mean"]) for r in rows}
    for blur in ("0", "8"):
        assert change[("1.0", blur)] > change[("0.2", blur)], f"a stronger edit should change more: {change}"
    blurs = {r["settings"]["edit"]["mask_blur"] for job in sweep.glob("[0-9]*") for r in read_manifest(job)}
    assert blurs == {0.0, 8.0}


def test_scoring_later_rebuilds_the_edit_region_from_the_recorded_files(tmp_path, tiny_root, caplog):
    from ideogram4.experiment.score import score_folder

    source, mask = _files(tmp_path)
    args = [*FAST, f"input_image={source}", f"mask_image={mask}", "mask_blur=8", "metrics=[edit]"]
    (made,) = run_inprocess(args, tmp_path / "job", tiny_root).made
    assert score_folder(tmp_path / "job", ["edit"], {}, force=True, edit_files=[tmp_path]) == 1
    assert read_manifest(tmp_path / "job")[-1]["metrics"] == made["metrics"]
    # the manifest's paths are data: without the user's say-so (--edit-files) they are not followed
    with caplog.at_level("WARNING"):
        assert score_folder(tmp_path / "job", ["edit"], {}, force=True, edit_files=[tmp_path / "job"]) == 1
    assert set(read_manifest(tmp_path / "job")[-1]["metrics"].values()) == {None}
    assert "in no folder given with --edit-files" in caplog.text and str(mask) in caplog.text
    Image.new("L", (64, 64), 255).save(mask)  # the mask changed since: no region, no values
    assert score_folder(tmp_path / "job", ["edit"], {}, force=True, edit_files=[tmp_path]) == 1
    assert set(read_manifest(tmp_path / "job")[-1]["metrics"].values()) == {None}
