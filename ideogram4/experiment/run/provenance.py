"""What an image was made with, beyond its settings: software, code, hardware, weights, numerics.

Every PNG carries this as the ``ideogram4:provenance`` text chunk (small: no paths of weight files,
no timings). :func:`differences` compares what a PNG recorded with what would run now and says each
difference as one line ("torch 2.13.0 then, 2.14.0 now"), so a reproduction that does not match has a
named cause. Import-light (no torch): the runner records it, the reproducer compares it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROVENANCE_VERSION = 1
# describe() keys that say where or when the weights were read, not what they are
_WEIGHTS_LOCATION = ("paths", "load_s", "source", "revision", "device", "dtype", "components")
# model keys that name a place: a different place holding the same files (fingerprints) is no difference
_MODEL_LOCATION = ("path", "source", "resolved_source", "cache_dir")
# where an input file was: its sha256 (recorded beside it) says whether the content differs
_FILE_LOCATIONS = ("settings.input_image", "settings.edit.mask_image", "settings.edit.strength_map")
# a LoRA entry's keys that say where its file was found: the sha256 says whether it is the same file
_LORA_LOCATION = ("source", "weight_name", "revision")
_NOT_RECORDED = object()


@functools.cache
def code_digest() -> str:
    """sha256 (16 hex) of the ideogram4 package's Python sources: the code that ran, committed or not."""
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def weights_provenance(describe: dict) -> dict:
    """What identifies the loaded weights and their compute path (fingerprints, format, fp8 paths, LoRAs)."""
    return {k: v for k, v in describe.items() if k not in _WEIGHTS_LOCATION}


def png_provenance(record: dict) -> dict:
    """The ``ideogram4:provenance`` chunk of an image record (ImageRecord.to_dict())."""
    settings = record.get("settings") or {}
    sha = settings.get("input_image_sha256")
    return {
        "version": PROVENANCE_VERSION,
        "versions": dict(record.get("versions") or {}, python=platform.python_version()),
        "git": record.get("git") or {},
        "code": code_digest(),
        "gpu": record.get("gpu"),
        "weights": weights_provenance(record.get("weights") or {}),
        "determinism": record.get("determinism") or {},
        "batch_size": record.get("batch_size", 1),
        "input_image": {"path": settings.get("input_image"), "sha256": sha} if sha else None,
        "job_overrides": (record.get("job") or {}).get("overrides", []),
    }


def current_provenance(device: str, determinism: dict, describe: dict | None = None, batch_size: int = 1) -> dict:
    """The same facts for a run about to happen here (weights only once they are loaded); `batch_size`:
    the images per pipeline call it will run (reproduce runs the recorded one)."""
    from . import outputs

    now = {
        "versions": dict(outputs.package_versions(), python=platform.python_version()),
        "git": outputs.git_revision(),
        "code": code_digest(),
        "gpu": outputs.device_name(device),
        "determinism": determinism,
        "batch_size": batch_size,
    }
    if describe is not None:
        now["weights"] = weights_provenance(describe)
    return now


@dataclass
class Comparison:
    """Differences (each a possible cause of other pixels) and notes (worth knowing, not a cause)."""

    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def extend(self, other: Comparison) -> Comparison:
        self.differences += other.differences
        self.notes += other.notes
        return self


def compare_provenance(then: dict | None, now: dict) -> Comparison:
    """Software, code, hardware and numerics; weights too when `now` has them."""
    out = Comparison()
    if not then:
        out.differences.append(
            "provenance not recorded in the PNG (made before the runner embedded it): package versions, "
            "revision, GPU and weight fingerprints cannot be compared"
        )
        return out
    for key in ("versions", "git", "code", "gpu", "determinism", "batch_size", "weights"):
        if key in now:
            _collect(out, key, then.get(key, _NOT_RECORDED), now[key])
    return out


def compare_settings(then: dict, now: dict) -> Comparison:
    """The ``ideogram4:settings`` chunk then (settings, model, sampler) against the run planned now."""
    out = Comparison()
    for key in ("settings", "model", "sampler", "seed", "rng_device"):
        _collect(out, key, then.get(key, _NOT_RECORDED), now.get(key))
    return out


def _collect(out: Comparison, key: str, then: Any, now: Any) -> None:
    for path, a, b in changed(then, _plain(now), key):
        if a is _NOT_RECORDED:
            out.notes.append(f"{_label(path)}: not recorded then, {_show(b)} now")
        elif b is _NOT_RECORDED:
            out.notes.append(f"{_label(path)}: {_show(a)} then, not known now")
        elif _is_location(path):
            judge = "the weight fingerprints say" if path.startswith("model.") else "its sha256 says"
            out.notes.append(
                f"{_label(path)}: {_show(a)} then, {_show(b)} now (a location; {judge} if the files differ)"
            )
        else:
            out.differences.append(describe_change(path, a, b))


def changed(then: Any, now: Any, prefix: str):
    """(dotted path, then, now) for every leaf that differs; dicts are walked key by key."""
    if isinstance(then, dict) and isinstance(now, dict):
        for k in sorted(set(then) | set(now), key=str):
            yield from changed(then.get(k, _NOT_RECORDED), now.get(k, _NOT_RECORDED), f"{prefix}.{k}")
    elif then != now:
        yield prefix, then, now


def _plain(value: Any) -> Any:
    """As JSON would give it back (tuples -> lists), so a value read from a PNG compares equal."""
    return json.loads(json.dumps(value, default=str))


def _is_location(path: str) -> bool:
    head, _, leaf = path.partition(".")
    lora_place = path.startswith("settings.loras.") and path.rsplit(".", 1)[1] in _LORA_LOCATION
    # a component's source (model.transformer.source, model.components.vae.source) is a place too
    component_place = leaf.startswith("components.") or leaf.endswith(".source")
    model_place = head == "model" and (leaf in _MODEL_LOCATION or component_place)
    return model_place or path in _FILE_LOCATIONS or lora_place


def _label(path: str) -> str:
    head, _, rest = path.partition(".")
    return rest if head in ("versions", "settings", "determinism") and rest else path


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


# how a changed leaf is named in a line; any other leaf by its dotted path
_NAMES = {
    "git.commit": "git revision",
    "git.dirty": "uncommitted changes in the runner:",
    "code": "runner code (sha256 of ideogram4/*.py)",
    "gpu": "device",
    "determinism.deterministic": "deterministic mode",
}


def describe_change(path: str, then: Any, now: Any) -> str:
    """One line naming what changed: "torch 2.13.0 then, 2.14.0 now"."""
    head, _, rest = path.partition(".")
    if path.startswith("weights.fingerprints."):
        component = rest.split(".", 1)[1].replace("_", " ")
        if then is None or now is None:
            loaded = {None: "not loaded"}
            return f"{component}: {loaded.get(then, 'loaded')} then, {loaded.get(now, 'loaded')} now"
        return f"{component} weights fingerprint differs: {then} then, {now} now (other file)"
    if head == "versions":
        return f"{rest} {then or 'not installed'} then, {now or 'not installed'} now"
    if path == "batch_size":
        return f"generated in a batch of {then} then, {now} now (batched kernels may differ in the last bits)"
    if path == "git.commit":
        then, now = str(then)[:12], str(now)[:12]
    return f"{_NAMES.get(path, _label(path))} {_show(then)} then, {_show(now)} now"
