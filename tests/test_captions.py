"""`python -m ideogram4.captions` check / format / tokens: every verifier rule found, located and fixable."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ideogram4.captions.__main__ import main
from ideogram4.prompts import count_tokens_fast, serialize_caption

REPO = Path(__file__).resolve().parents[1]
COMP = "compositional_deconstruction"
EL0 = f"{COMP}.elements[0]"

GOOD = {
    "high_level_description": "A cafe sign.",
    "style_description": {
        "aesthetics": "warm",
        "lighting": "soft",
        "photo": "35mm",
        "medium": "photograph",
        "color_palette": ["#AABBCC"],
    },
    COMP: {
        "background": "A brick wall.",
        "elements": [
            {"type": "text", "bbox": [10, 20, 300, 900], "text": "OPEN", "desc": "neon", "color_palette": ["#FF0000"]},
            {"type": "obj", "bbox": [400, 100, 900, 500], "desc": "a bicycle"},
        ],
    },
}


def mutate(fn):
    cap = copy.deepcopy(GOOD)
    fn(cap)
    return cap


def el0(**changes):
    def fn(cap):
        for k, v in changes.items():
            if v is None:
                cap[COMP]["elements"][0].pop(k)
            else:
                cap[COMP]["elements"][0][k] = v

    return mutate(fn)


def style(**changes):
    def fn(cap):
        for k, v in changes.items():
            if v is None:
                cap["style_description"].pop(k)
            else:
                cap["style_description"][k] = v

    return mutate(fn)


# id -> (prompt, JSON path reported, severity): one case per rule of spec G.1 (plus the token limit).
RULES = {
    "no_description": (mutate(lambda c: c.pop("high_level_description")), "high_level_description", "error"),
    "no_composition": (mutate(lambda c: c.pop(COMP)), COMP, "error"),
    "description_not_text": (mutate(lambda c: c.update(high_level_description=5)), "high_level_description", "error"),
    "unknown_top_key": (mutate(lambda c: c.update(mood="happy")), "mood", "warning"),
    "keys_out_of_order": ({COMP: GOOD[COMP], "high_level_description": "x"}, "prompt", "warning"),
    "style_not_object": (mutate(lambda c: c.update(style_description="photo")), "style_description", "error"),
    "style_photo_and_art": (style(art_style="oil"), "style_description", "error"),
    "style_neither": (style(photo=None), "style_description", "error"),
    "style_missing_lighting": (style(lighting=None), "style_description.lighting", "error"),
    "style_value_not_text": (style(medium=["photo"]), "style_description.medium", "error"),
    "style_17_colours": (style(color_palette=["#000000"] * 17), "style_description.color_palette", "error"),
    "no_background": (mutate(lambda c: c[COMP].pop("background")), f"{COMP}.background", "error"),
    "elements_not_list": (mutate(lambda c: c[COMP].update(elements="a cat")), f"{COMP}.elements", "error"),
    "element_not_object": (mutate(lambda c: c[COMP]["elements"].insert(0, "cat")), EL0, "error"),
    "element_type_unknown": (el0(type="shape"), f"{EL0}.type", "error"),
    "element_no_desc": (el0(desc=None), f"{EL0}.desc", "error"),
    "text_element_no_text": (el0(text=None), f"{EL0}.text", "error"),
    "text_element_blank_text": (el0(text="  "), f"{EL0}.text", "error"),
    "text_not_a_string": (el0(text=7), f"{EL0}.text", "error"),
    "bbox_three_values": (el0(bbox=[1, 2, 3]), f"{EL0}.bbox", "error"),
    "bbox_floats": (el0(bbox=[0.1, 0.2, 0.3, 0.4]), f"{EL0}.bbox", "error"),
    "bbox_outside_1000": (el0(bbox=[0, 0, 1001, 500]), f"{EL0}.bbox", "error"),
    "bbox_negative": (el0(bbox=[-5, 0, 100, 500]), f"{EL0}.bbox", "error"),
    "bbox_y_upside_down": (el0(bbox=[500, 0, 100, 900]), f"{EL0}.bbox", "error"),
    "bbox_x_upside_down": (el0(bbox=[0, 900, 100, 20]), f"{EL0}.bbox", "error"),
    "bbox_zero_area": (el0(bbox=[100, 20, 100, 900]), f"{EL0}.bbox", "warning"),
    "colour_lowercase": (el0(color_palette=["#ff0000"]), f"{EL0}.color_palette", "error"),
    "colour_not_hex": (el0(color_palette=["red"]), f"{EL0}.color_palette", "error"),
    "element_6_colours": (el0(color_palette=["#000000"] * 6), f"{EL0}.color_palette", "error"),
    "palette_not_list": (el0(color_palette="#000000"), f"{EL0}.color_palette", "error"),
    "element_unknown_key": (el0(font="serif"), f"{EL0}.font", "warning"),
    "unicode_escape": (json.dumps(mutate(lambda c: c.update(high_level_description="Café"))), "prompt", "warning"),
    "broken_json": ('{"high_level_description": "x",}', "prompt", "error"),
    "empty_prompt": ("   ", "prompt", "error"),
    "too_many_tokens": (" ".join(f"word{i}" for i in range(2100)), "prompt", "error"),
}


def write_jsonl(path: Path, entries: dict) -> Path:
    path.write_text("".join(json.dumps({"id": k, "prompt": v}, ensure_ascii=False) + "\n" for k, v in entries.items()))
    return path


@pytest.fixture(scope="module")
def rules_report(tmp_path_factory):
    f = write_jsonl(
        tmp_path_factory.mktemp("check") / "rules.jsonl", {"clean": GOOD, **{k: v[0] for k, v in RULES.items()}}
    )
    out = subprocess.run(
        [sys.executable, "-m", "ideogram4.captions", "check", str(f)], capture_output=True, text=True, cwd=REPO
    )
    return f, out


@pytest.mark.parametrize("rule", list(RULES))
def test_check_finds_each_rule_with_its_path_and_a_fix(rules_report, rule):
    f, out = rules_report
    _, path, severity = RULES[rule]
    lineno = list(RULES).index(rule) + 2  # line 1 holds the clean caption
    lines = out.stdout.splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(f"{f}:{lineno}: [{rule}] {path}: {severity}: ")]
    assert hits, f"no '{path}: {severity}' finding for {rule}:\n{out.stdout}"
    assert lines[hits[0] + 1].startswith("    fix: "), lines[hits[0] : hits[0] + 2]


def test_check_reports_nothing_for_the_clean_caption_and_exits_1(rules_report):
    f, out = rules_report
    assert "[clean]" not in out.stdout
    assert out.returncode == 1
    assert f"{len(RULES) + 1} prompt(s) in 1 file(s)" in out.stderr


def test_clean_files_exit_0(tmp_path, capsys):
    files = sorted(str(p) for p in (REPO / "conf" / "prompts").glob("*.yaml"))
    caption = tmp_path / "caption.json"
    caption.write_text(json.dumps(GOOD, indent=2))
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps([{"id": "a", "prompt": GOOD}, {"id": "b", "prompt": "a plain prompt"}]))
    assert main(["check", *files, str(caption), str(listing)]) == 0
    assert capsys.readouterr().out == ""


def test_warnings_pass_unless_strict(tmp_path, capsys):
    f = write_jsonl(tmp_path / "w.jsonl", {"order": RULES["keys_out_of_order"][0], "key": RULES["unknown_top_key"][0]})
    assert main(["check", str(f)]) == 0
    assert capsys.readouterr().out.count(": warning: ") == 2
    assert main(["check", "--strict", str(f)]) == 1
    assert capsys.readouterr().out.count(": error: ") == 2


def test_prompt_set_rules_duplicate_and_missing_ids(tmp_path, capsys):
    f = tmp_path / "set.jsonl"
    f.write_text('{"id": "a", "prompt": "x"}\n\n{"id": "a", "prompt": "y"}\n{"prompt": "z"}\n')
    assert main(["check", str(f)]) == 1
    out = capsys.readouterr().out
    assert f"{f}:3: [a] id: error: 'a' is also used at {f}:1" in out
    assert f"{f}:4: [2] id: error: missing" in out


def test_yaml_prompt_set_findings_name_the_value_line(tmp_path, capsys):
    f = tmp_path / "set.yaml"
    f.write_text(
        "name: mine\nitems:\n- id: ok\n  prompt: a cat\n- id: bad\n  prompt:\n    high_level_description: x\n"
        "    compositional_deconstruction:\n      background: y\n      elements:\n"
        "      - {type: obj, bbox: [900, 0, 100, 500], desc: z}\n"
    )
    assert main(["check", str(f)]) == 1
    assert f"{f}:11: [bad] {EL0}.bbox: error: [900, 0, 100, 500] has ymin > ymax" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name,content,where,rc",
    [
        ("bad.json", b'{"a": 1,\n  "b": }', ":2:8: invalid JSON", 1),
        ("bad.jsonl", b'{"id": "a", "prompt": "x"}\n{"id": "b" "prompt": "y"}\n', ":2:12: invalid JSON", 1),
        ("bad.yaml", b"items:\n- id: a\n  prompt: [unclosed\n", ":4:1: invalid YAML", 1),
        ("latin1.jsonl", b'{"id": "a", "prompt": "caf\xe9"}\n', ":1:27: byte 0xE9 is not UTF-8", 1),
        ("list.txt", b"a cat", ": unknown file type '.txt'", 1),
    ],
)
def test_unreadable_input_is_one_line_with_file_line_col(tmp_path, capsys, name, content, where, rc):
    f = tmp_path / name
    f.write_bytes(content)
    assert main(["check", str(f)]) == rc
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(f"{f}{where}"), out


def test_missing_file_or_folder_exits_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.json")]) == 2
    assert main(["check", str(tmp_path)]) == 2
    assert main(["format", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr()
    assert "nope.json: no such file" in err.out and "is a folder" in err.out and "no such file" in err.err


def test_format_prints_exactly_what_the_encoder_reads(tmp_path, capsys):
    shuffled = {COMP: GOOD[COMP], "style_description": GOOD["style_description"], "high_level_description": "Café"}
    f = tmp_path / "c.json"
    f.write_text(json.dumps(shuffled, ensure_ascii=True, indent=4))
    assert main(["format", str(f)]) == 0
    out = capsys.readouterr().out
    assert out == serialize_caption(shuffled) + "\n"
    assert out.startswith('{"high_level_description":"Café","style_description":')
    assert main(["format", str(f), "--pretty"]) == 0
    pretty = capsys.readouterr().out
    assert json.loads(pretty) == json.loads(out) and '\n  "style_description": {' in pretty


def test_format_picks_by_id_and_keeps_a_string_prompt_verbatim(capsys):
    smoke = str(REPO / "conf" / "prompts" / "smoke.yaml")
    assert main(["format", smoke, "--id", "red_cube"]) == 0
    assert capsys.readouterr().out == "A red cube on a white table.\n"
    assert main(["format", smoke]) == 2  # two prompts: --id needed
    assert "pick one with --id (one of: red_cube, sign_hello)" in capsys.readouterr().err
    assert main(["format", smoke, "--id", "nope"]) == 2


def test_tokens_counts_after_the_chat_template_against_the_limit(tmp_path, capsys):
    seed = str(REPO / "conf" / "prompts" / "seed_example.yaml")
    assert main(["tokens", seed]) == 0
    assert capsys.readouterr().out == "f1_verstappen: 1077 tokens (limit 2048, ok)\n"  # practical notes: 1077
    f = write_jsonl(tmp_path / "t.jsonl", {"short": "hello", "long": RULES["too_many_tokens"][0]})
    assert main(["tokens", str(f)]) == 1
    n = count_tokens_fast(RULES["too_many_tokens"][0])
    assert capsys.readouterr().out.splitlines() == [
        f"short: {count_tokens_fast('hello')} tokens (limit 2048, ok)",
        f"long: {n} tokens (limit 2048, over by {n - 2048})",
    ]


def test_tokens_and_check_import_no_torch_or_transformers():
    code = (
        "import sys; from ideogram4.captions.__main__ import main; "
        "main(['tokens', 'conf/prompts/seed_example.yaml']); main(['check', 'conf/prompts/seed_example.yaml']); "
        "print(sorted(m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.splitlines()[-1] == "[]"


def test_format_reads_a_caption_from_stdin():
    shuffled = {COMP: GOOD[COMP], "high_level_description": "x"}
    out = subprocess.run(
        [sys.executable, "-m", "ideogram4.captions", "format", "-"],
        input=json.dumps(shuffled, indent=2),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 0 and out.stdout == serialize_caption(shuffled) + "\n"
