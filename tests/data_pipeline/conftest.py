from __future__ import annotations

import pytest
from stage_helpers import cli

from data_pipeline.samples import fetch
from tools.localslurm.pytest_plugin import local_slurm  # noqa: F401  (session fixture for test_slurm.py)


@pytest.fixture(scope="session")
def pywb_warcs():
    return fetch(["pywb_warcs"])["pywb_warcs"]


@pytest.fixture(scope="session")
def chardet_pages():
    return fetch(["chardet_tests"])["chardet_tests"]


@pytest.fixture(scope="session")
def chardet_local(chardet_pages, tmp_path_factory):
    """The reference run: filter stage on the chardet pages, local executor, 4 tasks."""
    out = tmp_path_factory.mktemp("chardet") / "local"
    cli(f"input.paths=[{chardet_pages}]", "input.format=pages", "filters=fineweb", "executor=local",
        "executor.tasks=4", f"output.dir={out}")
    return out
