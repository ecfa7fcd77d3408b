"""What must never happen silently: a NaN/inf step reaching the weights or a checkpoint, and a resume under a
config that rewrites what was already trained (batch, data, schedule)."""

from __future__ import annotations

import math

import pytest
import torch

from pretrain.checkpoint_reader import CheckpointReader
from pretrain.rundir import EXIT_CONFIG, EXIT_DIVERGED, RunDir
from tests.conftest import run_trainer

COMMON = ["model=tiny", "train.iters=6", "train.global_batch_size=4", "train.micro_batch_size=2",
          "train.eval_iters=0", "train.save_interval=1", "optim.warmup_iters=1", "logging.wandb.mode=disabled"]


@pytest.mark.slow
def test_a_nonfinite_step_is_skipped_and_never_reaches_the_weights(tiny_shards, tmp_path):
    proc = run_trainer(1, [*COMMON, *tiny_shards, f"run.dir={tmp_path}", "train.inject_nonfinite_at=[3]"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["step"]: r for r in RunDir(tmp_path).metrics()}
    assert rows[3]["skipped"] == 1 and rows[3]["loss"] is None  # NaN is written as null
    assert all(rows[k]["skipped"] == 0 and math.isfinite(rows[k]["loss"]) for k in (1, 2, 4, 5, 6))
    assert rows[6]["skipped_total"] == 1
    assert not (tmp_path / "checkpoints" / "iter_0000003").exists()  # no checkpoint during a non-finite run
    ckpt = CheckpointReader.open(tmp_path / "checkpoints" / "iter_0000004")
    assert ckpt.meta["optimizer_step"] == 3  # Adam did not step at 3
    for name, t in ckpt.model_state_dict().items():
        assert t.isfinite().all(), name
    assert "update skipped" in proc.stdout


@pytest.mark.slow
def test_nonfinite_steps_in_a_row_stop_the_run_naming_the_last_good_checkpoint(tiny_shards, tmp_path):
    proc = run_trainer(1, [*COMMON, *tiny_shards, f"run.dir={tmp_path}", "train.inject_nonfinite_at=[3,4]",
                           "train.max_nonfinite_in_a_row=2"])
    assert proc.returncode == EXIT_DIVERGED, proc.stderr[-3000:]
    exit_info = RunDir(tmp_path).read_exit()
    assert exit_info["reason"] == "diverged" and exit_info["step"] == 4
    assert "iter_0000002" in exit_info["message"] and "iter_0000002" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("iter_*")) == ["iter_0000001", "iter_0000002"]
    assert not (tmp_path / "finished.json").exists()
    again = run_trainer(1, [*COMMON, *tiny_shards, f"run.dir={tmp_path}"])  # resumes from the good one
    assert again.returncode == 0 and "step 2" in again.stdout, again.stderr[-3000:]


@pytest.mark.slow
def test_resume_refuses_a_config_that_changes_the_past(tiny_shards, tmp_path):
    run = [*COMMON, *tiny_shards, f"run.dir={tmp_path}"]
    assert run_trainer(1, run).returncode == 0
    batch = run_trainer(1, [*run, "train.iters=8", "optim.decay_iters=6", "train.global_batch_size=8"])
    assert batch.returncode == EXIT_CONFIG
    assert "train.global_batch_size: 4 -> 8" in batch.stderr and "run.force_resume=true" in batch.stderr
    assert RunDir(tmp_path).read_exit()["reason"] == "config"
    # extending a finished run: a longer train.iters would stretch the LR schedule of steps already trained
    longer = run_trainer(1, [*run, "train.iters=8"])
    assert longer.returncode == EXIT_CONFIG and "optim.decay_iters=6" in longer.stderr, longer.stderr[-2000:]
    kept = run_trainer(1, [*run, "train.iters=8", "optim.decay_iters=6"])
    assert kept.returncode == 0, kept.stderr[-3000:]
    rows = {r["step"]: r for r in RunDir(tmp_path).metrics()}
    assert sorted(rows) == list(range(1, 9))
    assert rows[7]["lr"] == rows[8]["lr"] == pytest.approx(3e-4)  # past the horizon: min_lr
    forced = run_trainer(1, [*run, "train.iters=10", "optim.decay_iters=6", "train.global_batch_size=8",
                             "run.force_resume=true"])
    assert forced.returncode == 0 and "force_resume" in forced.stdout, forced.stderr[-3000:]


def test_clip_by_total_norm_scales_in_place_like_megatron():
    from pretrain.train import clip_by_total_norm_

    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(64, 32, generator=gen), torch.randn(32, generator=gen), torch.randn(7, 5, generator=gen)]
    total = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))
    coeff = 1.0 / (total + 1.0e-6)  # megatron's clip_grad_by_total_norm_fp32: grad * (max_norm / (norm + 1e-6))
    expected = [g * coeff for g in grads]
    ptrs = [g.data_ptr() for g in grads]
    clip_by_total_norm_([grads[0], None, grads[1], grads[2]], max_norm=1.0, total_norm=total)
    assert [g.data_ptr() for g in grads] == ptrs
    assert all(torch.equal(g, e) for g, e in zip(grads, expected))
    assert abs(float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))) - 1.0) < 1e-5
    before = [g.clone() for g in grads]
    clip_by_total_norm_(grads, max_norm=2.0, total_norm=1.0)  # under the limit: untouched
    assert all(torch.equal(g, b) for g, b in zip(grads, before))
