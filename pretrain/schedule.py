"""The learning-rate schedule: megatron-core's OptimizerParamScheduler, driven by the step number.

Step k (1-based) trains at lr(k): linear warmup lr(k) = lr * k / W for k <= W (so step 1 already trains, at
lr / W), then decay from lr to min_lr over the horizon H (optim.decay_iters, default the run's train iters):
cosine min_lr + (lr - min_lr) * (1 + cos(pi * (k - W) / (H - W))) / 2, linear, constant (lr), or WSD (lr until
the last wsd_decay_fraction * H steps, then linear to min_lr); past H, min_lr. The logged lr of step k is the
lr step k trained with. tests/pretrain/test_schedule.py checks these closed forms.

Extending a run: the horizon is part of the run's past. Raising train.iters on a finished or resumed run
changes H (when optim.decay_iters is unset) and so the LR of steps already trained; the trainer refuses that
on resume (pretrain.train) unless run.force_resume=true. To extend a run keeping its schedule, set
optim.decay_iters to the original length: the added steps train at min_lr (or use decay=wsd and re-decay).
"""

from __future__ import annotations

from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from pretrain.config import PretrainConfig, decay_iters, wsd_decay_iters

STYLES = {"cosine": "cosine", "wsd": "WSD", "linear": "linear", "constant": "constant"}


def schedule_spec(cfg: PretrainConfig) -> dict:
    """What defines the schedule; recorded in checkpoints and compared on resume."""
    o = cfg.optim
    spec = {"lr": o.lr, "min_lr": o.min_lr, "warmup_iters": o.warmup_iters, "decay": o.decay,
            "decay_iters": decay_iters(cfg), "weight_decay": o.weight_decay}
    if o.decay == "wsd":
        spec["wsd_decay_iters"] = wsd_decay_iters(cfg)
    return spec


def build_scheduler(optimizer, cfg: PretrainConfig) -> OptimizerParamScheduler:
    """A scheduler positioned before step 1; call `set_step(scheduler, k)` before training step k."""
    o = cfg.optim
    style = STYLES[o.decay]
    horizon = decay_iters(cfg)
    return OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=o.lr, min_lr=o.min_lr, lr_warmup_steps=o.warmup_iters,
        lr_decay_steps=horizon, lr_decay_style=style, start_wd=o.weight_decay, end_wd=o.weight_decay,
        wd_incr_steps=horizon, wd_incr_style="constant",
        wsd_decay_steps=wsd_decay_iters(cfg) if style == "WSD" else None,
        lr_wsd_decay_style="linear" if style == "WSD" else None)


def set_step(scheduler: OptimizerParamScheduler, step: int) -> float:
    """Set the optimizer's lr (and weight decay) for training step `step`; returns the lr."""
    scheduler.step(step - scheduler.num_steps)
    return scheduler.get_lr(scheduler.optimizer.param_groups[0])
