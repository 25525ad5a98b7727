"""Hydra's basic sweeper, composing each job's config once: ``hydra/sweeper=compose_once`` (the default
in ``conf/config.yaml``).

Hydra's ``BasicSweeper`` composes every job of a batch to check the overrides before any job starts,
and its launcher then composes each job again to run it. With this project's config a composition
costs 0.1-0.2 s of CPU, about as much as a tiny-model image, so the second one is kept from the first.
"""
