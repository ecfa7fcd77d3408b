"""Trained tiny checkpoints shared by the model-use tests (generate, export, evaluate): each is trained once
per session, on demand, by the real trainer."""

from __future__ import annotations

import pytest

from tests.conftest import run_trainer

COMMON = ["model=tiny", "train.iters=30", "train.global_batch_size=8", "train.micro_batch_size=4",
          "train.eval_iters=1", "train.eval_interval=30", "train.save_interval=30", "optim.warmup_iters=3",
          "logging.wandb.mode=disabled"]
LAYOUTS = {  # name: (nproc, overrides)
    "untied": (1, []),
    "untied_tp2": (2, ["parallel.tp=2"]),
    "tied_pp2": (2, ["parallel.pp=2", "model.untie_embeddings=false"]),
}


@pytest.fixture(scope="session")
def trained(tiny_shards, tmp_path_factory):
    """trained(name) -> run directory of a finished 30-step run under that layout."""
    runs = {}

    def get(name: str):
        if name not in runs:
            nproc, extra = LAYOUTS[name]
            run_dir = tmp_path_factory.mktemp(f"run_{name}")
            proc = run_trainer(nproc, [*COMMON, *tiny_shards, *extra, f"run.dir={run_dir}"])
            assert proc.returncode == 0, f"{name}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
            runs[name] = run_dir
        return runs[name]

    return get
