"""One run at a time per output folder.

Two runs writing the same folder would overwrite each other's images and leave a manifest that
describes files that are not there. The folder is locked with `filelock` for the whole job; the
holder writes who it is next to the lock so the second run can say which process to wait for.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".ideogram4.lock"
OWNER_NAME = ".ideogram4.lock.owner"


class FolderInUse(RuntimeError):
    """Another process is writing this output folder."""


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    from filelock import FileLock, Timeout

    lock = FileLock(str(folder / LOCK_NAME), timeout=0, is_singleton=False)
    try:
        lock.acquire()
    except Timeout:
        raise FolderInUse(_in_use_message(folder)) from None
    owner = folder / OWNER_NAME
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        owner.write_text(json.dumps(info))
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def _in_use_message(folder: Path) -> str:
    try:
        who = json.loads((folder / OWNER_NAME).read_text())
        holder = f"process {who['pid']} on {who['host']} (since {who['since']})"
    except (OSError, ValueError, KeyError):
        holder = "another process"
    return (
        f"the output folder {folder} is in use by {holder}. Fix: wait for that run to finish, "
        "or write elsewhere (hydra.run.dir=... / hydra.sweep.dir=...)"
    )
