"""Activation recomputation and communication overlap change memory and time, never the numbers: losses with
selective / full recompute, and with grad-reduce + param-gather overlap (distributed optimizer, DP2), equal
the plain run's (real trainer processes, fp32 on CPU). Wrong combinations fail validation with key and fix."""

from __future__ import annotations

import importlib.util

import pytest

from pretrain import config as C
from tests.pretrain.test_attention import train_losses


def _same(ref: list[float], got: list[float], what: str, rel: float = 1e-6) -> None:
    assert len(ref) == len(got)
    for step, (a, b) in enumerate(zip(ref, got), start=1):
        assert abs(a - b) <= rel * abs(a), f"{what} step {step}: loss {b} vs {a}"


@pytest.mark.slow
def test_recompute_keeps_losses(tiny_shards, tmp_path):
    ref = train_losses(tiny_shards, tmp_path / "ref", 1, [])
    selective = train_losses(tiny_shards, tmp_path / "sel", 1, [
        "parallel.recompute.granularity=selective", "parallel.recompute.modules=[core_attn,mlp]"])
    full = train_losses(tiny_shards, tmp_path / "full", 1, [
        "parallel.recompute.granularity=full", "parallel.recompute.method=uniform",
        "parallel.recompute.num_layers=2"])
    assert ref[-1] < ref[0] - 0.3, f"the reference run does not learn: {ref}"
    _same(ref, selective, "selective recompute")
    _same(ref, full, "full recompute")


@pytest.mark.slow
def test_overlap_keeps_losses(tiny_shards, tmp_path):
    base = ["parallel.distributed_optimizer=true"]
    plain = train_losses(tiny_shards, tmp_path / "plain", 2, base)
    overlap = train_losses(tiny_shards, tmp_path / "overlap", 2, [
        *base, "parallel.overlap_grad_reduce=true", "parallel.overlap_param_gather=true"])
    _same(plain, overlap, "overlap_grad_reduce + overlap_param_gather", rel=1e-5)


def _cfg(**parallel) -> C.PretrainConfig:
    cfg = C.PretrainConfig()
    for k, v in parallel.items():
        if k.startswith("recompute_"):
            setattr(cfg.parallel.recompute, k[len("recompute_"):], v)
        else:
            setattr(cfg.parallel, k, v)
    return cfg


@pytest.mark.parametrize("kwargs, message", [
    (dict(recompute_granularity="layer"), r"parallel.recompute.granularity: unknown granularity 'layer'"),
    (dict(recompute_granularity="full", recompute_num_layers=5),
     r"parallel.recompute.num_layers: 5 is not between 1 and the 4 layers.*Fix: set parallel.recompute.num_layers"),
    (dict(recompute_granularity="full", recompute_num_layers=3),
     r"uniform recompute groups of 3 layers do not tile.*parallel.recompute.method=block"),
    (dict(recompute_granularity="full", recompute_method="blocks"), r"parallel.recompute.method: unknown method"),
    (dict(recompute_granularity="selective", recompute_modules=["moe"]),
     r"parallel.recompute.modules: \['moe'\] is not a non-empty subset"),
    pytest.param(dict(recompute_granularity="selective", recompute_modules=["layernorm"]),
                 r"parallel.recompute.modules: layernorm recompute needs Transformer Engine",
                 marks=pytest.mark.skipif(importlib.util.find_spec("transformer_engine") is not None,
                                          reason="Transformer Engine is installed here")),
    (dict(overlap_param_gather=True, overlap_grad_reduce=True),
     r"parallel.overlap_param_gather: .*distributed optimizer.*Fix: set parallel.distributed_optimizer=true"),
    (dict(overlap_param_gather=True, distributed_optimizer=True),
     r"parallel.overlap_param_gather: needs parallel.overlap_grad_reduce=true"),
])
def test_bad_recompute_and_overlap_config(kwargs, message):
    with pytest.raises(C.ConfigError, match=message):
        C._validate_performance(_cfg(**kwargs))
