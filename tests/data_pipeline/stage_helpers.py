"""Shared helpers for the data-pipeline stage tests: run the real CLI, compare output trees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def cli(*args: str, launcher: list[str] | None = None, check: bool = True, timeout: float = 300,
        env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [*(launcher or []), sys.executable, "-m", "data_pipeline", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
                             f"stderr:\n{proc.stderr[-5000:]}")
    return proc


def output_files(out: Path) -> dict[str, bytes]:
    """Every output file of a stage (kept and removed documents), by relative path."""
    return {str(p.relative_to(out)): p.read_bytes()
            for sub in ("documents", "removed") for p in sorted((out / sub).rglob("*")) if p.is_file()}


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())
