"""Synthetic sweep folders for the report and grid tests: real PNGs, manifest lines shaped like the
runner's (caption with boxes, metrics, OCR readings), Hydra's overrides and multirun.yaml."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from ideogram4.experiment.run import outputs as om

PROMPTS = ("bakery_sign", "poster_headline")
CAPTION = json.dumps(
    {
        "high_level_description": "A sign",
        "compositional_deconstruction": {
            "background": "wood",
            "elements": [
                {"type": "text", "bbox": [100, 200, 300, 800], "text": "OPEN", "desc": "gold letters"},
                {"type": "obj", "bbox": [500, 100, 900, 400], "desc": "a loaf"},
            ],
        },
    }
)


def score(cfg: float, steps: int, prompt: int, seed: int) -> float:
    return round(0.05 * cfg + 0.01 * steps + 0.1 * prompt + 0.02 * seed, 6)


def write_sweep(root: Path, cfgs=(3, 7), steps=(12, 20), seeds=(0, 1), size: int = 32, task=None) -> Path:
    """One job per cfg x steps (each job: every prompt x seed), as `cfg=3,7 sampler.steps=12,20` makes."""
    sweep = root / "sweep"
    rng = np.random.default_rng(0)
    num = 0
    for cfg in cfgs:
        for step in steps:
            overrides = ["model=tiny", f"cfg={cfg}", f"sampler.steps={step}"]
            write_job(sweep, num, overrides, cfg, step, seeds, size, rng)
            num += 1
    task = task or ["model=tiny", f"cfg={','.join(map(str, cfgs))}", f"sampler.steps={','.join(map(str, steps))}"]
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": task}}}))
    return sweep


def write_job(sweep: Path, num: int, overrides: list[str], cfg, step, seeds, size: int, rng) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    for p, prompt in enumerate(PROMPTS):
        for seed in seeds:
            rel = f"images/{prompt}__seed{seed}.png"
            pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            om.save_png_atomic(Image.fromarray(pixels), job / rel, {})
            value = score(float(cfg), step, p, seed)
            om.append_manifest(job, record(rel, prompt, seed, num, overrides, value))
    return job


def record(rel: str, prompt: str, seed: int, num: int, overrides: list[str], value: float) -> dict:
    reading = {"index": 0, "text": "OPEN", "read": "OPFN", "words": 1, "words_found": 0, "exact": False}
    return {
        "image": rel,
        "prompt_id": prompt,
        "seed": seed,
        "caption": CAPTION,
        "settings": {"height": 32, "width": 32, "steps": 2},
        "settings_hash": f"h{num}",
        "sampler": "turbo_12",
        "config": {"model": {"name": "tiny"}, "sampler": {"name": "turbo_12"}, "prompts": {"name": "typography"}},
        "job": {"num": num, "overrides": overrides},
        "versions": {"torch": "2.13.0"},
        "metrics": {"ocr_word_accuracy": value, "pixel_std": 40.0 + value},
        "metric_details": {"ocr": {"texts": [reading]}},
    }


class Links(HTMLParser):
    """Every href/src of a page, and every element's attributes by tag (a small DOM reader for tests)."""

    def __init__(self, text: str):
        super().__init__()
        self.links: list[str] = []
        self.elements: list[tuple[str, dict, list[str]]] = []  # (tag, attrs, text pieces inside it)
        self.parents: list[list[int]] = []  # per element: the elements it is inside
        self._open: list[int] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ("href", "src") if attrs.get(k)]
        self.elements.append((tag, attrs, []))
        self.parents.append(list(self._open))
        if tag not in ("img", "input", "meta", "link", "br", "circle", "line", "polyline"):
            self._open.append(len(self.elements) - 1)

    def handle_endtag(self, tag):
        while self._open:
            i = self._open.pop()
            if self.elements[i][0] == tag:
                break

    def handle_data(self, data):
        for i in self._open:
            self.elements[i][2].append(data)

    def find(self, tag: str | None = None, inside: int | None = None, **attrs) -> list[tuple[dict, str]]:
        """(attrs, text) of the elements with this tag whose attributes contain these (cls: one of its
        class words), inside the element numbered `inside` (see `index`) if given."""
        out = []
        for i, (t, a, text) in enumerate(self.elements):
            if (tag and t != tag) or (inside is not None and inside not in self.parents[i]):
                continue
            if all((v in (a.get("class") or "").split()) if k == "cls" else a.get(k) == v for k, v in attrs.items()):
                out.append((a, "".join(text).strip()))
        return out

    def index(self, tag: str, **attrs) -> list[int]:
        """The numbers of the elements `find` would return (to search inside them)."""
        found = [id(a) for a, _ in self.find(tag, **attrs)]
        return [i for i, (_, a, _) in enumerate(self.elements) if id(a) in found]
