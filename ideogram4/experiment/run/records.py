"""One manifest record per image: the JSON line, the PNG text chunks and the W&B table row.

The record type owns all three views so they cannot disagree: the PNG carries the same settings and
settings hash as the manifest line that names it.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ideogram4.spec import (
    PNG_CAPTION_KEY,
    PNG_CONFIG_KEY,
    PNG_PARAMETERS_KEY,
    PNG_PROVENANCE_KEY,
    PNG_SETTINGS_KEY,
)

from .provenance import png_provenance

SCHEMA_VERSION = 2

# the subset of a record embedded in the PNG (the full record is the manifest line)
PNG_SETTINGS_FIELDS = (
    "prompt_id",
    "seed",
    "rng_device",
    "settings",
    "settings_hash",
    "sampler",
    "model",
    "flags",
    "metrics",
    "metric_versions",
    "loras",
)

TABLE_COLUMNS = [
    "image",
    "prompt_id",
    "seed",
    "cfg",
    "steps",
    "sampler",
    "width",
    "height",
    "guidance_schedule",
    "mu",
    "std",
    "final_step",
    "near_uniform",
    "settings_hash",
    "caption",
    "loras",
]


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class ImageRecord:
    image: str  # path relative to the job folder
    prompt_id: str
    caption: str  # exactly what the text encoder read
    seed: int
    rng_device: str
    settings: dict  # generation settings (resume key together with the weights identity)
    settings_hash: str
    sampler: str = ""  # preset name, or "<name>+custom"
    caption_issues: list[str] = field(default_factory=list)
    upsampled_from: str | None = None  # the plain prompt the caption was upsampled from
    loras: list[dict] = field(default_factory=list)  # name, path, sha256, scale, target, layout, rank, merged
    model: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    batch_size: int = 1
    cost: dict = field(default_factory=dict)  # sampling_s, device_s_per_image, passes, flops (experiment.cost)
    peak_memory_bytes: int | None = None
    text_cache_hit: bool | None = None
    text_encoder_calls: int | None = None
    pipeline: dict = field(default_factory=dict)
    flags: dict = field(default_factory=dict)
    job: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    git: dict = field(default_factory=dict)
    gpu: str | None = None
    determinism: dict = field(default_factory=dict)  # ideogram4.determinism.determinism_state()
    created_at: str = field(default_factory=now_utc)
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # metric value name -> number or None
    metric_versions: dict = field(default_factory=dict)
    metric_details: dict = field(default_factory=dict)  # e.g. OCR reading per caption text element
    metric_errors: dict = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: dict) -> ImageRecord:
        """A record read back from a manifest (unknown keys ignored, missing ones defaulted)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    def png_text(self, model_name: str, config_json: str) -> dict[str, str]:
        data = self.to_dict()
        blob = {k: data[k] for k in PNG_SETTINGS_FIELDS}
        return {
            PNG_PARAMETERS_KEY: a1111_parameters(self, model_name),
            PNG_CAPTION_KEY: self.caption,
            PNG_SETTINGS_KEY: json.dumps(blob, ensure_ascii=False, allow_nan=False, default=str),
            PNG_CONFIG_KEY: config_json,
            PNG_PROVENANCE_KEY: json.dumps(png_provenance(data), ensure_ascii=False, allow_nan=False, default=str),
        }

    def table_row(self, image: Any, metric_keys: list[str] = ()) -> list[Any]:
        s = self.settings
        return [
            image,
            self.prompt_id,
            self.seed,
            s.get("cfg"),
            s.get("steps"),
            self.sampler,
            s.get("width"),
            s.get("height"),
            schedule_text(s.get("guidance_schedule") or []),
            s.get("mu"),
            s.get("std"),
            s.get("final_step"),
            self.flags.get("near_uniform"),
            self.settings_hash,
            self.caption,
            ", ".join(f"{x['name']}:{x['scale']}" for x in self.loras),
        ] + [self.metrics.get(k) for k in metric_keys]

    def with_scores(self, scored) -> ImageRecord:
        """The same record with a metrics.Scored result filled in."""
        self.metrics = {k: _json_number(v) for k, v in scored.values.items()}
        self.metric_versions = dict(scored.versions)
        self.metric_details = scored.details
        self.metric_errors = scored.error_lines()
        return self


def _json_number(v: Any) -> Any:
    """Strict JSON has no NaN/inf: a metric that produced one has no value."""
    return None if isinstance(v, float) and v != v or v in (float("inf"), float("-inf")) else v


def schedule_text(schedule: list[float]) -> str:
    """Run-length form: [7,7,7,3] -> '3x7.0+1x3.0'."""
    parts: list[str] = []
    prev, n = None, 0
    for w in schedule:
        if w == prev:
            n += 1
            continue
        if prev is not None:
            parts.append(f"{n}x{prev}")
        prev, n = w, 1
    if prev is not None:
        parts.append(f"{n}x{prev}")
    return "+".join(parts)


def a1111_parameters(record: ImageRecord, model_name: str) -> str:
    """The `parameters` text chunk in the Automatic1111 layout that image viewers read."""
    s = record.settings
    fields_ = [
        ("Steps", s["steps"]),
        ("Sampler", f"Euler flow ({record.sampler})"),
        ("CFG scale", s["cfg"]),
        ("Guidance schedule", schedule_text(s["guidance_schedule"])),
        ("Seed", record.seed),
        ("Size", f"{s['width']}x{s['height']}"),
        ("Model", model_name),
        ("Mu", s["mu"]),
        ("Std", s["std"]),
        ("Final step", s["final_step"]),
        ("RNG", s["rand_device"]),
        ("Settings hash", record.settings_hash),
    ]
    if s.get("input_image_sha256"):
        fields_.append(("Denoising strength", s["denoising_strength"]))
    if edit := s.get("edit"):  # which edit, and the first 12 hex of its file's sha256 (as A1111's hashes)
        files = [f"{k[: -len('_sha256')]} {v[:12]}" for k, v in edit.items() if k.endswith("_sha256")]
        fields_.append(("Edit", '"' + ", ".join([edit["kind"], *files]) + '"'))
    if record.loras:  # A1111's extra-networks field: name + the first 12 hex of the tensor-data hash
        hashes = ", ".join(f"{x['name']}: {(x.get('addnet_hash') or x['sha256'])[:12]}" for x in record.loras)
        fields_.append(("Lora hashes", f'"{hashes}"'))
    tail = ", ".join(f"{k}: {v}" for k, v in fields_)
    neg = s.get("negative_prompt") or ""
    return f"{record.caption}\nNegative prompt: {neg}\n{tail}" if neg else f"{record.caption}\n{tail}"
