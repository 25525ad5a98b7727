"""Typography: is each caption text readable where the caption put it?

Each text element of a structured caption is read by PP-OCR (rapidocr, bundled ONNX models, never a
download) inside its own bbox grown by `margin` (bbox units, 0..1000), so the right words in the wrong
place score 0. Comparison is case- and whitespace-insensitive (line breaks count as spaces):
    ocr_word_accuracy  caption words found in their own box / all caption words (each word counted as
                       often as the caption repeats it)
    ocr_ned            mean over texts of 1 - normalised Levenshtein distance (caption text vs reading)
    ocr_exact_match    texts read exactly / texts
A plain prompt's quoted strings ("...", '...', “...”), and text elements without a bbox, may appear
anywhere: they are compared with the run of consecutive whole-image lines that matches them best.
"""

from __future__ import annotations

import functools
import statistics
import threading
from collections import Counter
from pathlib import Path

import numpy as np

from .caption import TextTarget, pixel_box
from .registry import MetricError, MetricResult

NAME = "ocr"
VERSION = "1"
KEYS = {"ocr_word_accuracy": "higher", "ocr_ned": "higher", "ocr_exact_match": "higher"}
PACKAGES = {"rapidocr": "rapidocr>=3", "onnxruntime": "onnxruntime>=1.17", "rapidfuzz": "rapidfuzz>=3"}
EXTRA = "metrics"  # the install extra that brings PACKAGES
WEIGHTS = "PP-OCR text detection + recognition ONNX models bundled in the rapidocr wheel"
OPTIONS = {"margin": 20.0, "threads": 1, "min_confidence": 0.5}
DETECT_MAX_SIDE = 1024  # detection input is downscaled to this; never upscaled (small crops stay cheap)

_engine_lock = threading.Lock()


def bundled_models() -> tuple[Path, Path]:
    """The detection and recognition models shipped inside the rapidocr package (paths given explicitly,
    so rapidocr never falls back to downloading its defaults)."""
    import importlib.util

    folder = Path(importlib.util.find_spec("rapidocr").origin).parent / "models"  # located, not imported (cheap)
    det, rec = sorted(folder.glob("*det*.onnx")), sorted(folder.glob("*rec*.onnx"))
    if len(det) != 1 or len(rec) != 1:
        raise MetricError(
            f"metric 'ocr' expects one bundled detection and one recognition model in {folder}, found "
            f"{[p.name for p in det + rec]}; reinstall the wheel: pip install --force-reinstall 'rapidocr>=3'"
        )
    return det[0], rec[0]


def check(options: dict) -> None:
    bundled_models()
    if options["threads"] < 0:
        raise MetricError(f"metric 'ocr' option 'threads': {options['threads']} must be >= 0 (0 = all cores)")
    if options["margin"] < 0:
        raise MetricError(f"metric 'ocr' option 'margin': {options['margin']} must be >= 0 (bbox units, 0..1000)")
    if not 0 <= options["min_confidence"] <= 1:
        raise MetricError(f"metric 'ocr' option 'min_confidence': {options['min_confidence']} must be in 0..1")


@functools.cache
def _engine_for(threads: int):
    from rapidocr import RapidOCR

    det, rec = bundled_models()
    return RapidOCR(
        params={
            "Global.log_level": "error",  # "nothing detected" is an answer here, not a warning
            "Global.use_cls": False,  # generated text is upright; the 180-degree classifier only costs time
            "Det.model_path": str(det),
            "Rec.model_path": str(rec),
            "Det.limit_type": "max",
            "Det.limit_side_len": DETECT_MAX_SIDE,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads or -1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )


def engine(threads: int = 1):
    """The process-wide OCR engine for this thread count, built on first use."""
    with _engine_lock:
        return _engine_for(threads)


def read_lines(image, options: dict) -> list[tuple[str, float]]:
    """(text, confidence) per detected line, in reading order."""
    out = engine(options["threads"])(np.asarray(image), text_score=options["min_confidence"])
    return list(zip(out.txts or (), out.scores or ()))


def normalise(text: str) -> str:
    return " ".join(text.casefold().split())


def similarity(expected: str, read: str) -> float:
    from rapidfuzz.distance import Levenshtein

    return 1.0 - Levenshtein.normalized_distance(normalise(expected), normalise(read))


def _best_run(expected: str, lines: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The consecutive lines whose joined text is closest to `expected` (for texts without a place)."""
    runs = [lines[i:j] for i in range(len(lines)) for j in range(i + 1, len(lines) + 1)]
    return max(runs, key=lambda run: similarity(expected, " ".join(t for t, _ in run)), default=[])


def _judge(target: TextTarget, lines: list[tuple[str, float]], all_words: list[str] | None) -> dict:
    read = " ".join(t for t, _ in lines)
    expected_words = normalise(target.text).split()
    pool = Counter(all_words if all_words is not None else normalise(read).split())
    return {
        "index": target.index,
        "text": target.text,
        "bbox": list(target.bbox) if target.bbox else None,
        "read": read,
        "confidence": round(statistics.fmean(c for _, c in lines), 4) if lines else None,
        "words": len(expected_words),
        "words_found": sum((Counter(expected_words) & pool).values()),
        "ned": similarity(target.text, read),
        "exact": normalise(target.text) == normalise(read),
    }


def score_detailed(image, facts, options: dict) -> MetricResult:
    if not facts.texts:
        return MetricResult(values=dict.fromkeys(KEYS), details={"texts": []})
    whole: list[tuple[str, float]] | None = None
    judged = []
    for target in facts.texts:
        if target.bbox is None:
            whole = read_lines(image, options) if whole is None else whole
            words = normalise(" ".join(t for t, _ in whole)).split()
            judged.append(_judge(target, _best_run(target.text, whole), words))
        else:
            crop = image.crop(pixel_box(target.bbox, image.size, options["margin"]))
            judged.append(_judge(target, read_lines(crop, options), None))
    values = {
        "ocr_word_accuracy": sum(j["words_found"] for j in judged) / sum(j["words"] for j in judged),
        "ocr_ned": statistics.fmean(j["ned"] for j in judged),
        "ocr_exact_match": statistics.fmean(float(j["exact"]) for j in judged),
    }
    return MetricResult(values=values, details={"texts": judged})
