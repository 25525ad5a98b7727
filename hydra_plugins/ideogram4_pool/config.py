"""The launchers' config nodes: ``hydra/launcher=ray_pool``, ``submitit_pool``, ``slurm_pool`` (a module of
its own, free of Ray and submitit imports, because Hydra's plugin scan imports it at every start).

The submitit ones extend hydra-submitit-launcher's own queue configs, so every SLURM setting it knows
(partition, gpus_per_node, timeout_min, array_parallelism, setup, ...) is spelled the same here.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore

try:
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
except ImportError:  # no [slurm] extra: the submitit pools still compose, and say at launch what to install

    @dataclass
    class LocalQueueConf:
        submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"

    SlurmQueueConf = LocalQueueConf


@dataclass
class RayPoolConf:
    _target_: str = "hydra_plugins.ideogram4_pool.launchers.RayPoolLauncher"
    # long-lived actors, each loading the weights once; None: one per GPU the cluster has room for
    workers: Optional[int] = None
    num_gpus: float = 1.0  # per actor; 0 for CPU actors (then set workers)
    num_cpus: float = 1.0  # per actor
    address: Optional[str] = None  # None: a local Ray (started here); "auto": the running cluster
    job_retries: int = 1  # times a job whose actor died is run again on another actor
    init: Dict[str, Any] = field(default_factory=dict)  # more ray.init arguments (runtime_env, ...)
    actor_options: Dict[str, Any] = field(default_factory=dict)  # more actor options (resources, memory, ...)


@dataclass
class SubmititPoolConf(LocalQueueConf):
    _target_: str = "hydra_plugins.ideogram4_pool.launchers.SubmititPoolLauncher"
    workers: int = 2  # array tasks (local processes), each running a contiguous shard of the jobs


@dataclass
class SlurmPoolConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.ideogram4_pool.launchers.SlurmPoolLauncher"
    workers: int = 4  # array tasks, each running a contiguous shard of the jobs (array_parallelism at once)
    wait: bool = True  # false: submit, print the job ids and the command that collects the results, exit


ConfigStore.instance().store(group="hydra/launcher", name="ray_pool", node=RayPoolConf, provider="ideogram4")
ConfigStore.instance().store(group="hydra/launcher", name="submitit_pool", node=SubmititPoolConf, provider="ideogram4")
ConfigStore.instance().store(group="hydra/launcher", name="slurm_pool", node=SlurmPoolConf, provider="ideogram4")
