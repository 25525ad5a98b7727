"""Launchers that keep the weights loaded per worker, not per job: ``hydra/launcher=ray_pool`` (a Ray
actor pool), ``hydra/launcher=submitit_pool`` and ``slurm_pool`` (submitit job arrays, one shard of the
sweep per array task). Each worker runs many jobs in one process, so the runner's pipeline cache loads
the model once per worker. The scheduling is Ray's and SLURM's; see README.md here.

Only ``config.py`` and ``launchers.py`` are imported by Hydra's plugin scan; the work (Ray, submitit)
lives in the private modules, imported when a sweep launches.
"""
