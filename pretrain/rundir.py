"""The run-directory contract, shared by the trainer, tools/scaling and the tools that use a trained model.

    <run.dir>/config.yaml      the resolved trainer config
    <run.dir>/run_info.json    parameters (with and without embeddings), FLOPs per token, layout, steps
    <run.dir>/metrics.jsonl    one JSON line per logged step (pretrain.metrics); validation steps add val_loss and,
                               with several data sources, val_loss/<source> (read by pretrain.metrics.val_loss_by_source)
    <run.dir>/checkpoints/     iter_XXXXXXX/ directories and the `latest` pointer (pretrain.checkpoint)
    <run.dir>/finished.json    written once the run has trained all its steps
    <run.dir>/exit.json        why the last attempt stopped: {"code", "reason", "step"}; read by slurm/pretrain.sbatch
                               (torchrun turns every non-zero exit code into 1, the file keeps the real one)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


# Exit codes of `python -m pretrain` (also in exit.json)
EXIT_FINISHED = 0
EXIT_CONFIG = 2  # a config error, before any work
EXIT_DIVERGED = 3  # train.max_nonfinite_in_a_row NaN/inf steps in a row: not requeued
EXIT_INTERVAL = 98  # stopped by train.exit_interval after a checkpoint: requeue to continue
EXIT_PREEMPTED = 99  # stopped by SIGUSR1/SIGTERM after a checkpoint: requeue to continue

EXIT_REASONS = {EXIT_FINISHED: "finished", EXIT_CONFIG: "config", EXIT_DIVERGED: "diverged",
                EXIT_INTERVAL: "exit_interval", EXIT_PREEMPTED: "preempted"}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __init__(self, path: Path | str):
        object.__setattr__(self, "path", Path(path).resolve())

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def run_info_path(self) -> Path:
        return self.path / "run_info.json"

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    # config and run info
    def write_config(self, yaml_text: str) -> None:
        _write_atomic(self.config_path, yaml_text)

    def read_config(self) -> dict:
        import yaml

        return yaml.safe_load(self.config_path.read_text())

    def write_run_info(self, info: dict) -> None:
        _write_atomic(self.run_info_path, json.dumps(info, indent=1))

    def read_run_info(self) -> dict:
        return json.loads(self.run_info_path.read_text())

    # metrics
    def metrics(self) -> list[dict]:
        from pretrain.metrics import read_metrics

        return read_metrics(self.metrics_path) if self.metrics_path.is_file() else []

    # completion and exit
    def finished(self) -> dict | None:
        path = self.path / "finished.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def finished_iterations(self) -> int:
        return int((self.finished() or {}).get("iterations", 0))

    def mark_finished(self, iterations: int, tokens: int) -> None:
        _write_atomic(self.path / "finished.json", json.dumps({"iterations": iterations, "tokens": tokens}))

    def write_exit(self, code: int, step: int, message: str = "") -> None:
        self.create()
        _write_atomic(self.path / "exit.json", json.dumps(
            {"code": code, "reason": EXIT_REASONS.get(code, "error"), "step": step, "message": message}))

    def read_exit(self) -> dict | None:
        path = self.path / "exit.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def clear_exit(self) -> None:
        (self.path / "exit.json").unlink(missing_ok=True)
