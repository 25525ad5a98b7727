"""The runner's exit codes and which errors are the user's to fix (one line each), shared by `run.py`'s
jobs (`entry`) and the reproduction commands (`reproduce`)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import NoReturn

from ideogram4.errors import CheckpointError, GpuOutOfMemory, UpsampleError, is_out_of_memory

from ..config.problems import ConfigError
from .lock import FolderInUse
from .manifest import OutputWriteError

EXIT_CONFIG, EXIT_WEIGHTS, EXIT_OUTPUT, EXIT_RUNTIME, EXIT_INTERRUPTED = 2, 3, 4, 5, 130
INTERRUPTED = "Interrupted. Finished images and their manifest lines are saved; run the same command again to resume."


def classify(e: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for an error the user can act on; None: a bug (keep the traceback)."""
    if isinstance(e, ConfigError):  # one problem: one line, as the command-line check prints it
        one = len(e.problems) == 1 and not e.warnings
        return EXIT_CONFIG, f"Config: {e.problems[0]}" if one else str(e)
    if isinstance(e, CheckpointError):
        return EXIT_WEIGHTS, f"Weights: {e}"
    if isinstance(e, (OutputWriteError, FolderInUse)):
        return EXIT_OUTPUT, f"Output: {e}"
    if isinstance(e, (GpuOutOfMemory, UpsampleError)) or is_out_of_memory(e):
        return EXIT_RUNTIME, str(e).splitlines()[0]
    return None


def exit_one_line(e: BaseException) -> NoReturn:
    """Outside a job's own error handling (run.py's command line, a Hydra callback or sweeper, where Hydra
    would print a traceback): a user-fixable error is its line on stderr and its exit code; a bug is
    re-raised with its traceback."""
    known = classify(e)
    if known is None:
        raise e
    print(known[1], file=sys.stderr)
    sys.exit(known[0])


_interrupted = False  # Ctrl-C was pressed in this process (see catch_interrupts)


def _on_interrupt(signum, frame) -> NoReturn:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def catch_interrupts() -> None:
    """Ctrl-C raises KeyboardInterrupt as usual and is also remembered, so one that lands inside a finalizer
    (a ``__del__``, where Python prints the exception and drops it) is raised again at the next
    ``raise_if_interrupted`` (before each job and each batch) instead of being lost while the sweep runs on."""
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_interrupt)


def raise_if_interrupted() -> None:
    if _interrupted:
        raise KeyboardInterrupt
