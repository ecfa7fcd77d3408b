"""Slurm tests: a real local cluster (tools/localslurm), started once per session."""

from tools.localslurm.pytest_plugin import local_slurm  # noqa: F401  (the session fixture)
