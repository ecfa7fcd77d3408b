"""Slurm tests: a real local cluster (tools/localslurm), started once per session. tiny_shards: tests/conftest.py."""

from tools.localslurm.pytest_plugin import local_slurm  # noqa: F401  (the session fixture)
