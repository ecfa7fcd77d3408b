"""Every user command is a console script of the installed package, and each one runs."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_python_m_command_has_a_script():
    """Every `python -m X` the README, the Makefile and the sbatch scripts show users (benchmarks aside) is also
    an installed script."""
    targets = {v.split(":")[0].removesuffix(".__main__") for v in SCRIPTS.values()} | {"pretrain"}
    assert "pretrain.train" in targets  # `python -m pretrain` runs pretrain.train:main
    texts = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "slurm").glob("*.sbatch"))]
    shown = {m for path in texts for m in re.findall(r"python -m ([a-z_][a-z_.]*[a-z_])", path.read_text())}
    shown = {m for m in shown if not m.startswith("tools.bench")}
    assert {"pretrain", "data_pipeline", "data_pipeline.tokenizer", "tools.scaling"} <= shown
    assert shown <= targets, f"commands without a console script: {sorted(shown - targets)}"


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
