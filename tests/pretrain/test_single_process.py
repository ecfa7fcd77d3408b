"""One process trains without megatron's DistributedDataParallel (pretrain.model.SingleProcessModel, plain
`.grad`s freed before each forward) and gets the very same run: the fp32 losses and grad norms of a run with
gradient accumulation equal, bit for bit, those of the same run under megatron's DDP (parallel.ddp=always), and
so do the weights of the final checkpoint. Real trainer processes."""

from __future__ import annotations

import pytest
import torch

from pretrain import config as C
from pretrain.checkpoint_reader import CheckpointReader
from pretrain.layout import Layout
from pretrain.metrics import read_metrics
from pretrain.train import uses_megatron_ddp
from tests.conftest import run_trainer

COMMON = ["model=tiny", "train.iters=6", "train.global_batch_size=8", "train.micro_batch_size=2",
          "train.eval_iters=1", "train.eval_interval=3", "train.save_interval=6", "optim.warmup_iters=2",
          "logging.wandb.mode=disabled"]


def _run(tiny_shards, run_dir, extra: list[str]) -> tuple[list[dict], str]:
    proc = run_trainer(1, [*COMMON, *tiny_shards, *extra, f"run.dir={run_dir}"])
    assert proc.returncode == 0, f"{extra} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return list(read_metrics(run_dir / "metrics.jsonl")), proc.stdout


def _assert_same_steps(plain: list[dict], ddp: list[dict]) -> None:
    for a, b in zip(plain, ddp, strict=True):
        for key in ("loss", "grad_norm", "val_loss"):
            assert a.get(key) == b.get(key), f"step {a['step']}: {key} {a.get(key)} vs {b.get(key)} under DDP"


@pytest.mark.slow
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_single_process_matches_megatron_ddp_bit_for_bit(tiny_shards, tmp_path, tied):
    extra = [f"model.untie_embeddings={str(not tied).lower()}"]
    plain, out_plain = _run(tiny_shards, tmp_path / "plain", extra)
    ddp, out_ddp = _run(tiny_shards, tmp_path / "ddp", [*extra, "parallel.ddp=always"])
    assert "SingleProcessModel" in out_plain and "DistributedDataParallel" in out_ddp
    assert plain[-1]["loss"] < plain[0]["loss"] - 0.2, f"the run does not learn: {[r['loss'] for r in plain]}"
    _assert_same_steps(plain, ddp)
    weights = [CheckpointReader.open(tmp_path / d).model_state_dict() for d in ("plain", "ddp")]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), f"{name} differs after 6 steps"


def _layout(world: int = 1, micro: int = 1, dist_opt: bool = False) -> Layout:
    return Layout(tp=1, pp=1, vpp=None, dp=world, micro_batch_size=1, global_batch_size=micro * world,
                  distributed_optimizer=dist_opt)


@pytest.mark.parametrize("mode, layout, bf16, megatron", [
    ("auto", _layout(), False, False),
    ("auto", _layout(micro=4), False, False),  # fp32 .grads sum micro-batches as exactly as DDP's fp32 buffer
    ("auto", _layout(), True, False),  # one bf16 micro-batch: its grads go to the fp32 main grads unrounded
    ("auto", _layout(micro=4), True, True),  # bf16 partial sums would round: megatron's fp32 buffer
    ("auto", _layout(world=2), False, True),
    ("auto", _layout(dist_opt=True), False, True),
    ("always", _layout(), False, True),
])
def test_when_megatron_ddp_wraps_the_model(mode, layout, bf16, megatron):
    cfg = C.PretrainConfig()
    cfg.parallel.ddp = mode
    assert uses_megatron_ddp(cfg, layout, bf16) is megatron


def test_unknown_ddp_mode_is_refused():
    cfg = C.PretrainConfig()
    cfg.parallel.ddp = "never"
    with pytest.raises(C.ConfigError, match=r"parallel.ddp: unknown mode 'never'.*Fix: use one of \['auto', 'always'\]"):
        C._validate_performance(cfg)


@pytest.mark.slow
def test_single_process_bf16_one_micro_batch_matches_megatron_ddp(tiny_shards, tmp_path):
    """bf16 (megatron's Float16Module and fp32 main weights) with one micro-batch per step: the bf16 `.grad`
    reaches the fp32 main grads unrounded, as through DDP's fp32 buffer, so the runs are identical too."""
    extra = ["train.bf16=true", "train.global_batch_size=4", "train.micro_batch_size=4"]
    plain, out_plain = _run(tiny_shards, tmp_path / "plain", extra)
    ddp, out_ddp = _run(tiny_shards, tmp_path / "ddp", [*extra, "parallel.ddp=always"])
    assert "bf16, SingleProcessModel" in out_plain and "bf16, DistributedDataParallel" in out_ddp
    _assert_same_steps(plain, ddp)
