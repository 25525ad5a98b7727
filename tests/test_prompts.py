"""Caption schema (spec G.1), serialisation and the Qwen3-VL chat template."""

import pytest

from ideogram4.prompts import (
    QWEN3_VL_CHAT_TEMPLATE,
    bundled_tokenizer_dir,
    chat_text,
    count_tokens,
    load_tokenizer,
    serialize_caption,
    validate_caption,
)

GOOD = {
    "high_level_description": "A cafe sign.",
    "style_description": {
        "aesthetics": "warm",
        "lighting": "soft",
        "photo": "35mm",
        "medium": "photograph",
        "color_palette": ["#AABBCC"],
    },
    "compositional_deconstruction": {
        "background": "A brick wall.",
        "elements": [
            {
                "type": "text",
                "bbox": [10, 20, 300, 900],
                "text": "OPEN",
                "desc": "neon letters",
                "color_palette": ["#FF0000"],
            }
        ],
    },
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(bundled_tokenizer_dir())


def test_good_caption_has_no_issues():
    assert validate_caption(GOOD) == []
    assert validate_caption(serialize_caption(GOOD)) == []
    assert validate_caption("a plain sentence is fine") == []


def issue_paths(caption):
    return [i.path for i in validate_caption(caption)]


def test_schema_violations_are_named_by_path():
    import copy

    bad = copy.deepcopy(GOOD)
    bad["style_description"]["art_style"] = "also art"  # both photo and art_style
    bad["compositional_deconstruction"]["elements"][0]["bbox"] = [500, 0, 100, 10]  # ymin > ymax
    bad["compositional_deconstruction"]["elements"][0]["color_palette"] = ["#ff0000"]  # lowercase
    bad["extra"] = 1
    paths = issue_paths(bad)
    assert "style_description" in paths
    assert "compositional_deconstruction.elements[0].bbox" in paths
    assert "compositional_deconstruction.elements[0].color_palette" in paths
    assert "extra" in paths


@pytest.mark.parametrize("bbox", [[0, 0, 1001, 5], [0.5, 0, 1, 1], [1, 2, 3]])
def test_bbox_must_be_four_ints_in_0_1000(bbox):
    cap = {
        **GOOD,
        "compositional_deconstruction": {"background": "b", "elements": [{"type": "obj", "bbox": bbox, "desc": "d"}]},
    }
    assert issue_paths(cap) == ["compositional_deconstruction.elements[0].bbox"]


def test_key_order_and_palette_size():
    cap = {
        "compositional_deconstruction": GOOD["compositional_deconstruction"],
        "high_level_description": "x",
        "style_description": {**GOOD["style_description"], "color_palette": ["#000000"] * 17},
    }
    messages = [str(i) for i in validate_caption(cap)]
    assert any("out of order" in m for m in messages)
    assert any("17 colours; at most 16" in m for m in messages)


def test_broken_json_reports_line_and_column():
    (issue,) = validate_caption('{\n  "high_level_description": "x",\n  oops\n}')
    assert "line 3" in issue.message and "column" in issue.message


def test_serialisation_is_compact_utf8_in_official_order():
    shuffled = {"compositional_deconstruction": {"elements": [], "background": "café"}, "high_level_description": "ü"}
    assert (
        serialize_caption(shuffled)
        == '{"high_level_description":"ü","compositional_deconstruction":{"background":"café","elements":[]}}'
    )
    assert serialize_caption("  verbatim  ") == "  verbatim  "


def test_chat_template_renders_the_qwen3_vl_user_turn(tokenizer):
    assert tokenizer.chat_template == QWEN3_VL_CHAT_TEMPLATE
    assert chat_text(tokenizer, "hello") == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(chat_text(tokenizer, "hello"), add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert count_tokens(tokenizer, "hello") == len(ids)
