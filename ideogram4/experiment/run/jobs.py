"""Where a job stands in its run or sweep: output folder, job number, sweep size, overrides.

Read from Hydra's runtime config; the sweep size comes from the sweep folder's ``multirun.yaml``
(written by Hydra before the first job), so it is known in every launcher's processes alike.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ideogram4.experiment")

# Set by a pool launcher (hydra_plugins/ideogram4_pool) in each worker process: a JSON object naming the
# worker (launcher, Ray actor or array task) that the manifest records beside the host and visible GPUs.
WORKER_ENV = "IDEOGRAM4_WORKER"


def worker_identity() -> dict:
    """Which worker runs this process's jobs: host, visible GPUs and what the launcher said about it."""
    ident = {"host": socket.gethostname(), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        ident.update(json.loads(os.environ.get(WORKER_ENV) or "{}"))
    except ValueError:  # set by hand to something else: keep it as text
        ident["launcher"] = os.environ[WORKER_ENV]
    return ident


@dataclass
class JobContext:
    out_dir: Path
    multirun: bool
    num: int
    total: int | None
    override_dirname: str
    overrides: list[str]
    sweep_dir: str | None
    group: str | None
    name: str

    @property
    def position(self) -> str:
        if not self.multirun:
            return "run"
        return f"job {self.num + 1}/{self.total}" if self.total else f"job {self.num + 1}"

    def to_dict(self) -> dict:
        return {
            "num": self.num,
            "multirun": self.multirun,
            "override_dirname": self.override_dirname,
            "overrides": self.overrides,
            "sweep_dir": self.sweep_dir,
            "output_dir": str(self.out_dir),
        }


def sweep_group(sweep_dir: str) -> str:
    """A W&B group name shared by all jobs of one sweep, whatever process they run in."""
    parts = [p for p in Path(sweep_dir).parts if p not in ("/", ".")]
    return "sweep-" + "-".join(parts[-2:]) if parts else "sweep"


def job_context(out_dir: str | Path | None = None) -> JobContext:
    """This job's context (outside Hydra: a single run in `out_dir` or the current folder)."""
    ctx = _hydra_context()
    if ctx is None:
        out = Path(out_dir or os.getcwd())
        return JobContext(out, False, 0, None, "", [], None, None, out.name)
    if out_dir is not None:
        ctx.out_dir = Path(out_dir)
    return ctx


def _hydra_context() -> JobContext | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    out_dir = Path(hc.runtime.output_dir)
    num = int(hc.job.num) if multirun else 0
    sweep_dir = str(Path(hc.runtime.cwd) / hc.sweep.dir) if multirun else None
    # as Hydra wrote it: an override's own "${...}" (prompt text) is text, never resolved here
    odn = OmegaConf.to_container(hc.job, resolve=False).get("override_dirname") or ""
    task = OmegaConf.to_container(hc.overrides, resolve=False)["task"]
    name = f"{Path(hc.sweep.dir).name}/{num}:{odn}" if multirun else out_dir.name
    total = sweep_size(sweep_dir) if sweep_dir else None
    group = sweep_group(hc.sweep.dir) if multirun else None
    return JobContext(out_dir, multirun, num, total, odn, task, sweep_dir, group, name[:120])


@functools.lru_cache(maxsize=16)
def sweep_size(sweep_dir: str) -> int | None:
    """Number of jobs of the basic sweeper's grid, from SWEEP_DIR/multirun.yaml; None if unknown."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        return count_sweep_jobs(OmegaConf.load(path))
    except Exception as e:  # progress shows "job N" without a total
        log.debug("could not read the sweep size from %s: %s", path, e)
        return None


def count_sweep_jobs(config) -> int | None:
    """Product of the sweep sizes in a multirun config's task overrides and sweeper params."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        texts = OmegaConf.to_container(config.hydra.overrides, resolve=False)["task"]  # prompt text unresolved
        params = OmegaConf.select(config, "hydra.sweeper.params") or {}
        texts += [f"{k}={v}" for k, v in params.items()]
        sizes: dict[str, int] = {}
        for o in OverridesParser.create().parse_overrides(texts):
            sizes[o.get_key_element()] = len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1
    except Exception as e:  # glob sweeps, a custom sweeper: unknown
        log.debug("could not count sweep jobs: %s", e)
        return None
    n = 1
    for v in sizes.values():
        n *= v
    return n
