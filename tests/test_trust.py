"""A PNG, caption or file from elsewhere is data (issue 19): real images reproduce; a hostile one reads
no secret, escapes no folder and opens no file outside what the user points to."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runner_helpers import REPO, TINY, read_manifest, run_inprocess
from test_reproduce import edit_json_chunk, edit_png_text, pixels, reproduce

FAST = [*TINY, "tracker=none", "progress=false"]
SECRET = "s3cr3t-token-value"
CJK = "東京の夜景、看板に「営業中」と書かれている™"

_opened: list[str] | None = None  # the paths opened while a test watches (an audit hook cannot be removed)


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _opened.append(str(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def watch_opens():
    global _opened
    _opened = []
    yield _opened
    _opened = None


@pytest.fixture(autouse=True)
def _tiny_cache(monkeypatch, tiny_root):
    monkeypatch.setenv("IDEOGRAM4_CACHE", tiny_root)  # the user's own cache: where the tiny weights are


@pytest.mark.slow
def test_seed_example_and_cjk_images_reproduce_bit_for_bit(tmp_path, tiny_root, capsys):
    run_inprocess([*FAST, "prompts=seed_example"], tmp_path / "a", tiny_root)
    run_inprocess([*FAST, f"prompt='{CJK}'"], tmp_path / "b", tiny_root)
    for png in (
        tmp_path / "a" / "images" / "f1_verstappen__seed0.png",
        tmp_path / "b" / "images" / "prompt__seed0.png",
    ):
        with Image.open(png) as im:
            assert type(im.text["ideogram4:caption"]).__name__ == "iTXt"  # not Latin-1: the case that failed
        out = tmp_path / f"again_{png.parents[1].name}"
        code, stdout, err = reproduce([png, "--out", out], capsys)
        assert code == 0 and "Identical" in stdout, stdout + err
        assert np.array_equal(pixels(out / "images" / png.name), pixels(png))
    assert read_manifest(tmp_path / "again_b")[0]["caption"] == CJK


def _hostile(made: Path, dst: Path, sentinel: Path, lora: bool) -> None:
    def config(c: dict) -> None:
        c["tracker"].update(
            project="${oc.env:SECRET_TOKEN}", tags=["${oc.select:model.source}"], dir="${oc.env:HOME}/wandb-here"
        )
        c["model"]["cache_dir"] = str(sentinel.parent / "foreign_cache")
        c["negative_prompt"] = "\\\\${oc.env:SECRET_TOKEN}"
        if lora:
            c["lora"] = [{"path": str(sentinel), "name": "evil", "scale": 1.0}]

    def settings(s: dict) -> None:
        s["settings"]["negative_prompt"] = "\\${oc.env:SECRET_TOKEN} and ${oc.env:SECRET_TOKEN}"
        if lora:
            s["settings"]["loras"] = [{"name": "evil", "source": str(sentinel), "sha256": "0" * 64, "scale": 1.0}]

    def edit(text: dict) -> dict:
        text = edit_json_chunk("ideogram4:config", config)(text)
        text = edit_json_chunk("ideogram4:settings", settings)(text)
        return dict(text, **{"ideogram4:caption": "a red cube \\${oc.env:SECRET_TOKEN}"})

    edit_png_text(made, dst, edit)


@pytest.mark.slow
def test_hostile_png_reads_no_secret_and_touches_nothing_outside_out(
    tmp_path, tiny_root, capsys, monkeypatch, watch_opens
):
    monkeypatch.setenv("SECRET_TOKEN", SECRET)
    run_inprocess([*FAST, "prompt=a red cube"], tmp_path / "job", tiny_root)
    made = tmp_path / "job" / "images" / "prompt__seed0.png"
    outside = tmp_path / "outside"
    outside.mkdir()
    sentinel = outside / "passwd"
    sentinel.write_text("root:x:0:0\n")
    with_lora, without = tmp_path / "with_lora.png", tmp_path / "hostile.png"
    _hostile(made, with_lora, sentinel, lora=True)
    _hostile(made, without, sentinel, lora=False)
    watch_opens.clear()

    code, stdout, err = reproduce([with_lora, "--out", tmp_path / "out1"], capsys)
    assert code == 2 and not stdout and len(err.strip().splitlines()) == 1
    assert "LoRA evil" in err and "Fix: pass 'lora=[{path:/path/to/evil.safetensors,name:evil" in err

    out = tmp_path / "out2"
    code, stdout, err = reproduce([without, "--out", out], capsys)
    assert code == 1 and "Different" in stdout  # the caption differs from the one the pixels were made with
    assert "model.cache_dir = " in stdout and "is not used" in stdout  # the foreign place is named
    assert "tracker.dir = " in stdout
    assert not [p for p in watch_opens if p.startswith(str(outside))]  # the sentinel was never opened
    rec = read_manifest(out)[0]
    assert rec["caption"] == "a red cube \\${oc.env:SECRET_TOKEN}"  # verbatim, backslash and all
    assert rec["settings"]["negative_prompt"] == "\\${oc.env:SECRET_TOKEN} and ${oc.env:SECRET_TOKEN}"

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in written if SECRET.encode() in p.read_bytes()]
    assert sorted(p.name for p in outside.iterdir()) == ["passwd"]  # no foreign cache built there
    assert not [
        p for p in tmp_path.iterdir() if p.name not in ("job", "outside", "out1", "out2") and p.suffix != ".png"
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "what, change, message",
    [
        ("settings a list", ("ideogram4:settings", lambda s: s.update(settings=[1, 2])), "settings is a list"),
        ("loras a string", ("ideogram4:settings", lambda s: s["settings"].update(loras="x")), "loras is a str"),
        ("model a string", ("ideogram4:config", lambda c: c.update(model="fp8")), "model is a str"),
        (
            "model name a path",
            ("ideogram4:config", lambda c: c["model"].update(name="../../etc/x")),
            "which this runner does not have",
        ),
        (
            "lora without source",
            ("ideogram4:settings", lambda s: s["settings"].update(loras=[{"name": "s"}])),
            "LoRA s",
        ),
        (
            "lora name a path",
            ("ideogram4:settings", lambda s: s["settings"].update(loras=[{"name": "../x"}])),
            "the metadata is damaged",
        ),
    ],
)
def test_malformed_png_metadata_is_one_line(tmp_path, made_image, capsys, what, change, message):
    png = tmp_path / "bad.png"
    edit_png_text(made_image, png, edit_json_chunk(*change))
    code, stdout, err = reproduce([png, "--out", tmp_path / "out"], capsys)
    assert code == 2 and message in err and str(png) in err, (what, err)
    assert len(err.strip().splitlines()) == 1 and not stdout


def _deep(depth: int) -> dict:
    node: dict = {}
    for _ in range(depth):
        node = {"a": node}
    return node


@pytest.mark.slow
@pytest.mark.parametrize(
    "what, change",
    [
        ("resolver in a sampler name", ("ideogram4:config", lambda c: c["sampler"].update(name="${now:%Y}"))),
        ("800-deep metric_options", ("ideogram4:config", lambda c: c.update(metric_options=_deep(800)))),
        ("unknown metric options", ("ideogram4:config", lambda c: c.update(metric_options={"nope": {"x": 1}}))),
    ],
)
def test_png_settings_that_do_not_make_pixels_are_not_taken(tmp_path, made_image, capsys, what, change):
    png = tmp_path / "odd.png"
    edit_png_text(made_image, png, edit_json_chunk(*change))
    code, stdout, err = reproduce([png, "--out", tmp_path / "out"], capsys)
    assert code in (0, 1) and "Reproduce:" not in err, (what, err)  # sampled: nothing refused
    assert "unknown metric" not in stdout


@pytest.fixture(scope="module")
def made_image(tmp_path_factory, tiny_root) -> Path:
    out = tmp_path_factory.mktemp("made")
    run_inprocess([*FAST, "prompt=a red cube"], out, tiny_root)
    return out / "images" / "prompt__seed0.png"


# --- bounded cost: image files ---------------------------------------------------------------------


def _bad_images(folder: Path) -> dict[str, tuple[Path, str]]:
    big = folder / "big.png"
    Image.new("1", (12000, 12000)).save(big)  # a few KB on disk, 144 MP declared
    notimg, empty, cut = folder / "notes.png", folder / "empty.png", folder / "cut.png"
    notimg.write_text("not an image")
    empty.write_bytes(b"")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[:-400])
    return {
        "big": (big, "declares 12000x12000 pixels"),
        "not an image": (notimg, "is not an image PIL can read"),
        "empty": (empty, "is not an image PIL can read"),
        "truncated": (cut, "is damaged or truncated"),
    }


def test_metrics_cli_names_each_bad_image_in_one_line_and_scores_the_rest(tmp_path):
    bad = _bad_images(tmp_path)
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), "red").save(good)
    run = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"
    )
    images = [str(p) for p, _ in bad.values()] + [str(good)]
    cmd = [sys.executable, "-c", run, sys.executable, "-m", "ideogram4.metrics", "--metrics", "image_stats", *images]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    *errors, peak_kb = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert int(peak_kb) < 1024 * 1024  # KB: under 1 GB, where decoding the big one takes 8 GB
    for path, message in bad.values():
        (line,) = [line for line in errors if str(path) in line]
        assert message in line and "Fix:" in line
    assert [json.loads(line)["image"] for line in res.stdout.splitlines()] == [str(good)]  # the rest went on


def test_reproduce_of_a_huge_declared_png_is_one_line(tmp_path, capsys):
    big, message = _bad_images(tmp_path)["big"]
    code, stdout, err = reproduce([big, "--out", tmp_path / "out"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not stdout


def test_manifest_paths_outside_the_folder_are_never_read(tmp_path, made_image, watch_opens, caplog):
    from ideogram4.experiment.score import main as score_main

    job = tmp_path / "job"
    shutil.copytree(made_image.parents[1], job)
    sentinel = tmp_path / "secret.png"
    shutil.copy(made_image, sentinel)
    rec = read_manifest(job)[0]
    with open(job / "manifest.jsonl", "a") as f:
        for image in (str(sentinel), "../secret.png"):
            f.write(json.dumps(dict(rec, image=image)) + "\n")
    watch_opens.clear()
    assert score_main([str(job), "--metrics", "image_stats", "--force"]) == 0
    assert not [p for p in watch_opens if "secret" in p]
    assert sum("names an image outside its folder" in r.message for r in caplog.records) == 2


@pytest.mark.parametrize(
    "options, message",
    [("bad", "must look like METRIC.NAME=VALUE"), ("ocr=5", "must look like METRIC.NAME=VALUE")],
)
def test_score_cli_bad_options_are_one_line(tmp_path, made_image, capsys, options, message):
    from ideogram4.experiment.score import main as score_main

    with pytest.raises(SystemExit) as exit_:
        score_main([str(made_image.parents[1]), "--metrics", "image_stats", "--option", options])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err


def test_score_cli_on_a_folder_in_use_is_one_line_exit_4(tmp_path, made_image, capsys):
    from ideogram4.experiment.run.lock import folder_lock
    from ideogram4.experiment.score import main as score_main

    job = tmp_path / "job"
    shutil.copytree(made_image.parents[1], job)
    with folder_lock(job):
        assert score_main([str(job), "--metrics", "image_stats", "--force"]) == 4
    err = capsys.readouterr().err
    assert err.startswith("Output: ") and len(err.strip().splitlines()) == 1


# --- bounded cost: prompt files and captions --------------------------------------------------------


def _anchor_bomb() -> str:
    """Under 500 bytes; 9 ** 9 (387 million) strings once its aliases are expanded."""
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev, name = chr(96 + i), chr(97 + i)
        levels.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    return "\n".join(levels) + "\nitems: [{id: bomb, prompt: *i}]\n"


def _deep_json(depth: int = 5000) -> str:
    return '{"high_level_description": ' + "[" * depth + "]" * depth + "}"


def _prompt_readers(path: Path) -> dict:
    from runner_helpers import compose

    from ideogram4.captions.__main__ import main as captions_main
    from ideogram4.experiment.config.plan import build_plan
    from ideogram4.experiment.config.problems import ConfigError
    from ideogram4.metrics.__main__ import main as metrics_main

    cfg = compose([*FAST, f"prompts.file={path}"])  # composed before the clock starts: only the reading is timed

    def run_py():  # what run.py prompts.file=... does at validation
        with pytest.raises(ConfigError) as e:
            build_plan(cfg, check_tokens=False)
        return 2, str(e.value)

    return {
        "captions check": lambda: captions_main(["check", str(path)]),
        "captions format": lambda: captions_main(["format", str(path)]),
        "captions tokens": lambda: captions_main(["tokens", str(path)]),
        "prompts.file": run_py,
        "metrics --caption": lambda: metrics_main(["--metrics", "image_stats", "--caption", str(path), str(path)]),
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["yaml anchor bomb", "deep json", "deep jsonl", "deep yaml"])
@pytest.mark.parametrize("reader", ["captions check", "captions format", "captions tokens", "prompts.file"])
def test_hostile_prompt_files_are_one_line_in_bounded_time(tmp_path, capsys, kind, reader):
    files = {
        "yaml anchor bomb": ("bomb.yaml", _anchor_bomb()),
        "deep json": ("deep.json", _deep_json()),
        "deep jsonl": ("deep.jsonl", json.dumps({"id": "a", "prompt": "x"}) + "\n" + "[" * 5000 + "]" * 5000),
        "deep yaml": ("deep.yaml", "items:\n- id: a\n  prompt: " + "[" * 5000 + "]" * 5000 + "\n"),
    }
    name, text = files[kind]
    path = tmp_path / name
    path.write_text(text)
    assert len(text.encode()) < 500 or kind != "yaml anchor bomb"
    start = time.monotonic()
    result = _prompt_readers(path)[reader]()
    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    code, message = result if isinstance(result, tuple) else (result, captured.out + captured.err)
    assert code == 2 and elapsed < 2.0, (code, elapsed, message)
    expected = "expands to over" if kind == "yaml anchor bomb" else "nests deeper than"
    (line,) = [line for line in message.splitlines() if str(path) in line]  # one line names the file
    assert expected in line and "Fix:" in line and "Traceback" not in message


def test_metrics_caption_file_nested_too_deep_is_one_line(tmp_path, capsys):
    caption, image = tmp_path / "deep.json", tmp_path / "a.png"
    caption.write_text(_deep_json())
    Image.new("RGB", (16, 16)).save(image)
    code = _prompt_readers(caption)["metrics --caption"]()
    err = capsys.readouterr().err
    assert code == 2 and "nests deeper than" in err and len(err.strip().splitlines()) == 1


# --- bounded cost: LoRA files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("text.safetensors", b"this is a text file, not weights\n", "its first 8 bytes give a"),
        ("header.safetensors", (10).to_bytes(8, "little") + b"[not json]", "its header is not a JSON object"),
        ("blob", b"\0" * 4096, "is not a LoRA weights file"),
    ],
)
def test_a_file_that_is_no_lora_is_one_line_before_it_is_hashed(tmp_path, monkeypatch, name, data, message):
    from runner_helpers import compose

    from ideogram4.experiment.config.plan import build_plan
    from ideogram4.experiment.config.problems import ConfigError
    from ideogram4.experiment.run import paths
    from ideogram4.lora.files import LoraError, read_lora

    path = tmp_path / name
    path.write_bytes(data)
    hashed = []
    monkeypatch.setattr(paths.hashlib, "sha256", lambda *a: hashed.append(a) or __import__("hashlib").sha256(*a))
    with pytest.raises(LoraError, match=message) as e:
        read_lora(str(path))
    assert "Fix: give a LoRA .safetensors file" in str(e.value) and len(str(e.value).splitlines()) == 1
    with pytest.raises(ConfigError, match=message) as e:
        build_plan(compose([*FAST, "prompt=x", f"lora=[{{path:'{path}'}}]"]), check_tokens=False)
    assert "lora.0.path" in str(e.value)
    assert not hashed  # judged by its first bytes: never read whole


def test_reproduce_never_replaces_another_image_of_the_same_name(tmp_path, made_image, capsys):
    out = tmp_path / "out"
    assert reproduce([made_image, "--out", out], capsys)[0] == 0
    assert reproduce([made_image, "--out", out], capsys)[0] == 0  # its own earlier reproduction: replaced
    other = tmp_path / "other" / made_image.name  # same name, another image (another job's settings)
    other.parent.mkdir()
    edit_png_text(made_image, other, edit_json_chunk("ideogram4:settings", lambda s: s["settings"].update(cfg=2.0)))
    before = (out / "images" / made_image.name).read_bytes()
    code, stdout, err = reproduce([other, "--out", out], capsys)
    assert code == 4 and "is not a reproduction of" in err and "Fix: pass another --out" in err
    assert len(err.strip().splitlines()) == 1
    assert (out / "images" / made_image.name).read_bytes() == before


@pytest.mark.slow
def test_interpolation_typed_in_a_prompt_on_the_command_line_is_text(tmp_path, runner_env):
    from runner_helpers import run_cli

    res = run_cli([*FAST, "prompt='Total: ${total}'", f"hydra.run.dir={tmp_path / 'job'}"], runner_env)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert read_manifest(tmp_path / "job")[0]["caption"] == "Total: ${total}"
