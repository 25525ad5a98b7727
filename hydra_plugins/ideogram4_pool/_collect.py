"""``python -m hydra_plugins.ideogram4_pool._collect SWEEP_DIR``: finish a sweep that ``slurm_pool`` submitted
with ``wait=false``. Waits for the array's tasks (on the login node, once you choose to), names the jobs
that did not finish, then runs the sweep's own end-of-sweep callbacks (grid, summary, W&B sweep run) as
``python run.py -m`` would have. Exit 0 when every job finished, 1 when some did not (re-run the sweep's
command to make them), 2 when SWEEP_DIR holds no such submission.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from omegaconf import OmegaConf

from ._array import RESULTS, SUBMISSION, gather, wait_for
from ._common import PoolJob, log_report

log = logging.getLogger(__name__)


def submitted_tasks(submission: dict) -> list[Any]:
    import submitit

    return [submitit.SlurmJob(folder=submission["folder"], job_id=job_id) for job_id in submission["job_ids"]]


def end_of_sweep(sweep_dir: Path) -> None:
    """The callbacks configured in the sweep's multirun.yaml, called as Hydra calls them after a multirun."""
    from hydra.utils import instantiate

    config = OmegaConf.load(sweep_dir / "multirun.yaml")
    OmegaConf.update(config, "hydra.sweep.dir", str(sweep_dir))  # not a ${now:...} of today
    for params in (OmegaConf.select(config, "hydra.callbacks") or {}).values():
        instantiate(params).on_multirun_end(config=config)


def collect(sweep_dir: Path) -> int:
    path = sweep_dir / RESULTS / SUBMISSION
    if not path.is_file():
        print(f"{path} not found: collect a sweep launched with hydra.launcher.wait=false", file=sys.stderr)
        return 2
    submission = json.loads(path.read_text())
    parts = [[PoolJob(j["idx"], j["overrides"]) for j in part] for part in submission["shards"]]
    log.info("Waiting for %d array task(s): %s", len(parts), " ".join(submission["job_ids"]))
    returns, reports = gather(parts, sweep_dir / RESULTS, wait_for(submitted_tasks(submission)))
    ordered = [returns[job.idx] for part in parts for job in part]
    log_report(f"{submission['cluster']}_pool", reports, ordered)
    lost = [r for r in ordered if r.status != JobStatus.COMPLETED]
    for ret in lost:
        log.error("%s", ret._return_value)
    end_of_sweep(sweep_dir)
    return 1 if lost else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hydra_plugins.ideogram4_pool._collect", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="the sweep folder (hydra.sweep.dir) of the submission")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return collect(args.sweep_dir.absolute())


if __name__ == "__main__":
    sys.exit(main())
