"""One 24-job tiny-model sweep on each launcher: wall time of the whole command, pipeline loads counted
from the job logs (the runner logs each load once, in the job that made it).

    python bench/bench_scale.py --out bench/out/scale.json
    python bench/bench_scale.py --launchers basic,ray_pool_2 --jobs 6 --reps 3

Launchers ("2 workers" means two jobs at a time everywhere):
  basic             Hydra's basic launcher: every job in the launching process (1 worker)
  submitit_pool_N   one submitit array of N tasks, each a process running a shard of the jobs
  ray_pool_N        N Ray actors fed the jobs through Ray's ActorPool
  submitit_local    hydra-submitit-launcher: one process per job, batches of 2 (max_batch_size=2)
  ray_stock         hydra-ray-launcher: one Ray task per job with max_calls=1 (a fresh process per job,
                    as Ray gives GPU tasks by default), 2 at a time
The sweep: cfg=3,5,7 x 8 seeds, one prompt, 64x64, 2 steps, tracker=none; every command ends with the
same grid and summary. Ray runs a local instance (2 CPUs); its start-up is part of the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["model=tiny", "resolution.height=64", "resolution.width=64", "sampler=turbo_12", "sampler.steps=2"]
RAY_LOCAL = ["+hydra.launcher.init.num_cpus=2"]  # ray_pool starts its own local Ray (never joins one)
LAUNCHERS = {
    "basic": ["hydra/launcher=basic"],
    "submitit_pool_1": ["hydra/launcher=submitit_pool", "hydra.launcher.workers=1"],
    "submitit_pool_2": ["hydra/launcher=submitit_pool", "hydra.launcher.workers=2"],
    "ray_pool_1": ["hydra/launcher=ray_pool", "hydra.launcher.num_gpus=0", "hydra.launcher.workers=1", *RAY_LOCAL],
    "ray_pool_2": ["hydra/launcher=ray_pool", "hydra.launcher.num_gpus=0", "hydra.launcher.workers=2", *RAY_LOCAL],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.sweeper.max_batch_size=2"],
    "ray_stock": [
        "hydra/launcher=ray",
        "+hydra.launcher.ray.init.address=local",
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.remote.num_cpus=1",
        "+hydra.launcher.ray.remote.max_calls=1",
    ],
}
WORKERS = {"basic": 1, "submitit_pool_1": 1, "submitit_pool_2": 2, "ray_pool_1": 1, "ray_pool_2": 2}


def sweep(launcher: str, n_jobs: int, sweep_dir: Path, env: dict) -> dict:
    seeds = ",".join(str(s) for s in range(n_jobs // 3))
    args = ["-m", *TINY, 'prompt="a red cube"', "tracker=none", "progress=false", "cfg=3,5,7", f"seed={seeds}"]
    args += [*LAUNCHERS[launcher], f"hydra.sweep.dir={sweep_dir}"]
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "run.py", *args], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    logs = list(sweep_dir.glob("*/run.log"))
    made = len(list(sweep_dir.glob("*/images/*.png")))
    if res.returncode != 0 or made != 3 * (n_jobs // 3):
        raise SystemExit(f"{launcher}: the sweep failed ({made} images):\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    loads = sum(p.read_text().count("Loaded pipeline ") for p in logs)
    return {"wall_s": wall, "loads": loads, "images": made}


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--launchers", default=",".join(LAUNCHERS), help=f"comma-separated, of {', '.join(LAUNCHERS)}")
    ap.add_argument("--jobs", type=int, default=24, help="a multiple of 3 (cfg=3,5,7 x jobs/3 seeds)")
    ap.add_argument("--reps", type=int, default=1, help="runs per launcher, interleaved; the median is reported")
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    a = ap.parse_args()
    names = a.launchers.split(",")
    if unknown := [n for n in names if n not in LAUNCHERS]:
        ap.error(f"unknown launcher(s) {unknown}; choose from {', '.join(LAUNCHERS)}")
    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    env = dict(os.environ, PYTHONPATH=str(REPO), IDEOGRAM4_CACHE=str(work / "cache"), OMP_NUM_THREADS="1")
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", WANDB_SILENT="true")
    info = machine()
    sweep("basic", 3, work / "warmup", env)  # builds the tiny checkpoint, warms the file cache
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(a.reps):
        for name in names:
            run = sweep(name, a.jobs, work / f"{name}_{r}", env)
            runs[name].append(run)
            print(
                f"rep {r + 1} {name}: {run['wall_s']:.1f} s, {run['loads']} load(s), {run['images']} images", flush=True
            )
    info["load_average_at_end"] = os.getloadavg()
    print(
        f"\n{a.jobs}-job sweep, median of {a.reps}; {info['cpus']} CPUs; load average {info['load_average_at_start']}"
    )
    print("| launcher | workers | wall s | s per job | pipeline loads |\n|---|---|---|---|---|")
    table = {}
    for name, rs in runs.items():
        wall = statistics.median(x["wall_s"] for x in rs)
        table[name] = {"wall_s": wall, "loads": [x["loads"] for x in rs], "runs": rs}
        workers = WORKERS.get(name, "1 process per job, 2 at a time")
        print(f"| {name} | {workers} | {wall:.1f} | {wall / a.jobs:.2f} | {', '.join(str(x['loads']) for x in rs)} |")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"machine": info, "jobs": a.jobs, "reps": a.reps, "launchers": table}, indent=1))


if __name__ == "__main__":
    main()
