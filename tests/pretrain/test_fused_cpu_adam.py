"""pretrain.optimizer_state.fuse_cpu_adam: megatron's torch AdamW on CPU parameters switches to torch's fused
kernel, with the same updates as the single-tensor path it replaces, a step count where optimizer_step and
set_optimizer_step (resume) find it, and no switch where the kernel does not apply."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from pretrain.optimizer_state import fuse_cpu_adam, optimizer_step, set_optimizer_step


def _megatron_like(params_a, params_b, **kw):
    """Two megatron optimizer wrappers (as in a ChainedOptimizer) around torch AdamW, weight decay on matrices."""
    def adamw(params):
        return torch.optim.AdamW([{"params": [p for p in params if p.dim() > 1]},
                                  {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}],
                                 lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, **kw)
    return SimpleNamespace(chained_optimizers=[SimpleNamespace(optimizer=adamw(params_a)),
                                               SimpleNamespace(optimizer=adamw(params_b))])


def _params(seed: int):
    gen = torch.Generator().manual_seed(seed)
    # odd sizes: the fused kernel's vectorised body and its scalar tail both run
    return [torch.nn.Parameter(torch.randn(shape, generator=gen)) for shape in ((37, 19), (19,), (8, 8))]


def test_fused_updates_match_the_single_tensor_path():
    ref_a, ref_b, new_a, new_b = _params(0), _params(1), _params(0), _params(1)
    ref = _megatron_like(ref_a, ref_b, foreach=False)
    new = _megatron_like(new_a, new_b)
    assert fuse_cpu_adam(new) == 2
    for opt in new.chained_optimizers:
        assert all(g["fused"] and not g["foreach"] for g in opt.optimizer.param_groups)
    gen = torch.Generator().manual_seed(2)
    for step in range(1, 6):
        for p, q in zip(ref_a + ref_b, new_a + new_b):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        for opt in (ref, new):
            for o in opt.chained_optimizers:
                o.optimizer.step()
        for p, q in zip(ref_a + ref_b, new_a + new_b):
            torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)
        assert optimizer_step(new) == optimizer_step(ref) == step


def test_resume_sets_a_step_the_fused_kernel_reads():
    a, b = _params(0), _params(1)
    opt = _megatron_like(a, b)
    fuse_cpu_adam(opt)
    for p in a + b:
        p.grad = torch.ones_like(p)
    for o in opt.chained_optimizers:
        o.optimizer.step()
    set_optimizer_step(opt, 41)  # what a resume does after restoring the moments
    for o in opt.chained_optimizers:
        o.optimizer.step()
    assert optimizer_step(opt) == 42


def test_no_switch_where_the_fused_kernel_does_not_apply():
    meta = [torch.nn.Parameter(torch.empty(4, 4, device="meta"))]  # not on the CPU (as CUDA params would be)
    stub = SimpleNamespace(optimizer=torch.optim.AdamW(_params(0)), is_stub_optimizer=True)
    group_step = SimpleNamespace(optimizer=torch.optim.SGD(_params(0), lr=0.1))  # not torch's Adam(W)
    opt = SimpleNamespace(chained_optimizers=[SimpleNamespace(optimizer=torch.optim.AdamW(meta)), stub, group_step])
    assert fuse_cpu_adam(opt) == 0
    assert not any(g.get("fused") for o in opt.chained_optimizers for g in o.optimizer.param_groups)


def test_describe_names_the_kernel():
    from pretrain.optimizer_state import describe

    opt = _megatron_like(_params(0), _params(1))
    assert describe(opt) == "torch AdamW"
    fuse_cpu_adam(opt)
    assert describe(opt) == "torch AdamW (fused)"
