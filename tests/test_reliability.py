"""Reliability: nothing lost or mislabelled under reuse, concurrency, full disks and odd input.

Most tests run in-process on the tiny model.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
from pathlib import Path

import pytest
from PIL import Image
from runner_helpers import REPO, TINY, compose, documented_commands, read_manifest, run_cli, run_inprocess

from ideogram4.experiment.config.plan import build_plan
from ideogram4.experiment.config.problems import ConfigError
from ideogram4.experiment.run import outputs as om
from ideogram4.experiment.run.manifest import OutputWriteError, append_manifest
from ideogram4.experiment.run.manifest import read_manifest as om_read
from ideogram4.experiment.run.records import PNG_SETTINGS_KEY

FAST = [*TINY, "tracker=none"]


def plan(overrides: list[str]):
    return build_plan(compose(["model=tiny", *overrides]), check_tokens=False)


def png_hash(path: Path) -> str:
    return json.loads(om.read_png_text(path)[PNG_SETTINGS_KEY])["settings_hash"]


def assert_manifest_describes_files(out: Path) -> None:
    for rec in om.latest_records(om.read_manifest(out)).values():
        assert png_hash(out / rec["image"]) == rec["settings_hash"], rec["image"]


# --- data lost or mislabelled -------------------------------------------------------------------------


@pytest.mark.slow
def test_overwrite_only_replaces_an_image_made_with_the_same_settings(tmp_path, tiny_root):
    out = tmp_path / "job"
    (cfg3,) = run_inprocess([*FAST, "prompt=a cat", "cfg=3"], out, tiny_root).made
    cfg3_bytes = (out / cfg3["image"]).read_bytes()
    (cfg7,) = run_inprocess([*FAST, "prompt=a cat", "cfg=7"], out, tiny_root).made
    assert cfg7["image"] != cfg3["image"]
    (again,) = run_inprocess([*FAST, "prompt=a cat", "cfg=7", "output.overwrite=true"], out, tiny_root).made
    assert again["image"] == cfg7["image"]  # replaced in place: its own file, made with its own settings
    assert (out / cfg3["image"]).read_bytes() == cfg3_bytes
    assert_manifest_describes_files(out)


def test_a_second_run_into_a_locked_folder_says_who_holds_it(tmp_path, tiny_root):
    from ideogram4.experiment.run.lock import FolderInUse, folder_lock

    out = tmp_path / "job"
    out.mkdir()
    with folder_lock(out):
        with pytest.raises(FolderInUse, match=rf"in use by process {os.getpid()} .*Fix:"):
            run_inprocess([*FAST, "prompt=a cat"], out, tiny_root)
    assert not (out / "manifest.jsonl").exists()
    assert len(run_inprocess([*FAST, "prompt=a cat"], out, tiny_root).made) == 1  # released


def test_torn_manifest_is_repaired_once_and_nothing_is_made_twice(tmp_path, tiny_root, caplog):
    out = tmp_path / "job"
    run_inprocess([*FAST, "prompt=a cat", "seed=[0,1]"], out, tiny_root)
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"image": "images/prompt__seed2.png", "settings_h')  # a line cut off by a full disk
    res = run_inprocess([*FAST, "prompt=a cat", "seed=[0,1,2]"], out, tiny_root)
    assert [r["seed"] for r in res.made] == [2] and len(res.skipped) == 2
    recs = read_manifest(out)  # every line parses
    assert sorted(r["seed"] for r in recs) == [0, 1, 2]
    assert len(list(out.glob("manifest.jsonl.fragment-*"))) == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="ideogram4.experiment"):
        assert not run_inprocess([*FAST, "prompt=a cat", "seed=[0,1,2]"], out, tiny_root).made
    assert "not valid JSON" not in caplog.text and "mid-line" not in caplog.text


def test_a_failed_append_is_rolled_back(tmp_path, monkeypatch):
    append_manifest(tmp_path, {"image": "images/a.png", "settings_hash": "h"})
    size = (tmp_path / "manifest.jsonl").stat().st_size
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 10:
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OutputWriteError, match="No space left"):
        append_manifest(tmp_path, {"image": "images/b.png", "settings_hash": "h2"})
    monkeypatch.undo()
    assert (tmp_path / "manifest.jsonl").stat().st_size == size
    assert [r["image"] for r in om_read(tmp_path)] == ["images/a.png"]


def test_a_reused_sweep_folder_grid_shows_only_the_current_values(tmp_path):
    from ideogram4.experiment.grid import build_grid, collect_jobs

    for num, (old, new) in enumerate((("3", "5"), ("7", "9"))):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- cfg={new}\n")
        for cfg in (old, new):  # the first sweep's image, then this sweep's, same file name pattern
            rel = f"images/p__seed0{'' if cfg == old else '__x'}.png"
            om.save_png_atomic(Image.new("RGB", (8, 8)), job / rel, {})
            rec = {
                "image": rel,
                "prompt_id": "p",
                "seed": 0,
                "settings_hash": cfg,
                "job": {"overrides": [f"cfg={cfg}"]},
            }
            append_manifest(job, rec)
    grid = build_grid(collect_jobs(tmp_path))
    assert grid.columns == ["cfg=5", "cfg=9"]
    assert {c: v["record"]["settings_hash"] for (_, c), v in grid.cells.items()} == {0: "5", 1: "9"}


# --- silently different from what was asked -------------------------------------------------------------


def test_input_image_needs_strength_below_one_and_its_content_is_in_the_key(tmp_path, tiny_root):
    img = tmp_path / "in.png"
    Image.new("RGB", (64, 64), "red").save(img)
    with pytest.raises(ConfigError, match="denoising_strength = 1.0.*would ignore it.*Fix"):
        plan([f"input_image={img}", *TINY[1:]])
    out = tmp_path / "job"
    args = [*FAST, "prompt=a cat", f"input_image={img}", "denoising_strength=0.5"]
    (first,) = run_inprocess(args, out, tiny_root).made
    Image.new("RGB", (64, 64), "blue").save(img)  # edited input: not the same image any more
    (second,) = run_inprocess(args, out, tiny_root).made
    assert first["settings_hash"] != second["settings_hash"]
    assert second["settings"]["input_image_sha256"] != first["settings"]["input_image_sha256"]


def test_renaming_a_prompt_id_makes_the_new_file(tmp_path, tiny_root):
    out = tmp_path / "job"
    f = tmp_path / "p.jsonl"
    for pid in ("old_name", "new_name"):
        f.write_text(json.dumps({"id": pid, "prompt": "a cat"}) + "\n")
        (made,) = run_inprocess([*FAST, f"prompts.file={f}"], out, tiny_root).made
        assert made["image"] == f"images/{pid}__seed0.png" and (out / made["image"]).exists()


def test_manifest_is_strict_json(tmp_path):
    with pytest.raises(ValueError):
        append_manifest(tmp_path, {"image": "images/a.png", "settings_hash": "h", "cfg": float("nan")})
    assert not (tmp_path / "manifest.jsonl").exists() or not (tmp_path / "manifest.jsonl").read_text()


@pytest.mark.parametrize("text", ["cost is ${price}", "${oc.env:HOME} at home", "a \\${literal}"])
def test_prompt_text_is_never_interpolated(text):
    assert plan([f"prompt={text}"]).prompts[0].caption == text.replace("\\$", "$")
    items = plan(["prompts=smoke", f"prompts.items.0.prompt={text}"]).prompts
    assert items[0].caption == text.replace("\\$", "$")


def _readme_run_commands() -> list[str]:
    return documented_commands((REPO / "README.md").read_text(encoding="utf-8"))


def test_readme_commands_parse_as_written():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    commands = _readme_run_commands()
    assert len(commands) >= 10
    parser = OverridesParser.create()
    for cmd in commands:
        argv = [a for a in shlex.split(cmd)[2:] if a not in ("-m", "...")]
        parsed = parser.parse_overrides(argv)  # a shell-stripped quote would fail or split here
        for o in parsed:
            if o.get_key_element() == "prompt":
                assert not o.is_sweep_override(), cmd
                value = o.value()
                assert isinstance(value, str) and value.count('"') == 0 and "," in value, cmd
                assert plan([o.input_line]).prompts[0].caption == value


def test_empty_seed_list_is_an_error_duplicates_are_a_warning():
    with pytest.raises(ConfigError, match="seed.*empty"):
        plan(["seed=[]"])
    p = plan(["seed=[0,0,1]"])
    assert p.seeds == [0, 1] and any("more than once" in w for w in p.warnings)
    p = plan(["seed=[0,1]", "images_per_prompt=2"])
    assert p.seeds == [0, 1, 2] and any("[1]" in w for w in p.warnings)


def test_presets_are_recorded_as_run_and_the_key_is_on_resolved_values(tmp_path, tiny_root):
    from ideogram4.experiment.run.runner import plan_items

    a = plan(["sampler=turbo_12", "prompt=x"])
    b = plan(["sampler=default_20", "sampler.steps=12", "sampler.polish_steps=1", "sampler.mu=0.5", "prompt=x"])
    assert [i.key for i in plan_items(a)] == [i.key for i in plan_items(b)]
    assert (a.gen.sampler, b.gen.sampler) == ("turbo_12", "default_20+custom")
    (rec,) = run_inprocess([*FAST, "prompt=x", "resolution=square_1024", *TINY[1:3]], tmp_path / "j", tiny_root).made
    assert rec["sampler"] == "turbo_12+custom" and "resolution" not in rec["settings"]
    assert (rec["settings"]["width"], rec["settings"]["height"]) == (64, 64)


# --- crashes and waits ------------------------------------------------------------------------------


def test_a_bad_job_is_skipped_the_rest_finish_and_the_grid_is_made(tmp_path, runner_env):
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "prompt=a cat", "resolution.height=64,1000", f"hydra.sweep.dir={sweep}"]
    res = run_cli(args, runner_env)
    text = res.stdout + res.stderr
    assert res.returncode == 2, text[-2000:]
    assert "Traceback" not in text and "resolution.height = 1000" in text, text[-2000:]
    assert len(read_manifest(sweep / "0")) == 1 and (sweep / "comparison_grid.png").exists()
    assert "1 job(s) of the sweep failed" in text


@pytest.mark.slow
@pytest.mark.parametrize(
    "make, field",
    [
        (lambda d: ["prompts.file=" + str(_file(d, "p.jsonl", json.dumps({"id": "x" * 200, "prompt": "a"})))], "id"),
        (lambda d: ["prompts.file=" + str(_file(d, "p.jsonl", json.dumps({"id": "a\n", "prompt": "a"})))], "id"),
        (
            lambda d: ["prompts.file=" + str(_file(d, "p.jsonl", '{"id": "a", "prompt": "caf\xe9"}', "latin-1"))],
            "UTF-8",
        ),
        (lambda d: ["prompts.file=" + str(_file(d, "p.yaml", '- id: a\n  prompt: "x \\ud800 y"\n'))], "surrogate"),
        (lambda d: ["input_image=" + str(_file(d, "i.png", "not an image")), "denoising_strength=0.5"], "input_image"),
        (lambda d: ["input_image=" + str(_image(d, 80)), "denoising_strength=0.5"], "resolution.width=80"),
        (lambda d: ["device=mps"], "device"),
    ],
    ids=["id-too-long", "id-newline", "latin-1-file", "lone-surrogate", "not-an-image", "image-size", "mps"],
)
def test_odd_input_is_one_config_error(tmp_path, make, field):
    with pytest.raises(ConfigError, match=field) as e:
        plan([*TINY[1:], *make(tmp_path)])
    assert "Fix:" in str(e.value)


def _file(folder: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    (folder / name).write_bytes(text.encode(encoding))
    return folder / name


def _image(folder: Path, size: int) -> Path:
    Image.new("RGB", (size, size)).save(folder / "in.png")
    return folder / "in.png"


def test_a_manifest_line_that_is_not_a_record_is_skipped(tmp_path, tiny_root, caplog):
    out = tmp_path / "job"
    run_inprocess([*FAST, "prompt=a cat"], out, tiny_root)
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"hello": "world"}\n[1, 2]\n')
    with caplog.at_level("WARNING", logger="ideogram4.experiment"):
        res = run_inprocess([*FAST, "prompt=a cat"], out, tiny_root)
    assert len(res.skipped) == 1 and not res.made and "not an image record" in caplog.text


def test_unwritable_output_is_reported_before_weights_load(tmp_path, tiny_root, monkeypatch):
    from ideogram4.experiment.run import cache

    monkeypatch.setattr(cache, "get_pipeline", lambda *a: pytest.fail("weights loaded for an unwritable folder"))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OutputWriteError, match="cannot write to the output folder"):
        run_inprocess([*FAST, "prompt=a cat"], blocker / "job", tiny_root)


def test_full_disk_while_saving_is_one_clear_error(tmp_path, tiny_root, monkeypatch):
    from ideogram4.experiment.run.exits import EXIT_OUTPUT, classify

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    out = tmp_path / "job"
    with pytest.raises(OutputWriteError) as e:
        run_inprocess([*FAST, "prompt=a cat"], out, tiny_root)
    assert classify(e.value) == (EXIT_OUTPUT, f"Output: {e.value}") and "No space left" in str(e.value)
    assert not list(out.glob("images/*")) and not om.read_manifest(out)


@pytest.mark.parametrize("args", [["/nonexistent/sweep"], ["{tmp}", "--cell", "0"], ["{tmp}", "--cell", "-5"]])
def test_grid_cli_rejects_bad_arguments(tmp_path, args, capsys):
    from ideogram4.experiment.grid import main

    with pytest.raises(SystemExit) as e:
        main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and ("is not a folder" in err or "at least 16 pixels" in err), err


def test_unreachable_wandb_is_tried_once_per_process(monkeypatch, caplog):
    from ideogram4.experiment.config.schema import TrackerConf
    from ideogram4.experiment.run import tracker

    monkeypatch.setattr(tracker, "_ONLINE_FAILED", False)
    monkeypatch.setattr(tracker, "wandb_credentials_present", lambda: True)
    conf = TrackerConf(mode="online")
    assert tracker.resolve_mode(conf) == "online"
    with caplog.at_level("WARNING", logger="ideogram4.experiment"):
        tracker._online_failed()
        tracker._online_failed()
    assert caplog.text.count("every later run in this process logs offline") == 1
    assert tracker.resolve_mode(conf) == "offline"


def test_images_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        om.save_png_atomic(Image.new("RGB", (4, 4)), tmp_path / "a.png", {})
    finally:
        os.umask(old)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_wandb_keeps_its_staging_files_out_of_home(tmp_path, tiny_root, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_MODE", "offline")
    for key in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.delenv(key, raising=False)
    out = tmp_path / "job"
    run_inprocess([*TINY, "prompt=a cat", "tracker=wandb"], out, tiny_root)
    assert list(out.glob("wandb/offline-run-*")) and not list(home.rglob("staging"))


def test_readme_names_the_grid_file_it_writes():
    from ideogram4.experiment.grid import GRID_PNG

    text = (REPO / "README.md").read_text()
    assert GRID_PNG in text and "`grid.png`" not in text


@pytest.mark.slow
def test_a_damaged_tiny_cache_says_delete_it_not_download(tmp_path, tiny_root):
    import shutil

    from ideogram4.errors import CheckpointError
    from ideogram4.experiment.run import cache
    from ideogram4.tiny import ensure_tiny_checkpoint

    cache.release()  # force a load from the damaged copy
    built = Path(ensure_tiny_checkpoint(tiny_root))
    copy = tmp_path / "cache" / built.name
    shutil.copytree(built, copy)
    f = copy / "transformer" / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"tiny model cache is damaged.*Fix: delete") as e:
        run_inprocess([*FAST, "prompt=a cat"], tmp_path / "job", str(tmp_path / "cache"))
    assert "hf download" not in str(e.value)
    cache.release()
