"""The validator against megatron-core's own assertions: over a grid of configs, whatever pretrain.config.validate
accepts, megatron's TransformerConfig and OptimizerParamScheduler accept too (so no run passes validation and
then dies on every rank with a bare AssertionError), and what megatron would assert on is refused with the key."""

from __future__ import annotations

import itertools

import pytest
import torch

from pretrain.config import ConfigError, PretrainConfig, validate
from pretrain.model import transformer_config
from pretrain.schedule import build_scheduler


def _cfg(**kv) -> PretrainConfig:
    cfg = PretrainConfig()
    for key, value in kv.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


GRID = {
    "parallel__tp": [1, 2, 3], "parallel__pp": [1, 2], "parallel__vpp": [None, 2],
    "parallel__sequence_parallel": [False, True], "model__num_query_groups": [1, 2, 4],
    "train__iters": [1, 10, 11], "optim__warmup_iters": [0, 10], "optim__decay": ["cosine", "wsd", "constant"],
    "optim__min_lr": [0.0, 3e-3, 1.0],
}


def _accepted_by_megatron(cfg: PretrainConfig) -> str | None:
    try:
        transformer_config(cfg.model, cfg.parallel, bf16=False)
        build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0), cfg)
    except (AssertionError, ValueError, Exception) as e:  # noqa: BLE001 - any failure is a validator gap
        return f"{type(e).__name__}: {e}"
    return None


def test_everything_validate_accepts_megatron_accepts():
    accepted = refused = 0
    keys = list(GRID)
    for values in itertools.product(*GRID.values()):
        cfg = _cfg(**dict(zip(keys, values)))
        world = cfg.parallel.tp * cfg.parallel.pp * 2
        try:
            validate(cfg, world, check_data=False)
        except ConfigError as e:
            assert ". Fix: " in str(e) and str(e).split(":")[0].count(".") == 1, str(e)
            refused += 1
            continue
        accepted += 1
        problem = _accepted_by_megatron(cfg)
        assert problem is None, f"validate accepted {dict(zip(keys, values))} but megatron refuses: {problem}"
    assert accepted > 50 and refused > 50, (accepted, refused)


@pytest.mark.parametrize("overrides,key", [
    ({"train__iters": 10, "optim__warmup_iters": 10}, "optim.warmup_iters"),  # megatron: warmup < decay steps
    ({"optim__decay_iters": 5, "optim__warmup_iters": 5}, "optim.warmup_iters"),
    ({"optim__min_lr": -1.0}, "optim.min_lr"),
    ({"optim__lr": 0.0, "optim__min_lr": 0.0}, "optim.lr"),
    ({"optim__weight_decay": -0.1}, "optim.weight_decay"),
    ({"optim__beta2": 1.0}, "optim.beta2"),
    ({"optim__eps": 0.0}, "optim.eps"),
    ({"optim__decay": "wsd", "optim__wsd_decay_fraction": 0.0}, "optim.wsd_decay_fraction"),
    ({"model__hidden_size": 132, "model__num_attention_heads": 4}, "model.hidden_size"),  # odd head dim (RoPE)
    ({"train__max_nonfinite_in_a_row": 0}, "train.max_nonfinite_in_a_row"),
    ({"run__keep_last": 0}, "run.keep_last"),
    ({"train__eval_tasks": ["lambada"]}, "train.eval_tasks"),
])
def test_refused_with_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(_cfg(**overrides), 1, check_data=False)
    assert str(err.value).startswith(f"{key}:") and "Fix:" in str(err.value)
