"""One prompt-file reader: `captions check` and `run.py prompts.file=...` read a file the same way.

The expected line of each finding is found in the file's text (the line holding the offending
value), not taken from the reader under test.
"""

from __future__ import annotations

import json
import re

import pytest
from runner_helpers import TINY, run_cli

from ideogram4.captions.__main__ import main as captions_main
from ideogram4.captions.prompt_files import load_entries

CAPTION = {
    "high_level_description": "A poster.",
    "style_description": {
        "aesthetics": "bold",
        "lighting": "flat",
        "medium": "print",
        "art_style": "swiss",
        "color_palette": ["#ff0000"],  # lowercase: error
    },
    "compositional_deconstruction": {
        "background": "White paper.",
        "elements": [
            {"type": "obj", "bbox": [100, 100, 300, 300], "desc": "a square"},
            {"type": "obj", "bbox": [900, 0, 100, 500], "desc": "upside down"},  # ymin > ymax: error
        ],
    },
    "mood": "calm",  # unknown key: warning
}
FINDING = re.compile(
    r"(?P<where>\S+:\d+): \[(?P<id>[^\]]+)\] (?P<path>\S+): (?P<severity>error|warning): (?P<msg>.+?)(?=\. Fix: |$)",
    re.M,
)


def _findings(text: str) -> set[tuple]:
    return {m.group("where", "id", "path", "severity", "msg") for m in FINDING.finditer(text)}


def _line_holding(path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def _files(tmp_path):
    pretty = tmp_path / "poster.json"  # one caption, indented over many lines
    pretty.write_text(json.dumps(CAPTION, indent=2))
    yaml_set = tmp_path / "set.yaml"
    yaml_set.write_text(
        "items:\n- id: fine\n  prompt: a cat\n- id: poster\n  prompt:\n    high_level_description: x\n"
        "    compositional_deconstruction:\n      background: y\n      elements:\n"
        "      - {type: obj, bbox: [900, 0, 100, 500], desc: z}\n    mood: calm\n"
    )
    return pretty, yaml_set


def test_findings_sit_at_the_line_of_their_value(tmp_path, capsys):
    pretty, yaml_set = _files(tmp_path)
    assert captions_main(["check", str(pretty), str(yaml_set)]) == 1
    found = _findings(capsys.readouterr().out)
    lines = {(w, path, sev) for w, _, path, sev, _ in found}
    # json.dumps(indent=2) puts each number on its own line: the bbox starts on the line before its 900
    bbox = "compositional_deconstruction.elements[1].bbox"
    assert (f"{pretty}:{_line_holding(pretty, '900,') - 1}", bbox, "error") in lines
    palette = _line_holding(pretty, '"color_palette"')
    assert (f"{pretty}:{palette}", "style_description.color_palette", "error") in lines
    mood = _line_holding(pretty, '"mood"')
    assert (f"{pretty}:{mood}", "mood", "warning") in lines
    bbox = "compositional_deconstruction.elements[0].bbox"
    assert (f"{yaml_set}:{_line_holding(yaml_set, '900, 0')}", bbox, "error") in lines
    assert (f"{yaml_set}:{_line_holding(yaml_set, 'mood')}", "mood", "warning") in lines
    ids = {(w.rsplit(":", 1)[0], i) for w, i, *_ in found}
    assert ids == {(str(pretty), "poster"), (str(yaml_set), "poster")}  # one caption per file: its stem


def test_same_findings_from_captions_check_and_run_py_strict(tmp_path, runner_env, capsys):
    for file in _files(tmp_path):
        assert captions_main(["check", str(file)]) == 1
        from_check = _findings(capsys.readouterr().out)
        res = run_cli(
            [*TINY, f"prompts.file={file}", "prompts.strict=true", f"hydra.run.dir={tmp_path / 'run'}"], runner_env
        )
        text = res.stdout + res.stderr
        assert res.returncode == 2 and "Traceback" not in text, text[-2000:]
        assert from_check and _findings(text) == from_check, text[-3000:]
        assert {f[3] for f in from_check} == {"error", "warning"}


def test_one_reader_for_both_tools():
    import ideogram4.captions.__main__ as check_cli
    import ideogram4.captions.prompt_files as one_home
    import ideogram4.experiment.config.prompt_plan as runner_prompts

    assert check_cli.load_entries is one_home.load_entries is runner_prompts.load_entries
    assert check_cli.file_findings is one_home.file_findings is runner_prompts.file_findings


@pytest.mark.parametrize("name, text", [("list.json", '["a cat", "a dog"]'), ("set.jsonl", '"a cat"\n"a dog"\n')])
def test_entries_without_ids_take_their_index(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    assert [(e.id, e.has_id) for e in load_entries(str(f))] == [("0", False), ("1", False)]
