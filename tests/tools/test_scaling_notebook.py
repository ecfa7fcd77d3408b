"""The analysis notebook is executed, so it never rots: on a ladder directory and on the published data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from scaling_synthetic import make_ladder

NOTEBOOK = Path(__file__).resolve().parents[2] / "tools" / "notebooks" / "scaling_laws.ipynb"
PUBLISHED = Path(os.environ.get("SLURMTRAIN_SCALING_DATA", "/work/shared/data/scaling"))


@pytest.mark.skipif(not (PUBLISHED / "chinchilla_fig4_epoch_extracted.csv").is_file(),
                    reason=f"published scaling data not found under {PUBLISHED} (set SLURMTRAIN_SCALING_DATA)")
def test_notebook_executes(tmp_path, monkeypatch):
    ladder, _ = make_ladder(tmp_path / "ladder")
    monkeypatch.setenv("SCALING_LADDER", str(ladder))
    monkeypatch.setenv("SCALING_BOOTSTRAP", "10")
    monkeypatch.setenv("SCALING_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("SLURMTRAIN_SCALING_DATA", str(PUBLISHED))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # kernel "python3" is the venv's own ipykernel: jupyter_client starts it with this interpreter
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
    assert f"python: {sys.executable}" in text
    assert "within Besiroglu et al.'s standard errors: True" in text
    assert "compute-optimal at C = 3e+17" in text  # the ladder section ran
    assert "off the curve" not in text  # the synthetic runs all follow the law
    assert "predicted final val loss" in text and "4.0x the largest ladder run" in text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 7
    assert (tmp_path / "out" / "porian" / "fit.json").is_file()
    assert (tmp_path / "out" / "chinchilla_excl5" / "frontier.svg").is_file()
