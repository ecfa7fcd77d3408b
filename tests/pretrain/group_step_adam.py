"""`python -m tests.pretrain.group_step_adam <trainer overrides>`: the trainer with an AdamW that keeps its step
count in the param group, as apex's and Transformer Engine's FusedAdam do (megatron-core picks those before
torch's AdamW when they are installed; neither runs on CPU). The update is AdamW's."""

from __future__ import annotations

import math

import torch


class GroupStepAdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, **_):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if not group["params"]:
                continue
            group["step"] = group.get("step", 0) + 1
            t, (b1, b2) = group["step"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (v / (1 - b2 ** t)).sqrt_().add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"] / (1 - b1 ** t))


if __name__ == "__main__":
    import megatron.core.optimizer as megatron_optimizer

    megatron_optimizer.Adam = GroupStepAdamW  # what megatron builds when TE or apex is installed
    megatron_optimizer.USING_PYTORCH_OPTIMIZER = False
    print("optimizer: GroupStepAdamW (step in the param group)", flush=True)
    from pretrain.train import main

    main()
