"""What `run.py` runs per Hydra job: the job, and every user-fixable error as one clear line.

A single run exits with the error's code. In a multirun a failing job does not stop the sweep: its
line is logged, the failure is recorded in ``SWEEP_DIR/failed_jobs.jsonl`` and the next job starts;
the end-of-sweep callback builds the grid from the jobs that finished, then exits non-zero.
Ctrl-C stops everything with one line saying how to resume (finished images are already safe).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from .exits import EXIT_INTERRUPTED, INTERRUPTED, classify, raise_if_interrupted

log = logging.getLogger("ideogram4.experiment")

# Read when CUDA first allocates, which comes later in every job: grow segments instead of fragmenting
# them (two 9.3B DiTs, a 2048^2 decode and the compile caches leave little slack on an 80 GB card).
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

FAILED_JOBS = "failed_jobs.jsonl"


def run_job(cfg: DictConfig) -> None:
    from .jobs import job_context
    from .runner import run

    if cfg.get("reproduce"):  # python run.py +reproduce=IMAGE.png: remake one image, compare its pixels
        from ..reproduce.regenerate import run_from_hydra

        if code := run_from_hydra(cfg):
            sys.exit(code)
        return
    try:
        raise_if_interrupted()
        run(cfg)
        ctx = job_context()
        if ctx.multirun:  # failed_jobs.jsonl reports each job's last attempt: this one succeeded
            clear_failure(Path(ctx.sweep_dir), ctx.num)
    except KeyboardInterrupt:
        log.error(INTERRUPTED)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:
        ctx = job_context()
        known = classify(e)
        if known is None and not ctx.multirun:
            raise
        if known is None:  # a bug: keep its traceback in the job's log, let the other jobs run
            log.exception("Job %d failed", ctx.num)
            known = (1, f"{type(e).__name__}: {e}")
        code, message = known
        if known[0] != 1:
            log.error("%s", message)
        if not ctx.multirun:
            sys.exit(code)
        record_failure(Path(ctx.sweep_dir), ctx.num, ctx.overrides, code, message)


def record_failure(sweep_dir: Path, num: int, overrides: list[str], code: int, message: str) -> None:
    line = json.dumps({"job": num, "overrides": overrides, "exit_code": code, "error": message}, ensure_ascii=False)
    with open(sweep_dir / FAILED_JOBS, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def clear_failure(sweep_dir: Path, num: int) -> None:
    """Drop the lines of job `num` (an earlier attempt that failed) from failed_jobs.jsonl."""
    path = sweep_dir / FAILED_JOBS
    lines = failed_jobs(sweep_dir)
    if not any(f["job"] == num for f in lines):
        return
    kept = "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in lines if f["job"] != num)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(kept, encoding="utf-8")
    tmp.replace(path)


def failed_jobs(sweep_dir: Path) -> list[dict]:
    path = Path(sweep_dir) / FAILED_JOBS
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
