"""The sweeper's config node, registered as ``hydra/sweeper=compose_once`` (a module of its own without
postponed annotations: Hydra's plugin scan runs it outside ``sys.modules``, where dataclasses cannot
resolve string annotations)."""

from dataclasses import dataclass
from typing import Dict, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class ComposeOnceSweeperConf:
    _target_: str = "hydra_plugins.ideogram4_sweeper.sweeper.ComposeOnceSweeper"
    max_batch_size: Optional[int] = None  # as Hydra's basic sweeper: None launches every job as one batch
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="compose_once", node=ComposeOnceSweeperConf, provider="ideogram4"
)
