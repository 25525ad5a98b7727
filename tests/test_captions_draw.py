"""A caption's layout drawn: the preview sheet, boxes over an image, W&B bounding boxes."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ideogram4.captions.__main__ import main
from ideogram4.captions.draw import draw_layout, render_preview, wandb_boxes
from ideogram4.captions.prompt_files import load_entries

REPO = Path(__file__).resolve().parents[1]
SEED_SET = REPO / "conf" / "prompts" / "seed_example.yaml"  # the seed page's Formula 1 caption
BLUE, RED = (30, 144, 255), (255, 59, 48)  # documented box colours without a palette: obj, text


def f1_caption() -> dict:
    (entry,) = load_entries(str(SEED_SET))
    return entry.prompt


def stroke_pixels(bbox, width, height, stroke):
    """Pixel coordinates along the middle of a box's outline (PIL draws the width inwards)."""
    ymin, xmin, ymax, xmax = bbox
    x0, y0 = round(xmin * width / 1000), round(ymin * height / 1000)
    x1, y1 = round(xmax * width / 1000), round(ymax * height / 1000)
    m = stroke // 2
    xs, ys = range(x0 + m, x1 - m + 1), range(y0 + m, y1 - m + 1)
    return [(x, y0 + m) for x in xs] + [(x, y1 - m) for x in xs] + [(x0 + m, y) for y in ys] + [(x1 - m, y) for y in ys]


def colour_share(pixels: np.ndarray, points, colour) -> float:
    points = [(x, y) for x, y in points if x < pixels.shape[1] and y < pixels.shape[0]]
    return float(np.mean([tuple(pixels[y, x]) == colour for x, y in points]))


def test_preview_of_the_f1_caption_draws_every_box_in_its_colour(tmp_path, capsys):
    out = tmp_path / "f1.png"
    assert main(["preview", str(SEED_SET), "--id", "f1_verstappen", "--size", "1024x768", "-o", str(out)]) == 0
    sheet = Image.open(out)
    assert sheet.mode == "RGB" and sheet.width == 1024 and sheet.height > 768  # the text panel sits below
    pixels = np.asarray(sheet)
    elements = f1_caption()["compositional_deconstruction"]["elements"]
    assert len(elements) == 17
    shares = []
    for el in elements:
        colour = BLUE if el["type"] == "obj" else RED
        shares.append(colour_share(pixels, stroke_pixels(el["bbox"], 1024, 768, stroke=3), colour))
    # Boxes cross each other and labels sit on some edges, but most of every outline shows its colour.
    assert min(shares) > 0.5 and np.mean(shares) > 0.8, shares
    # Inside the big driver box, away from labels and other boxes: the faint blue tint, not the canvas.
    tint = pixels[round(0.3 * 768), round(0.3 * 1024)]
    assert tint[2] > tint[0] + 20


def test_preview_uses_the_first_palette_colour(tmp_path):
    caption = {
        "high_level_description": "Two boxes.",
        "compositional_deconstruction": {
            "background": "white",
            "elements": [
                {"type": "obj", "bbox": [100, 100, 500, 400], "desc": "a", "color_palette": ["#00AA00", "#123456"]},
                {"type": "text", "bbox": [600, 500, 900, 900], "text": "HI", "desc": "b"},
            ],
        },
    }
    pixels = np.asarray(render_preview(caption, 640, 480))
    assert colour_share(pixels, stroke_pixels([100, 100, 500, 400], 640, 480, 2), (0, 170, 0)) > 0.9
    assert colour_share(pixels, stroke_pixels([600, 500, 900, 900], 640, 480, 2), RED) > 0.9


@pytest.mark.slow
def test_preview_labels_are_readable(tmp_path):
    rapidocr = pytest.importorskip("rapidocr")
    sheet = render_preview(f1_caption(), 1024, 768)
    read = " ".join(rapidocr.RapidOCR()(np.asarray(sheet.crop((0, 0, 1024, 768)))).txts or ())
    for label in ('text #14: "Player 0.0"', 'text #8: "RAUCH"', 'text #3: "F1"', "obj #1: Max Verstappen"):
        assert label in read, (label, read)


def test_draw_layout_over_an_image_keeps_it_and_its_size():
    image = Image.new("RGB", (800, 400), (90, 90, 90))
    caption = f1_caption()
    out = draw_layout(image, caption)
    assert out.size == image.size and image.getpixel((0, 0)) == (90, 90, 90)  # the input is not changed
    pixels = np.asarray(out)
    el = caption["compositional_deconstruction"]["elements"][3]  # text "F1", bottom-left
    assert colour_share(pixels, stroke_pixels(el["bbox"], 800, 400, stroke=2), RED) > 0.8
    assert draw_layout(image, "a plain prompt has no boxes").tobytes() == image.tobytes()


def test_wandb_boxes_in_pixels_with_one_class_per_type():
    caption = {
        "high_level_description": "x",
        "compositional_deconstruction": {
            "background": "y",
            "elements": [
                {"type": "text", "bbox": [100, 200, 300, 400], "text": "SALE", "desc": "d"},
                {"type": "obj", "desc": "no box"},
                {"type": "obj", "bbox": [0, 0, 1000, 1000], "desc": "everything"},
            ],
        },
    }
    boxes = wandb_boxes(caption, 1000, 500)
    data = boxes["layout"]["box_data"]
    assert data[0]["position"] == {"minX": 200, "maxX": 400, "minY": 50, "maxY": 150}
    assert data[0]["domain"] == "pixel" and data[0]["box_caption"] == 'text #0: "SALE"'
    assert [d["class_id"] for d in data] == [2, 1] and boxes["layout"]["class_labels"] == {1: "obj", 2: "text"}
    assert wandb_boxes("a plain prompt", 64, 64) == {}

    import wandb

    wandb.Image(Image.new("RGB", (1000, 500)), boxes=boxes)  # W&B validates box data here...
    with pytest.raises(TypeError):  # ... and rejects a malformed box
        wandb.Image(Image.new("RGB", (1000, 500)), boxes={"layout": {"box_data": [{"position": {"minX": 0}}]}})


def test_preview_over_an_existing_image(tmp_path, capsys):
    picture = tmp_path / "made.png"
    Image.new("RGB", (512, 256), (10, 10, 10)).save(picture)
    out = tmp_path / "overlay.png"
    assert main(["draw", str(SEED_SET), "--image", str(picture), "-o", str(out)]) == 0
    assert Image.open(out).size == (512, 256)
    with pytest.raises(SystemExit) as e:
        main(["preview", str(SEED_SET), "--size", "12x9000", "-o", str(out)])
    assert e.value.code == 2
    assert "between 16 and 8192" in capsys.readouterr().err
