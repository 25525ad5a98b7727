"""Experiment tracking: Weights & Biases, or nothing.

Tracking is never allowed to cost a local result: every W&B call is guarded, a failure becomes a
warning and the run goes on. Without credentials the tracker runs offline (never a login prompt)
and says how to upload later with ``wandb sync``. If an online run cannot start (no network, bad
key, server down) it falls back to an offline run so nothing logged is lost.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ideogram4.spec import TRACKER_MODES

from ..config.schema import TrackerConf

log = logging.getLogger("ideogram4.experiment")


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


NO_CREDENTIALS = "W&B: no credentials (WANDB_API_KEY or `wandb login`); logging offline"
OFFLINE_RUN_GLOB = "offline-run-*"


def resolve_mode(tracker: TrackerConf, quiet: bool = False) -> str:
    """auto | online | offline | disabled -> online | offline | disabled (never a prompt). Without
    credentials it says so once per process (`quiet`: not at all; a sweep says it once itself)."""
    if tracker.name != "wandb":
        return "disabled"
    mode = tracker.mode
    env = (os.environ.get("WANDB_MODE") or "").lower()
    if env == "dryrun":
        env = "offline"
    if mode == "auto" and env in TRACKER_MODES[1:]:
        mode = env
    if os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1") and mode != "disabled":
        mode = "disabled"
    if mode == "auto":
        mode = "online" if wandb_credentials_present() else "offline"
        if mode == "offline" and not quiet:
            _say_once(NO_CREDENTIALS)
    elif mode == "online" and not wandb_credentials_present():
        log.warning(
            "W&B: tracker.mode=online but no credentials found (WANDB_API_KEY or `wandb login`); logging offline instead of prompting"
        )
        mode = "offline"
    if mode == "online" and _ONLINE_FAILED:
        mode = "offline"  # W&B was unreachable earlier in this process: don't wait init_timeout again
    return mode


# Set after the first failed online start in this process: the rest of the sweep logs offline.
_ONLINE_FAILED = False
_SAID: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        log.info("%s", message)


def sweep_sync_command(sweep_dir: Path) -> str | None:
    """One `wandb sync` for every offline run of a sweep (its jobs' and the sweep run), or None if none."""
    patterns = [Path("wandb") / OFFLINE_RUN_GLOB, Path("*") / "wandb" / OFFLINE_RUN_GLOB]
    found = [str(Path(sweep_dir) / p) for p in patterns if any(Path(sweep_dir).glob(str(p)))]
    return f"wandb sync {' '.join(found)}" if found else None


def _online_failed() -> None:
    global _ONLINE_FAILED
    if not _ONLINE_FAILED:
        log.warning("W&B: unreachable; every later run in this process logs offline (upload with `wandb sync`)")
    _ONLINE_FAILED = True


_USER_SET = {k for k in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR") if os.environ.get(k)}


def keep_wandb_files_in(folder: Path) -> None:
    """W&B stages table/media copies under the home folder by default; keep them with the run
    (an offline run needs them for `wandb sync`), unless the user chose a place."""
    for key, sub in (("WANDB_DATA_DIR", ".data"), ("WANDB_CACHE_DIR", ".cache")):
        if key not in _USER_SET:
            os.environ[key] = str(folder / sub)


class NullTracker:
    enabled = False
    mode = "disabled"

    def log_image(self, *a, **k) -> None:
        pass

    def log_table(self, *a, **k) -> None:
        pass

    def log(self, *a, **k) -> None:
        pass

    def summary(self, *a, **k) -> None:
        pass

    def finish(self, *a, **k) -> None:
        pass


class WandbTracker:
    """One W&B run; every call is guarded so W&B trouble only ever produces warnings."""

    enabled = True

    def __init__(
        self,
        tracker: TrackerConf,
        *,
        name: str,
        group: str | None,
        config: dict,
        out_dir: Path,
        job_type: str = "generate",
        mode: str | None = None,
        in_sweep: bool = False,
    ):
        self.mode = mode or resolve_mode(tracker, quiet=in_sweep)
        self.in_sweep = in_sweep  # a sweep prints one `wandb sync` at its end instead of one per run
        self.run = None
        self.failures = 0
        self.tracker = tracker
        if self.mode == "disabled":
            self.enabled = False
            return
        wandb_dir = Path(tracker.dir or out_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        keep_wandb_files_in(wandb_dir / "wandb")
        kwargs = dict(
            project=tracker.project or "ideogram4",
            entity=tracker.entity,
            group=tracker.group or group,
            name=name,
            tags=list(tracker.tags or []),
            config=config,
            dir=str(wandb_dir),
            job_type=job_type,
            reinit="finish_previous",
        )
        self._start(kwargs)
        if self.run is None:
            self.enabled = False
            self.mode = "disabled"

    def _start(self, kwargs: dict) -> None:
        """wandb.init; an online start that fails falls back to offline; any other failure only warns."""
        try:
            import wandb

            self._wandb = wandb
            self.run = wandb.init(mode=self.mode, settings=self._settings(wandb), **kwargs)
        except Exception as e:  # network, auth, server errors
            why = (type(e).__name__, _short(e))
            if self.mode != "online":
                log.warning(
                    "W&B: could not start a run (%s: %s); continuing without tracking, local outputs are complete", *why
                )
                return
            _online_failed()
            log.warning(
                "W&B: could not start an online run (%s: %s); logging offline instead, upload later with `wandb sync`",
                *why,
            )
            try:
                self.mode = "offline"
                self.run = wandb.init(mode="offline", settings=self._settings(wandb), **kwargs)
            except Exception as e2:
                log.warning(
                    "W&B: offline run failed too (%s); continuing without tracking, local outputs are complete",
                    _short(e2),
                )

    def _settings(self, wandb):
        return wandb.Settings(
            init_timeout=float(self.tracker.init_timeout),
            console="off",
            silent=True,
            x_disable_stats=True,
            disable_git=True,
            # listing every installed distribution costs ~0.3 s per run (a third of a tiny sweep job);
            # the manifest records the versions that matter (ideogram4.experiment.run.outputs.PACKAGES)
            x_save_requirements=False,
        )

    def _guard(self, what: str, fn, *args, **kwargs) -> Any:
        if not self.enabled or self.run is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            self.failures += 1
            log.warning(
                "W&B: %s failed (%s: %s); continuing, local outputs are unaffected", what, type(e).__name__, _short(e)
            )
            return None

    def log_image(self, key: str, image, caption: str, boxes: dict | None = None) -> None:
        """`boxes`: W&B bounding boxes (e.g. a caption's layout), toggle-able in the W&B UI."""
        if not self.tracker.log_images:
            return
        self._guard(
            "logging an image", lambda: self.run.log({key: self._wandb.Image(image, caption=caption, boxes=boxes)})
        )

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], image_column: str | None = None) -> None:
        def do():
            table = self._wandb.Table(columns=columns)
            for row in rows:
                row = list(row)
                if image_column is not None:
                    i = columns.index(image_column)
                    if row[i] is not None:
                        row[i] = self._wandb.Image(row[i])
                table.add_data(*row)
            self.run.log({key: table})

        self._guard("logging a table", do)

    def log(self, data: dict) -> None:
        self._guard("logging", lambda: self.run.log(data))

    def summary(self, data: dict) -> None:
        self._guard("setting the run summary", lambda: self.run.summary.update(data))

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        run_dir = None
        try:
            run_dir = Path(self.run.dir).parent
        except Exception:
            pass
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as e:
            log.warning("W&B: finishing the run failed (%s); local outputs are complete", _short(e))
        finally:
            self.run = None
        if self.mode == "offline" and run_dir is not None:
            level = logging.DEBUG if self.in_sweep else logging.INFO
            log.log(level, "W&B: offline run saved in %s; upload it with `wandb sync %s`", run_dir, run_dir)


def make_tracker(tracker: TrackerConf | dict, in_sweep: bool = False, **kwargs):
    """`in_sweep`: a job of a multirun (the sweep says "no credentials" once and prints one sync command)."""
    if isinstance(tracker, dict):
        tracker = TrackerConf(**tracker)
    mode = resolve_mode(tracker, quiet=in_sweep)
    if mode == "disabled":
        return NullTracker()
    t = WandbTracker(tracker, mode=mode, in_sweep=in_sweep, **kwargs)
    return t if t.enabled else NullTracker()


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
