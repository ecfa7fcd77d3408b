"""A single-process run as a user starts it (python -m pretrain, wandb offline by default): the run directory
holds the resolved config, run_info.json, metrics.jsonl with the documented keys, an offline wandb run, a
checkpoint that `python -m pretrain.checkpoint inspect` reads, and finished.json."""

from __future__ import annotations

import json
import subprocess
import sys

from pretrain.metrics import read_metrics
from tests.conftest import ROOT, run_trainer

KEYS = {"step", "tokens", "flops", "loss", "lr", "grad_norm", "tokens_per_s", "tflops_per_device", "mfu",
        "step_time_s", "data_wait_frac", "peak_mem_mb"}


def test_single_process_run_directory(tiny_shards, tmp_path):
    proc = run_trainer(1, ["model=tiny", *tiny_shards, "train.iters=6", "train.eval_interval=3", "train.eval_iters=1",
                           "optim.warmup_iters=2", "train.global_batch_size=4", "train.micro_batch_size=2",
                           f"run.dir={tmp_path}", "run.seed=7"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 7))
    for r in rows:
        assert KEYS <= set(r), KEYS - set(r)
        assert r["tokens"] == r["step"] * 4 * 128
        assert 0.0 <= r["data_wait_frac"] < 1.0
    assert [r["step"] for r in rows if "val_loss" in r] == [3, 6]
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["num_params"] == info["num_params_non_embedding"] + info["num_params_embedding"]
    assert rows[-1]["flops"] == info["flops_per_token"] * rows[-1]["tokens"]
    assert "seed: 7" in (tmp_path / "config.yaml").read_text()
    assert list((tmp_path / "wandb").glob("offline-run-*")), "wandb offline run missing"
    assert json.loads((tmp_path / "finished.json").read_text())["iterations"] == 6
    out = subprocess.run([sys.executable, "-m", "pretrain.checkpoint", "inspect", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "iter_0000006" in out.stdout and "OK (all checksums match)" in out.stdout
    assert "decoder.layers.3.mlp.linear_fc1.weight" in out.stdout and "exp_avg_sq" in out.stdout
