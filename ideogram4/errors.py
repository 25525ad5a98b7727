"""Errors a user can fix, importable without torch (run.py catches them to print one clear line)."""


class CheckpointError(RuntimeError):
    """A weights problem the user can fix: the message says what and how."""
