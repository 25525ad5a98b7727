"""Metrics on synthetic images with known answers: text drawn with Pillow's bundled font at known
boxes, colour stripes. OCR runs the real bundled PP-OCR models (no download)."""

import json
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw, ImageFont

from ideogram4.metrics import (
    CaptionError,
    MetricError,
    Scorer,
    caption_facts,
    check_metrics,
    get_metric,
    metric_names,
    score_image,
)
from ideogram4.metrics.__main__ import main as cli_main
from ideogram4.spec import PNG_CAPTION_KEY

SIZE = 512
TOP, BOTTOM = [100, 80, 250, 920], [650, 80, 800, 920]  # [ymin, xmin, ymax, xmax], 0..1000


def poster(*texts, background=(245, 240, 230), ink=(25, 25, 60)):
    """Each (text, bbox) drawn centred in its box, as large as fits."""
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    for text, (ymin, xmin, ymax, xmax) in texts:
        left, top, right, bottom = (v * SIZE / 1000 for v in (xmin, ymin, xmax, ymax))
        size = int((bottom - top) * 0.6)
        while draw.textlength(text, font=ImageFont.load_default(size=size)) > 0.9 * (right - left):
            size -= 2
        font = ImageFont.load_default(size=size)
        draw.text(((left + right) / 2, (top + bottom) / 2), text, font=font, fill=ink, anchor="mm")
    return image


def caption(*texts, style_palette=None, element_palettes=()):
    elements = [{"type": "text", "bbox": bbox, "text": text, "desc": "bold letters"} for text, bbox in texts]
    for colors, bbox in element_palettes:
        elements.append({"type": "obj", "bbox": bbox, "desc": "a shape", "color_palette": colors})
    style = {"aesthetics": "flat", "lighting": "even", "medium": "print", "art_style": "poster"}
    if style_palette:
        style["color_palette"] = style_palette
    return {
        "high_level_description": "A poster.",
        "style_description": style,
        "compositional_deconstruction": {"background": "plain paper", "elements": elements},
    }


def ocr(image, cap, **options):
    return get_metric("ocr").score_detailed(image, cap, options)


# --- OCR ------------------------------------------------------------------------------------------------


def test_exact_text_in_its_box_scores_one():
    result = ocr(poster(("SUMMER SALE", TOP)), caption(("Summer\n sale", TOP)))  # case, line break, spaces
    assert result.values == {"ocr_word_accuracy": 1.0, "ocr_ned": 1.0, "ocr_exact_match": 1.0}
    [reading] = result.details["texts"]
    assert reading["read"].upper() == "SUMMER SALE" and reading["index"] == 0 and reading["bbox"] == TOP


def test_other_words_in_the_box_score_zero():
    values = ocr(poster(("COFFEE HOUSE", TOP)), caption(("SUMMER SALE", TOP))).values
    assert values["ocr_word_accuracy"] == 0.0 and values["ocr_exact_match"] == 0.0
    assert values["ocr_ned"] < 0.5


def test_right_words_outside_their_box_score_zero():
    image = poster(("SUMMER SALE", TOP))
    assert ocr(image, caption(("SUMMER SALE", BOTTOM))).values == {
        "ocr_word_accuracy": 0.0,
        "ocr_ned": 0.0,
        "ocr_exact_match": 0.0,
    }


def test_two_elements_one_right_scores_half():
    image = poster(("SUMMER SALE", TOP), ("COFFEE HOUSE", BOTTOM))
    result = ocr(image, caption(("SUMMER SALE", TOP), ("FRESH BREAD", BOTTOM)))
    assert result.values["ocr_word_accuracy"] == 0.5 and result.values["ocr_exact_match"] == 0.5
    assert [t["exact"] for t in result.details["texts"]] == [True, False]
    assert result.details["texts"][1]["read"].upper() == "COFFEE HOUSE"  # the reading goes to the manifest


def test_plain_prompt_quoted_strings_are_read_anywhere():
    image = poster(("OPEN DAILY", BOTTOM))
    values = ocr(image, "a shop sign that says \u201cOPEN DAILY\u201d, it's sunny").values
    assert values == {"ocr_word_accuracy": 1.0, "ocr_ned": 1.0, "ocr_exact_match": 1.0}
    missed = ocr(image, "a sign that says 'CLOSED NOW' and \"OPEN DAILY\"").values
    assert missed["ocr_word_accuracy"] == 0.5 and missed["ocr_exact_match"] == 0.5


def test_nothing_to_read_gives_none():
    none = {"ocr_word_accuracy": None, "ocr_ned": None, "ocr_exact_match": None}
    assert ocr(poster(), "a quiet lake at dawn, don't add text").values == none
    assert ocr(poster(), caption()).values == none


# --- caption facts --------------------------------------------------------------------------------------


def test_caption_facts_from_mapping_json_and_prose():
    cap = caption(("HI", TOP), style_palette=["#aa0000"], element_palettes=[(["#00FF00"], BOTTOM)])
    facts = caption_facts(json.dumps(cap))
    assert facts == caption_facts(cap) and facts.structured and facts.description == "A poster."
    assert [(t.text, t.bbox, t.index) for t in facts.texts] == [("HI", tuple(TOP), 0)]
    assert facts.style_palette == ("#AA0000",) and facts.element_palettes[0].index == 1
    prose = caption_facts("say 'hello world' and \"bye\" but don't quote it's")
    assert [t.text for t in prose.texts] == ["hello world", "bye"] and not prose.structured


@pytest.mark.parametrize(
    "element, path",
    [
        ({"type": "text", "text": "A", "bbox": [500, 0, 100, 10]}, "elements[0].bbox"),
        ({"type": "obj", "desc": "x", "color_palette": ["red"]}, "elements[0].color_palette"),
    ],
)
def test_bad_caption_fields_are_named(element, path):
    cap = {"high_level_description": "x", "compositional_deconstruction": {"background": "", "elements": [element]}}
    with pytest.raises(CaptionError, match=path.replace("[", r"\[").replace("]", r"\]")):
        caption_facts(cap)


# --- palette --------------------------------------------------------------------------------------------

STRIPES = ["#D62828", "#F4D35E", "#1D3557", "#2A9D8F"]


def stripes(colors, size=(400, 200)):
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    width = size[0] / len(colors)
    for i, color in enumerate(colors):
        draw.rectangle([round(i * width), 0, round((i + 1) * width), size[1]], fill=color)
    return image


def test_palette_matched_is_small_and_missed_is_large():
    palette = get_metric("palette")
    matched = palette.score_detailed(stripes(STRIPES), caption(style_palette=STRIPES))
    assert matched.values["palette_delta_e"] < 1.0 and matched.values["palette_delta_e_elements"] is None
    assert [d["nearest"] for d in matched.details["style"]] == STRIPES
    missed = palette.score(stripes(STRIPES), caption(style_palette=["#FF00FF", "#7FFF00", "#FFA0C0"]))
    assert missed["palette_delta_e"] > 20.0
    assert palette.score(stripes(STRIPES), caption())["palette_delta_e"] is None


def test_element_palette_is_scored_inside_its_box():
    image = stripes(["#D62828", "#1D3557"])  # left half red, right half navy
    left, right = [0, 0, 1000, 500], [0, 500, 1000, 1000]
    here = get_metric("palette").score_detailed(image, caption(element_palettes=[(["#D62828"], left)]))
    elsewhere = get_metric("palette").score(image, caption(element_palettes=[(["#D62828"], right)]))
    assert here.values["palette_delta_e_elements"] < 1.0 < 30.0 < elsewhere["palette_delta_e_elements"]
    assert (
        here.details["elements"][0]["index"] == 0 and here.details["elements"][0]["colors"][0]["nearest"] == "#D62828"
    )


# --- image stats ----------------------------------------------------------------------------------------


def test_image_stats_flags_uniform_and_orders_sharpness_and_colour():
    stats = get_metric("image_stats")
    flat = stats.score(Image.new("RGB", (64, 64), (128, 128, 128)), None)
    assert flat == {"near_uniform": 1.0, "pixel_std": 0.0, "sharpness": 0.0, "colorfulness": 0.0}
    text = poster(("SHARP", TOP))
    blurred = text.resize((64, 64)).resize(text.size, Image.Resampling.BICUBIC)
    assert stats.score(text, None)["sharpness"] > 5 * stats.score(blurred, None)["sharpness"]
    assert stats.score(stripes(STRIPES), None)["colorfulness"] > 50 > stats.score(text, None)["colorfulness"]
    assert stats.score(text, None, {"uniform_std_threshold": 1000.0})["near_uniform"] == 1.0


# --- registry -------------------------------------------------------------------------------------------


def test_registry_names_and_clear_errors(monkeypatch):
    assert {"ocr", "palette", "clip_score", "image_stats"} <= set(metric_names())
    with pytest.raises(MetricError, match="unknown metric\\(s\\) 'orc'.*known metrics: clip_score"):
        check_metrics(["orc", "palette"])
    with pytest.raises(MetricError, match="no option 'margn'; its options: margin"):
        check_metrics(["ocr"], {"ocr": {"margn": 3}})
    with pytest.raises(MetricError, match="'threads': 'two' must be a int"):
        get_metric("ocr").check({"threads": "two"})
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rapidfuzz" else real(name, *a))
    with pytest.raises(MetricError, match=r"needs the package 'rapidfuzz': pip install -e '\.\[metrics\]' \(or pip"):
        check_metrics(["ocr"])


def test_metrics_help_lists_every_metric_with_direction_and_extra(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    text = capsys.readouterr().out
    for name in metric_names():
        metric = get_metric(name)
        (line,) = [x for x in text.splitlines() if x.strip().startswith(name + " ")]
        outside_base = [r for r in metric.module.PACKAGES.values() if _requirement_name(r) not in _base_requirements()]
        assert metric.summary in line and ("needs [metrics]" in line) == bool(outside_base)
        for key, direction in metric.keys.items():
            assert f"{key} ({direction or 'no direction'})" in line


def _requirement_name(requirement: str) -> str:
    import re

    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _base_requirements() -> set[str]:
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    return {_requirement_name(r) for r in project["dependencies"]}


def test_image_stats_sharpness_is_scikit_images_laplacian():
    skimage_filters = pytest.importorskip("skimage.filters")  # in [test]: the oracle for our numpy stencil
    import numpy as np
    from PIL import Image

    from ideogram4.metrics.image_stats import PACKAGES, sharpness

    pixels = np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)
    expected = skimage_filters.laplace(pixels.astype(np.float64), ksize=3).var()
    assert sharpness(Image.fromarray(pixels)) == pytest.approx(expected, rel=1e-12) and PACKAGES == {}


def test_a_new_metric_is_one_file_named_in_the_list(tmp_path, monkeypatch):
    import ideogram4.metrics as package
    from ideogram4.metrics import registry

    (tmp_path / "brightness.py").write_text(
        "from PIL import ImageStat\n"
        "from ideogram4.metrics.registry import MetricResult\n"
        "NAME, VERSION, KEYS, PACKAGES, WEIGHTS, OPTIONS = 'brightness', '1', {'brightness': 'neither'}, {}, 'none', {}\n"
        "def score_detailed(image, facts, options):\n"
        "    return MetricResult({'brightness': ImageStat.Stat(image.convert('L')).mean[0]})\n"
    )
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    registry._registry.cache_clear()
    assert "brightness" not in metric_names()  # a file alone is not a metric: the list names it
    monkeypatch.setattr(registry, "METRIC_MODULES", (*registry.METRIC_MODULES, "brightness"))
    registry._registry.cache_clear()
    try:
        scored = score_image(check_metrics(["brightness", "image_stats"]), Image.new("RGB", (8, 8), "white"), None)
        assert scored.values["brightness"] == 255 and scored.versions == {"brightness": "1", "image_stats": "1"}
    finally:
        monkeypatch.undo()
        registry._registry.cache_clear()
    assert "brightness" not in metric_names()


def test_the_registry_imports_exactly_the_metric_modules():
    """The list is every module of the package that defines NAME (read from the source, not imported),
    and building the registry imports nothing else (no __main__, no test helper)."""
    import ast
    from pathlib import Path

    from ideogram4.metrics import registry

    def defines_name(path: Path) -> bool:
        tree = ast.parse(path.read_text())
        targets = [t for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
        names = [n for t in targets for n in (t.elts if isinstance(t, ast.Tuple) else [t])]
        return any(isinstance(n, ast.Name) and n.id == "NAME" for n in names)

    folder = Path(registry.__file__).parent
    assert set(registry.METRIC_MODULES) == {p.stem for p in folder.glob("*.py") if defines_name(p)}
    assert not (folder / "tiny_clip.py").exists()  # the test helper lives in tests/
    code = (
        "import json, sys; from ideogram4.metrics import metric_names; metric_names(); "
        "print(json.dumps([m for m in sys.modules if m.startswith('ideogram4.metrics.')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    imported = {m.removeprefix("ideogram4.metrics.") for m in json.loads(out)}
    assert imported - {"registry", "caption", "scorer"} == set(registry.METRIC_MODULES)


# --- background scorer ----------------------------------------------------------------------------------


def test_scorer_runs_in_background_and_keeps_errors_per_item():
    bad = caption(("X", TOP))
    bad["compositional_deconstruction"]["elements"][0]["bbox"] = [900, 0, 100, 10]
    with Scorer(["ocr", "image_stats"]) as scorer:
        scorer.submit("good", poster(("SUMMER SALE", TOP)), caption(("SUMMER SALE", TOP)))
        scorer.submit("bad", poster(), bad)
        with pytest.raises(ValueError, match="already submitted"):
            scorer.submit("good", poster(), None)
        results = scorer.results()
    assert list(results) == ["good", "bad"] and scorer.pending == 0
    good, failed = results["good"], results["bad"]
    assert good.values["ocr_exact_match"] == 1.0 and not good.errors and good.versions["ocr"] == "1"
    assert set(failed.errors) == {"ocr"} and failed.values["ocr_ned"] is None  # image_stats still scored
    assert failed.values["near_uniform"] == 1.0 and "bbox" in failed.error_lines()["ocr"]
    with pytest.raises(RuntimeError, match="metric 'ocr' failed on 'bad'"):
        failed.raise_errors()


@pytest.mark.slow
def test_scorer_in_a_worker_process():
    with Scorer(["palette", "image_stats"], process=True) as scorer:
        scorer.submit("stripes", stripes(STRIPES), caption(style_palette=STRIPES))
        scorer.submit("bad", stripes(STRIPES), '{"high_level_description": ')  # JSON that does not parse
        results = scorer.results()
    assert results["stripes"].values["palette_delta_e"] < 1.0 and not results["stripes"].errors
    assert set(results["bad"].errors) == {"palette"} and "does not parse" in results["bad"].error_lines()["palette"]
    assert results["bad"].values["colorfulness"] > 50


# --- CLI ------------------------------------------------------------------------------------------------


def test_cli_prints_one_json_object_per_image(tmp_path, capsys):
    cap = caption(("SUMMER SALE", TOP), style_palette=["#F5F0E6", "#19193C"])
    image = poster(("SUMMER SALE", TOP))
    image.save(tmp_path / "given.png")
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PNG_CAPTION_KEY, json.dumps(caption(("FRESH BREAD", TOP))))  # read when no --caption
    image.save(tmp_path / "embedded.png", pnginfo=info)
    (tmp_path / "caption.json").write_text(json.dumps(cap))

    assert cli_main([str(tmp_path / "given.png"), "--caption", str(tmp_path / "caption.json")]) == 0
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["image"].endswith("given.png") and line["ocr_word_accuracy"] == 1.0
    assert line["palette_delta_e"] < 3.0 and line["palette_delta_e_elements"] is None

    assert cli_main([str(tmp_path / "embedded.png"), "--metrics", "ocr", "--details"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["ocr_exact_match"] == 0.0 and line["details"]["ocr"]["texts"][0]["text"] == "FRESH BREAD"


@pytest.mark.parametrize(
    "args, message",
    [
        (["{img}", "--metrics", "ocr,orc"], "unknown metric(s) 'orc'"),
        (["{img}", "missing.png"], "no such file: missing.png"),
        (["{img}", "--option", "ocr.margin"], "must look like METRIC.NAME=VALUE"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    poster().save(tmp_path / "a.png")
    assert cli_main([a.format(img=tmp_path / "a.png") for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.slow
def test_cli_as_a_module(tmp_path):
    poster(("OPEN", TOP)).save(tmp_path / "a.png")
    (tmp_path / "prompt.txt").write_text('a sign reading "OPEN"')
    out = subprocess.run(
        [sys.executable, "-m", "ideogram4.metrics", str(tmp_path / "a.png"), "--caption", str(tmp_path / "prompt.txt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = json.loads(out)
    assert line["ocr_exact_match"] == 1.0 and line["palette_delta_e"] is None
