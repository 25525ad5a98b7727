"""A thin Hydra sweeper over Optuna's ask/tell API: ``python run.py -m hydra/sweeper=optuna ...``.

Ours, not the registry's ``hydra-optuna-sweeper``: its release (1.3.0) pins ``optuna<3`` and
``sqlalchemy~=1.3``, which cannot live beside a current Optuna (SQLAlchemy 2); its Optuna 4 port is
unreleased. This one uses only Optuna's public ask/tell API (``optuna>=4``). See README.md here.

Hydra finds it because ``hydra_plugins`` is a namespace package (no ``__init__.py`` one level up) on
the path: installed with the project, or the repository root when ``python run.py`` runs from it.
"""
