"""What one image's report page shows: the caption, its boxes with what OCR read in each, metrics,
settings, provenance and the command that makes it again. Plain data for the templates."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from ideogram4.captions.draw import element_label
from ideogram4.captions.schema import caption_elements, valid_bbox

from ..present import metric_label, round_value

BBOX_SCALE = 1000  # caption boxes are [ymin, xmin, ymax, xmax] on a 0..1000 grid (spec G.1)
PROVENANCE_KEYS = ("versions", "git", "gpu", "determinism", "created_at", "settings_hash", "timings", "batch_size")


def page_id(job_num: int, image: str) -> str:
    return f"{job_num}__{Path(image).stem}"


def relative(path: Path, start: Path) -> str:
    """A link from `start` to `path` that survives moving the sweep folder (forward slashes)."""
    return Path(os.path.relpath(path, start)).as_posix()


def reproduce_command(image: Path) -> str:
    return shlex.join(["python", "-m", "ideogram4.experiment.reproduce", str(image.resolve())])


def overlays(caption: str, details: dict) -> list[dict]:
    """One box per caption element with a bbox, in percent of the image, with what OCR read inside it."""
    readings = {t.get("index"): t for t in ((details or {}).get("ocr") or {}).get("texts") or []}
    out = []
    for i, element in enumerate(caption_elements(caption)):
        if not valid_bbox(element.get("bbox")):
            continue
        ymin, xmin, ymax, xmax = (100.0 * v / BBOX_SCALE for v in element["bbox"])
        reading = readings.get(i)
        read = None
        if reading is not None:
            found = f"{reading.get('words_found', 0)}/{reading.get('words', 0)} words"
            read = {"text": reading.get("read") or "", "found": found, "exact": bool(reading.get("exact"))}
        kind = "text" if element.get("type") == "text" else "obj"
        out.append(
            {
                "label": element_label(element, i),
                "kind": kind,
                "read": read,
                "style": f"left:{xmin:.2f}%;top:{ymin:.2f}%;width:{xmax - xmin:.2f}%;height:{ymax - ymin:.2f}%",
            }
        )
    return out


def caption_text(caption: str) -> str:
    """A structured caption pretty-printed; a plain prompt as written."""
    try:
        return json.dumps(json.loads(caption), indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(caption)


def metric_rows(record: dict) -> list[dict]:
    out = []
    for name, value in (record.get("metrics") or {}).items():
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        out.append(
            {
                "name": metric_label(name, arrow=True),
                "raw": json.dumps(value),
                "text": round_value(float(number)) if number is not None else str(value),
            }
        )
    return out


def setting_rows(record: dict, coords: dict[str, str]) -> list[tuple[str, str]]:
    job = record.get("job") or {}
    rows = [("prompt_id", str(record.get("prompt_id"))), ("seed", str(record.get("seed")))]
    rows += [(k, v) for k, v in coords.items() if k not in ("prompt", "seed", "trial")]
    rows += [("sampler", str(record.get("sampler"))), ("model", str((record.get("model") or {}).get("name")))]
    rows += [(k, json.dumps(v)) for k, v in (record.get("settings") or {}).items()]
    rows.append(("job overrides", " ".join(job.get("overrides") or [])))
    return rows


def provenance_rows(record: dict) -> list[tuple[str, str]]:
    rows = [(k, json.dumps(record[k], ensure_ascii=False)) for k in PROVENANCE_KEYS if k in record]
    weights = record.get("weights") or {}
    rows.append(("weight fingerprints", json.dumps(weights.get("fingerprints"))))
    rows.append(("weights source", str(weights.get("source"))))
    return rows


def image_page(entry: dict, report_dir: Path, sweep_dir: Path, scores: list[str]) -> dict:
    """Everything the grid cell and the image's own page show."""
    record, path = entry["record"], Path(entry["path"])
    pid = page_id(entry["job_num"], record["image"])
    layout_png = path.with_name(f"{path.stem}__layout.png")
    metrics = record.get("metrics") or {}
    return {
        "id": pid,
        "title": f"{record.get('prompt_id')} \u00b7 seed {record.get('seed')}",
        "image": relative(path, report_dir / "images"),
        "image_from_index": relative(path, report_dir),
        "layout_png": relative(layout_png, report_dir / "images") if layout_png.is_file() else None,
        "job": relative(path.parent.parent, sweep_dir),
        "coords": entry["coords"],
        "flagged": bool((record.get("flags") or {}).get("near_uniform")),
        "scores": [(m, round_value(metrics[m]) if isinstance(metrics.get(m), (int, float)) else "-") for m in scores],
        "caption": caption_text(record.get("caption") or ""),
        "overlays": overlays(record.get("caption") or "", record.get("metric_details") or {}),
        "metrics": metric_rows(record),
        "settings": setting_rows(record, entry["coords"]),
        "provenance": provenance_rows(record),
        "reproduce": reproduce_command(path),
    }
