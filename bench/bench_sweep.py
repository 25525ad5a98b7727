"""Runner overhead per sweep job: time an N-job and a 2-job `python run.py -m` sweep of the tiny model.

    python bench/bench_sweep.py --reps 7 --tracker none --out bench/out/sweep_none.json
    python bench/bench_sweep.py --reps 7 --tracker wandb          # W&B offline

Per repetition: (T_N - T_2) / (N - 2), where T is the wall time of the whole command (start-up, weights
load, every job, end-of-sweep grid and summary), and the in-sweep cost, (start of job N-1 - start of
job 1) / (N - 2) from the job logs, which leaves out the weights load and the batch check that
composes every job's config before the first starts. The load varies by a second or more from run
to run on a shared machine, so the difference of two whole runs is noisy: report the median of
several repetitions. Both sweeps use the default prompt set (a 1077-token caption) at 128^2, 2 steps.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["model=tiny", "resolution.height=128", "resolution.width=128", "sampler=turbo_12", "sampler.steps=2"]


def sweep_seconds(n_jobs: int, tracker: str, sweep_dir: Path, env: dict, extra: list[str]) -> float:
    seeds = ",".join(str(s) for s in range(n_jobs))
    args = ["-m", *TINY, "progress=false", f"tracker={tracker}", f"seed={seeds}", f"hydra.sweep.dir={sweep_dir}"]
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "run.py", *args, *extra], cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    made = len(list(sweep_dir.glob("*/images/*.png")))
    if res.returncode != 0 or made != n_jobs:
        raise SystemExit(f"the {n_jobs}-job sweep failed ({made} images):\n{res.stderr[-3000:]}")
    return seconds


def job_start(sweep_dir: Path, num: int) -> float:
    first_line = (sweep_dir / str(num) / "run.log").read_text().splitlines()[0]
    return dt.datetime.strptime(first_line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=10, help="the long sweep's job count (the short one has 2)")
    ap.add_argument("--tracker", choices=["none", "wandb"], default="none")
    ap.add_argument("--cache-dir", default=None, help="where the tiny checkpoint is built (default: a temp folder)")
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    ap.add_argument("overrides", nargs="*", help="more run.py overrides for both sweeps")
    a = ap.parse_args()
    if a.jobs < 3:
        ap.error("--jobs must be at least 3")

    work = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    cache = Path(a.cache_dir) if a.cache_dir else work / "cache"
    env = dict(os.environ, PYTHONPATH=str(REPO), IDEOGRAM4_CACHE=str(cache), OMP_NUM_THREADS="1")
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(work))
    extra = [f"model.cache_dir={cache}", *a.overrides]
    sweep_seconds(2, "none", work / "warmup", env, extra)  # builds the tiny checkpoint, warms the file cache
    n, reps = a.jobs, []
    for r in range(a.reps):
        t_short = sweep_seconds(2, a.tracker, work / f"r{r}_2", env, extra)
        long_dir = work / f"r{r}_{n}"
        t_long = sweep_seconds(n, a.tracker, long_dir, env, extra)
        in_sweep = (job_start(long_dir, n - 1) - job_start(long_dir, 1)) / (n - 2)
        rep = {"t_2": t_short, f"t_{n}": t_long, "per_job": (t_long - t_short) / (n - 2), "in_sweep_per_job": in_sweep}
        reps.append(rep)
        print(
            f"rep {r + 1}: T2 {t_short:.2f} s, T{n} {t_long:.2f} s, per job {rep['per_job']:.3f} s, in-sweep {in_sweep:.3f} s"
        )
    summary = {k: statistics.median(r[k] for r in reps) for k in ("per_job", "in_sweep_per_job")}
    print(
        f"median over {len(reps)}: per job beyond the second {summary['per_job']:.3f} s, in-sweep {summary['in_sweep_per_job']:.3f} s"
    )
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"tracker": a.tracker, "jobs": n, "reps": reps, "median": summary}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
