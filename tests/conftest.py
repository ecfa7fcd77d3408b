"""Shared fixtures: a small token shard for training tests, and a launcher for real trainer processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> list[str]:
    """A small token shard and its tokenizer (botchan sample, 512-token BPE), as trainer overrides."""
    from data_pipeline.samples import fetch
    from data_pipeline.tokenizer import encode_documents, train_tokenizer

    out = tmp_path_factory.mktemp("tiny_shards")
    text = fetch(["botchan"])["botchan"].read_text()
    lines = text.splitlines(keepends=True)
    docs = ["".join(lines[i:i + 40]) for i in range(0, len(lines), 40)]  # ~120 documents of 40 lines
    model = train_tokenizer(docs, 512, out / "tokenizer")
    encode_documents(docs, model, out / "botchan")
    return [f"data.paths=[{out / 'botchan'}]", f"data.tokenizer_model={model}"]


def run_trainer(nproc: int, overrides: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """Start the trainer as a user would: torchrun for several processes, python -m pretrain for one."""
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               "-m", "pretrain", *overrides]
    else:
        cmd = [sys.executable, "-m", "pretrain", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def trainer():
    return run_trainer
