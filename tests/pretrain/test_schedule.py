"""The LR schedule against closed forms: step k trains at lr(k) (step 1 is not at lr=0), for warmup + cosine,
WSD, linear and constant; and a real run logs, at every step, the lr that step trained with."""

from __future__ import annotations

import math

import pytest
import torch

from pretrain.config import PretrainConfig
from pretrain.metrics import read_metrics
from pretrain.schedule import build_scheduler, set_step
from tests.conftest import run_trainer

LR, MIN_LR, W, T = 1e-3, 1e-4, 4, 20


def closed_form(decay: str, k: int, horizon: int = T, wsd_fraction: float = 0.25) -> float:
    if k <= W:
        return LR * k / W
    if decay == "constant":
        return LR
    if k > horizon:
        return MIN_LR
    ratio = (k - W) / (horizon - W)
    if decay == "cosine":
        return MIN_LR + (LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi * ratio))
    if decay == "linear":
        return MIN_LR + (LR - MIN_LR) * (1 - ratio)
    decay_steps = int(wsd_fraction * horizon)  # wsd: flat, then linear over the last decay_steps
    start = horizon - decay_steps
    return LR if k <= start else MIN_LR + (LR - MIN_LR) * (1 - (k - start) / decay_steps)


def _cfg(decay: str, decay_iters=None) -> PretrainConfig:
    cfg = PretrainConfig()
    cfg.train.iters = T
    o = cfg.optim
    o.lr, o.min_lr, o.warmup_iters, o.decay, o.decay_iters, o.wsd_decay_fraction = LR, MIN_LR, W, decay, decay_iters, 0.25
    return cfg


@pytest.mark.parametrize("decay", ["cosine", "wsd", "linear", "constant"])
def test_schedule_matches_closed_form(decay):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    sched = build_scheduler(opt, _cfg(decay))
    for k in range(1, T + 1):
        lr = set_step(sched, k)
        assert lr == pytest.approx(closed_form(decay, k), rel=1e-12, abs=1e-15), f"{decay} step {k}"
        assert opt.param_groups[0]["lr"] == pytest.approx(lr)
    assert set_step(sched, 1) == pytest.approx(LR / W)  # never 0 at step 1
    if decay != "constant":
        assert set_step(sched, T) == pytest.approx(MIN_LR)


def test_decay_iters_keeps_the_schedule_past_its_horizon():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    cfg = _cfg("cosine", decay_iters=10)
    cfg.train.iters = 30
    sched = build_scheduler(opt, cfg)
    for k in range(1, 31):
        assert set_step(sched, k) == pytest.approx(closed_form("cosine", k, horizon=10)), k
    assert set_step(sched, 25) == pytest.approx(MIN_LR)


@pytest.mark.slow
def test_logged_lr_is_the_lr_the_step_trained_with(tiny_shards, tmp_path):
    proc = run_trainer(1, ["model=tiny", f"train.iters={T}", "train.global_batch_size=4", "train.micro_batch_size=4",
                           "train.eval_iters=0", "train.save_interval=1000", f"optim.lr={LR}", f"optim.min_lr={MIN_LR}",
                           f"optim.warmup_iters={W}", "logging.wandb.mode=disabled", *tiny_shards,
                           f"run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, T + 1))
    for r in rows:
        assert r["lr"] == pytest.approx(closed_form("cosine", r["step"]), rel=1e-9), r["step"]
