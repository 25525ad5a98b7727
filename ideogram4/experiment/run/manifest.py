"""The job's manifest: one JSON line per image, appended whole, readable after any crash.

An append either lands whole or not at all: a short or failed write is rolled back (truncated to
the size before it). A file left ending mid-line (power loss, a full disk in an older version) is
repaired before the next append: the fragment is moved aside to ``manifest.jsonl.fragment-<time>``
and reported once, so later runs neither glue a line onto it nor warn again.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("ideogram4.experiment")

MANIFEST = "manifest.jsonl"
RECORD_KEYS = ("image",)  # what resume, the grid and the summary need of every line


class OutputWriteError(OSError):
    """The output folder could not be written (full disk, read-only, permissions): nothing was lost."""


def append_manifest(folder: Path, record: dict) -> None:
    """Append one whole JSON line (strict JSON: no NaN), then fsync; all or nothing."""
    line = (json.dumps(record, ensure_ascii=False, allow_nan=False, default=str) + "\n").encode("utf-8")
    path = Path(folder) / MANIFEST
    repair_torn_tail(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    size = os.fstat(fd).st_size
    try:
        written = 0
        while written < len(line):
            n = os.write(fd, line[written:])
            if n <= 0:
                raise OSError(errno.ENOSPC, "no space left on device")
            written += n
        os.fsync(fd)
    except OSError as e:
        os.ftruncate(fd, size)  # roll back: the file ends with the previous whole line
        raise OutputWriteError(e.errno, f"could not append to {path}: {e.strerror or e}") from e
    finally:
        os.close(fd)


def repair_torn_tail(path: Path) -> Path | None:
    """If `path` does not end with a newline, move the fragment after the last one aside."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return None
        data = f.seek(0) or f.read()
        keep = data.rfind(b"\n") + 1
        aside = path.with_name(f"{path.name}.fragment-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        aside.write_bytes(data[keep:])
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning("%s ended mid-line (an interrupted write); moved the fragment to %s", path, aside.name)
    return aside


def read_manifest(folder: Path) -> list[dict]:
    """Every whole record; a torn line or a line that is not a record is skipped with a warning."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            log.warning("%s line %d is not valid JSON (interrupted write?); ignoring it", path, i)
            continue
        if not (isinstance(rec, dict) and all(isinstance(rec.get(k), str) for k in RECORD_KEYS)):
            log.warning("%s line %d is not an image record (no %s); ignoring it", path, i, " / ".join(RECORD_KEYS))
            continue
        if not inside(folder, rec["image"]):
            log.warning("%s line %d names an image outside its folder (%r); ignoring it", path, i, rec["image"])
            continue
        out.append(rec)
    return out


def inside(folder: Path, relative: str) -> bool:
    """Whether `relative` (a manifest's image path) names a file inside `folder`, links resolved."""
    if os.path.isabs(relative):
        return False
    root = Path(folder).resolve()
    return (root / relative).resolve().is_relative_to(root)


def latest_records(records: Iterable[dict]) -> dict[str, dict]:
    """The last record per image file (a re-run with overwrite appends a newer one)."""
    return {r["image"]: r for r in records}
