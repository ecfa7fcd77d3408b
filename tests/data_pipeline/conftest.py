from __future__ import annotations

import pytest

from data_pipeline.samples import fetch


@pytest.fixture(scope="session")
def pywb_warcs():
    return fetch(["pywb_warcs"])["pywb_warcs"]


@pytest.fixture(scope="session")
def chardet_pages():
    return fetch(["chardet_tests"])["chardet_tests"]
