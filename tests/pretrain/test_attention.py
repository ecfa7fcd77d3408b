"""Core attention backends: SDPA (torch scaled_dot_product_attention) trains to the same losses as megatron's
unfused DotProductAttention, single process and under TP2 with sequence parallelism (real trainer processes,
fp32 on CPU); a backend that cannot run here is refused before any work."""

from __future__ import annotations

import pytest

from pretrain import config as C
from pretrain.metrics import read_metrics
from tests.conftest import run_trainer

STEPS = 8
COMMON = ["model=tiny", f"train.iters={STEPS}", "train.global_batch_size=8", "train.micro_batch_size=2",
          "train.eval_iters=0", "train.save_interval=1000", "optim.warmup_iters=2", "logging.wandb.mode=disabled"]


def train_losses(tiny_shards, run_dir, nproc: int, extra: list[str]) -> list[float]:
    proc = run_trainer(nproc, [*COMMON, *tiny_shards, *extra, f"run.dir={run_dir}"])
    assert proc.returncode == 0, f"{extra} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")]


@pytest.mark.slow
def test_sdpa_matches_unfused_attention(tiny_shards, tmp_path):
    local = train_losses(tiny_shards, tmp_path / "local", 1, ["model.attention=local"])
    sdpa = train_losses(tiny_shards, tmp_path / "sdpa", 1, ["model.attention=sdpa"])
    sdpa_tp2 = train_losses(tiny_shards, tmp_path / "sdpa_tp2", 2,
                            ["model.attention=sdpa", "parallel.tp=2", "parallel.sequence_parallel=true"])
    assert len(local) == len(sdpa) == len(sdpa_tp2) == STEPS
    assert local[-1] < local[0] - 0.3, f"the reference run does not learn: {local}"
    for step, (a, b, c) in enumerate(zip(local, sdpa, sdpa_tp2), start=1):
        assert abs(a - b) <= 1e-5 * abs(a), f"step {step}: sdpa loss {b} vs local {a}"
        assert abs(a - c) <= 1e-5 * abs(a), f"step {step}: sdpa tp2 loss {c} vs local {a}"


def _cfg(**model) -> C.PretrainConfig:
    cfg = C.PretrainConfig()
    for k, v in model.items():
        setattr(cfg.model, k, v)
    return cfg


def test_unknown_attention_is_refused():
    with pytest.raises(C.ConfigError, match=r"model.attention: unknown attention 'flash'.*Fix: use one of sdpa"):
        C._validate_performance(_cfg(attention="flash"))


def test_te_without_transformer_engine_names_the_fix():
    import importlib.util

    if importlib.util.find_spec("transformer_engine") is not None:
        pytest.skip("Transformer Engine is installed here")
    with pytest.raises(C.ConfigError, match=r"model.attention: te needs NVIDIA Transformer Engine.*"
                                            r"Fix: pip install .*transformer_engine\[pytorch\].*model.attention=sdpa"):
        C._validate_performance(_cfg(attention="te"))


def test_te_refusal_comes_before_any_work(tiny_shards, tmp_path):
    import importlib.util

    if importlib.util.find_spec("transformer_engine") is not None:
        pytest.skip("Transformer Engine is installed here")
    proc = run_trainer(1, [*COMMON, *tiny_shards, "model.attention=te", f"run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2 and "model.attention: te needs NVIDIA Transformer Engine" in proc.stderr
    assert not (tmp_path / "run").exists()
