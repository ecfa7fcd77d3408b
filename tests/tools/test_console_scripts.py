"""Every user command is a console script of the installed package, and each one runs."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_python_m_command_has_a_script():
    targets = {v.split(":")[0].removesuffix(".__main__") for v in SCRIPTS.values()}
    assert targets >= {"pretrain.train", "data_pipeline", "pretrain.generate", "pretrain.export_hf",
                       "pretrain.evaluate", "tools.scaling", "tools.quickstart"}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_entry_point_resolves(name):
    module, func = SCRIPTS[name].split(":")
    assert callable(getattr(importlib.import_module(module), func))


def test_installed_script_runs():
    """The venv's own script (pip install -e .), as a user types it: usage and exit code 2 without a command."""
    exe = shutil.which("slurmtrain-scaling", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the package's scripts are not installed in this interpreter's bin (pip install -e .)")
    r = subprocess.run([exe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "predict" in r.stderr
