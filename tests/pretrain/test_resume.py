"""Stop after step 10, restart, and steps 11-20 match the uninterrupted run exactly (CPU, fp32).
Also: a resume under another layout (resharding) continues the same losses, and a finished run does not
train again."""

from __future__ import annotations

import json

import pytest

from pretrain.metrics import read_metrics
from tests.conftest import run_trainer

COMMON = ["model=tiny", "train.iters=20", "train.global_batch_size=8", "train.micro_batch_size=2",
          "train.eval_iters=2", "train.eval_interval=10", "train.save_interval=5", "optim.warmup_iters=5",
          "logging.wandb.mode=disabled"]


def _losses(run_dir):
    return {r["step"]: (r.get("loss"), r.get("val_loss")) for r in read_metrics(run_dir / "metrics.jsonl")}


@pytest.fixture(scope="module")
def uninterrupted(tiny_shards, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full")
    proc = run_trainer(2, [*COMMON, *tiny_shards, f"run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir


@pytest.mark.slow
def test_resume_matches_uninterrupted_run_exactly(uninterrupted, tiny_shards, tmp_path):
    first = run_trainer(2, [*COMMON, *tiny_shards, f"run.dir={tmp_path}", "train.exit_interval=10"])
    assert first.returncode == 0, first.stderr[-4000:]
    assert max(_losses(tmp_path)) == 10 and not (tmp_path / "finished.json").exists()
    second = run_trainer(2, [*COMMON, *tiny_shards, f"run.dir={tmp_path}"])
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resumed from" in second.stdout and "step 10" in second.stdout
    ref, got = _losses(uninterrupted), _losses(tmp_path)
    assert sorted(got) == list(range(1, 21))
    for step in range(11, 21):
        assert got[step] == ref[step], f"step {step}: resumed {got[step]} vs uninterrupted {ref[step]}"
    # a finished run does not train past its end when started again
    again = run_trainer(1, [*COMMON, *tiny_shards, f"run.dir={tmp_path}"])
    assert again.returncode == 0 and "already finished" in again.stdout
    assert json.loads((tmp_path / "finished.json").read_text())["iterations"] == 20


@pytest.mark.slow
def test_resume_under_another_layout(uninterrupted, tiny_shards, tmp_path):
    """Saved under DP=2 with the plain optimizer, resumed under TP=2 with the distributed optimizer... on 2
    processes: weights, Adam state and data position carry over."""
    first = run_trainer(2, [*COMMON, *tiny_shards, f"run.dir={tmp_path}", "train.exit_interval=10"])
    assert first.returncode == 0, first.stderr[-4000:]
    second = run_trainer(2, [*COMMON, *tiny_shards, f"run.dir={tmp_path}", "parallel.tp=2"])
    assert second.returncode == 0, second.stderr[-4000:]
    ref, got = _losses(uninterrupted), _losses(tmp_path)
    for step in range(11, 21):
        assert got[step][0] == pytest.approx(ref[step][0], rel=1e-4), f"step {step}"
