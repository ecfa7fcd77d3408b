"""Stop after step 10, restart, and steps 11-20 match the uninterrupted run exactly (CPU, fp32).
Also: a resume under another layout (resharding) continues the same losses, and a finished run does not
train again."""

from __future__ import annotations

import json

import pytest

from pretrain.metrics import read_metrics
from pretrain.rundir import EXIT_INTERVAL, RunDir
from tests.conftest import run_trainer

COMMON = ["model=tiny", "train.iters=20", "train.global_batch_size=8", "train.micro_batch_size=2",
          "train.eval_iters=2", "train.eval_interval=10", "train.save_interval=5", "optim.warmup_iters=5",
          "logging.wandb.mode=disabled"]


def _losses(run_dir):
    return {r["step"]: (r.get("loss"), r.get("val_loss")) for r in read_metrics(run_dir / "metrics.jsonl")}


def _stopped_at_exit_interval(proc, run_dir) -> None:
    """exit_interval stops with its own code (torchrun turns it into 1; exit.json keeps it)."""
    assert proc.returncode != 0, "an exit_interval stop must not look finished"
    exit_info = RunDir(run_dir).read_exit()
    assert exit_info is not None and exit_info["code"] == EXIT_INTERVAL, (exit_info, proc.stderr[-3000:])
    assert exit_info["reason"] == "exit_interval"


@pytest.fixture(scope="module")
def uninterrupted(tiny_shards, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full")
    proc = run_trainer(2, [*COMMON, *tiny_shards, f"run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir


@pytest.mark.slow
def test_resume_matches_uninterrupted_run_exactly(uninterrupted, tiny_shards, tmp_path):
    first = run_trainer(2, [*COMMON, *tiny_shards, f"run.dir={tmp_path}", "train.exit_interval=10"])
    _stopped_at_exit_interval(first, tmp_path)
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
    _stopped_at_exit_interval(first, tmp_path)
    second = run_trainer(2, [*COMMON, *tiny_shards, f"run.dir={tmp_path}", "parallel.tp=2"])
    assert second.returncode == 0, second.stderr[-4000:]
    ref, got = _losses(uninterrupted), _losses(tmp_path)
    for step in range(11, 21):
        assert got[step][0] == pytest.approx(ref[step][0], rel=1e-4), f"step {step}"


@pytest.mark.slow
def test_resume_with_distributed_optimizer(uninterrupted, tiny_shards, tmp_path):
    """Saved and resumed under DP=2 with the distributed optimizer (ZeRO-1): the Adam moments are gathered from
    and scattered back to the data-parallel shards."""
    dist = [*COMMON, *tiny_shards, f"run.dir={tmp_path}", "parallel.distributed_optimizer=true"]
    first = run_trainer(2, [*dist, "train.exit_interval=10"])
    _stopped_at_exit_interval(first, tmp_path)
    second = run_trainer(2, dist)
    assert second.returncode == 0, second.stderr[-4000:]
    ref, got = _losses(uninterrupted), _losses(tmp_path)
    for step in range(11, 21):
        assert got[step][0] == pytest.approx(ref[step][0], rel=1e-5), f"step {step}"


TIED = [*COMMON, "model.untie_embeddings=false"]


@pytest.mark.slow
@pytest.mark.parametrize("before,after", [(1, 2), (2, 1)], ids=["pp1_to_pp2", "pp2_to_pp1"])
def test_tied_embeddings_reshard_between_pp1_and_pp2(tiny_shards, tmp_path_factory, before, after):
    ref_dir = tmp_path_factory.mktemp("tied_ref")
    ref = run_trainer(1, [*TIED, *tiny_shards, f"run.dir={ref_dir}"])
    assert ref.returncode == 0, ref.stderr[-4000:]
    run_dir = tmp_path_factory.mktemp("tied")
    first = run_trainer(before, [*TIED, *tiny_shards, f"run.dir={run_dir}", f"parallel.pp={before}",
                                 "train.exit_interval=10"])
    _stopped_at_exit_interval(first, run_dir)
    second = run_trainer(after, [*TIED, *tiny_shards, f"run.dir={run_dir}", f"parallel.pp={after}"])
    assert second.returncode == 0, second.stderr[-4000:]
    want, got = _losses(ref_dir), _losses(run_dir)
    for step in range(1, 21):
        assert got[step][0] == pytest.approx(want[step][0], rel=1e-4), f"step {step}"


@pytest.mark.slow
def test_resume_restores_a_group_step_optimizer(tiny_shards, tmp_path_factory):
    """apex's and Transformer Engine's FusedAdam (megatron's first choice when installed) keep Adam's step in
    the param group, not in each parameter's state. A resume must restore it there, or Adam's bias correction
    restarts and the resumed losses differ."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    def train(run_dir, *extra):
        cmd = [sys.executable, "-m", "tests.pretrain.group_step_adam", *COMMON, *tiny_shards,
               f"run.dir={run_dir}", "train.iters=12", "train.eval_interval=6", *extra]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})

    ref_dir, run_dir = tmp_path_factory.mktemp("gs_ref"), tmp_path_factory.mktemp("gs")
    ref = train(ref_dir)
    assert ref.returncode == 0 and "GroupStepAdamW" in ref.stdout, ref.stderr[-4000:]
    first = train(run_dir, "train.exit_interval=6")
    _stopped_at_exit_interval(first, run_dir)
    meta = json.loads((run_dir / "checkpoints" / "iter_0000006" / "meta.json").read_text())
    assert meta["optimizer_step"] == 6
    second = train(run_dir)
    assert second.returncode == 0, second.stderr[-4000:]
    want, got = _losses(ref_dir), _losses(run_dir)
    for step in range(7, 13):
        assert got[step] == want[step], f"step {step}: resumed {got[step]} vs uninterrupted {want[step]}"
