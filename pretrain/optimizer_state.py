"""Adam state per model parameter, in the parameter's own (TP-local) shape, whatever optimizer holds it.

megatron-core wraps one of three Adam implementations: Transformer Engine's FusedAdam, apex's FusedAdam (both
picked first when installed, the NGC default) or torch's AdamW. They keep the step count in different places:
torch in every parameter's state (`state[p]["step"]`, a tensor), the fused ones in the param group
(`group["step"]`, an int). `optimizer_step` reads it from wherever it lives and `set_optimizer_step` writes it
back there, so a resumed run continues Adam's bias correction instead of restarting it.

With megatron's distributed optimizer (ZeRO-1) each data-parallel rank holds a contiguous range of every
parameter's flattened main weights and moments. `dp_shard` gives that range as it is held (no communication:
what the dcp format writes and reads on each rank); `local_tensors` assembles the whole TP-local tensor (a
collective over the data-parallel group, for the full format) and `set_local_tensors` keeps this rank's range.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from megatron.core import parallel_state

STATE_KEYS = ("exp_avg", "exp_avg_sq")


def sub_optimizers(optimizer) -> list:
    """The megatron optimizers inside a ChainedOptimizer (one per model-chunk group), or the optimizer."""
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def _keeps_param_step(inner: torch.optim.Optimizer) -> bool:
    return isinstance(inner, (torch.optim.Adam, torch.optim.AdamW))


def fuse_cpu_adam(optimizer) -> int:
    """Switch megatron's torch AdamW (its fallback without Transformer Engine or apex) to torch's fused kernel
    where all its parameters are on the CPU: one pass over weights, grads and moments instead of the
    single-tensor path's six (torch picks neither foreach nor fused by itself for CPU tensors). megatron does the
    same for its own CPU optimizer (`fused=True` under optimizer_cpu_offload), and transformers' Trainer defaults
    to it. The same update rule; the step count stays a float32 tensor on the parameter's device, as before.
    Returns how many optimizers were switched."""
    switched = 0
    for opt in sub_optimizers(optimizer):
        inner = getattr(opt, "optimizer", None)
        if not _keeps_param_step(inner) or getattr(opt, "is_stub_optimizer", False):
            continue
        params = [p for g in inner.param_groups for p in g["params"]]
        if not params or any(p.device.type != "cpu" or not p.is_floating_point() for p in params):
            continue
        if any(g.get("differentiable") or g.get("capturable") for g in inner.param_groups):
            continue  # torch's fused kernel refuses both
        for group in [*inner.param_groups, inner.defaults]:
            group["foreach"], group["fused"] = False, True
        switched += 1
    return switched


def describe(optimizer) -> str:
    """The Adam implementation megatron built, for the trainer's start line: e.g. `torch AdamW (fused)`,
    `transformer_engine FusedAdam`."""
    inner = getattr(sub_optimizers(optimizer)[0], "optimizer", None)
    if inner is None:
        return "no optimizer"
    group = inner.param_groups[0] if inner.param_groups else {}
    kernel = " (fused)" if group.get("fused") else " (foreach)" if group.get("foreach") else ""
    return f"{type(inner).__module__.split('.')[0]} {type(inner).__name__}{kernel}"


def optimizer_step(optimizer) -> int:
    """How many updates Adam has applied (0 before the first); the same on every rank."""
    steps = set()
    for opt in sub_optimizers(optimizer):
        inner = opt.optimizer
        if _keeps_param_step(inner):
            steps.update(int(s["step"]) for s in inner.state.values() if "step" in s)
        else:
            steps.update(int(g["step"]) for g in inner.param_groups if g["params"] and "step" in g)
    if len(steps) > 1:
        raise RuntimeError(f"optimizer parameter groups disagree on the step count: {sorted(steps)}")
    return steps.pop() if steps else 0


def set_optimizer_step(optimizer, step: int) -> None:
    """Write the step count where this optimizer reads it (call after the moments are restored)."""
    for opt in sub_optimizers(optimizer):
        inner = opt.optimizer
        if _keeps_param_step(inner):
            for state in inner.state.values():
                state["step"] = torch.tensor(float(step))
        else:
            for group in inner.param_groups:
                if group["params"]:
                    group["step"] = int(step)


def _is_distributed(opt) -> bool:
    return hasattr(opt, "model_param_gbuf_map")


def _main_param_map(opt) -> dict:
    """model param -> fp32 main param, for megatron's non-distributed optimizers."""
    mapping = {}
    for model_group, main_group in zip(getattr(opt, "float16_groups", []),
                                       getattr(opt, "fp32_from_float16_groups", [])):
        mapping.update({id(m): p for m, p in zip(model_group, main_group)})
    for group in opt.optimizer.param_groups:
        for p in group["params"]:
            mapping.setdefault(id(p), p)
    return mapping


@dataclass
class Owner:
    """The megatron optimizer that updates a model parameter."""
    opt: object
    distributed: bool
    main: dict


def owners(optimizer, params) -> dict[int, Owner]:
    """id(model param) -> Owner, for the ParamInfos `params` of this rank."""
    out = {}
    for opt in sub_optimizers(optimizer):
        if _is_distributed(opt):
            # model_param_gbuf_map holds only the params whose range overlaps this rank's shard; the others
            # are still this optimizer's (held by other data-parallel ranks), so it owns every param left over.
            for info in params:
                out.setdefault(id(info.param), Owner(opt, True, {}))
        else:
            main = _main_param_map(opt)
            for info in params:
                if id(info.param) in main:
                    out[id(info.param)] = Owner(opt, False, main)
    return out


def dp_shard(owner: Owner, param: torch.nn.Parameter, for_load: bool = False):
    """(start, {"main" | state key: 1-D tensor}): the flattened elements [start, start + numel) of `param`'s
    main weights and Adam moments that this rank's distributed optimizer holds, the optimizer's own tensors (no
    copy, no communication); None when this rank holds none of the parameter. A moment not created yet (before
    the first step) is zeros when saving; `for_load` allocates it in the optimizer's state instead, to be read
    into."""
    opt = owner.opt
    if param not in opt.model_param_gbuf_map or param not in opt.model_param_group_index_map:
        return None
    rng = opt._get_model_param_range_map(param)["param"]
    group_index, group_order = opt.model_param_group_index_map[param]
    main = opt.optimizer.param_groups[group_index]["params"][group_order]
    state = opt.optimizer.state.setdefault(main, {})
    out = {"main": main.detach()}
    for k in STATE_KEYS:
        t = state.get(k)
        if t is None:
            t = torch.zeros(rng.end - rng.start, dtype=torch.float32, device=main.device)
            if for_load:
                state[k] = t
        out[k] = t
    return rng.start, out


def moments_for_load(owner: Owner, param: torch.nn.Parameter) -> dict[str, torch.Tensor]:
    """The non-distributed optimizer's param-shaped Adam moments of `param`, to be read into (allocated in the
    optimizer's state when not created yet)."""
    main = owner.main[id(param)]
    state = owner.opt.optimizer.state.setdefault(main, {})
    for k in STATE_KEYS:
        if not (k in state and state[k].shape == main.shape and state[k].dtype == torch.float32):
            state[k] = torch.zeros_like(main, dtype=torch.float32)
    return {k: state[k] for k in STATE_KEYS}


def local_tensors(owner: Owner, param: torch.nn.Parameter) -> dict[str, torch.Tensor]:
    """The param-shaped (TP-local) main weights and Adam moments of one parameter on this rank.
    With the distributed optimizer they are assembled from the data-parallel shards (a collective)."""
    if not owner.distributed:
        main = owner.main[id(param)]
        state = owner.opt.optimizer.state.get(main, {})
        out = {"main": main.detach()}
        for k in STATE_KEYS:
            out[k] = state[k].detach() if k in state else torch.zeros_like(main, dtype=torch.float32)
        return out
    opt = owner.opt
    out = {k: torch.zeros(param.numel(), dtype=torch.float32, device=param.device) for k in ("main",) + STATE_KEYS}
    if param in opt.model_param_gbuf_map and param in opt.model_param_group_index_map:
        rng = opt._get_model_param_range_map(param)["param"]
        tensors = opt._get_main_param_and_optimizer_states(param)
        out["main"][rng.start:rng.end] = tensors["param"].detach().float()
        for k in STATE_KEYS:
            if k in tensors:
                out[k][rng.start:rng.end] = tensors[k].detach().float()
    group = parallel_state.get_data_parallel_group(with_context_parallel=True)
    for k in out:
        torch.distributed.all_reduce(out[k], group=group)
        out[k] = out[k].view(param.shape)
    return out


def set_local_tensors(owner: Owner, param: torch.nn.Parameter, tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of local_tensors: write this rank's part of a parameter's main weights and moments."""
    if not owner.distributed:
        main = owner.main[id(param)]
        main.data.copy_(tensors["main"].to(main.dtype))
        state = owner.opt.optimizer.state.setdefault(main, {})
        for k in STATE_KEYS:
            state[k] = tensors[k].to(device=main.device, dtype=torch.float32).clone()
        return
    opt = owner.opt
    if param not in opt.model_param_gbuf_map or param not in opt.model_param_group_index_map:
        return
    rng = opt._get_model_param_range_map(param)["param"]
    group_index, group_order = opt.model_param_group_index_map[param]
    main = opt.optimizer.param_groups[group_index]["params"][group_order]
    main.data.copy_(tensors["main"].flatten()[rng.start:rng.end].to(main.dtype))
    state = opt.optimizer.state.setdefault(main, {})
    for k in STATE_KEYS:
        state[k] = tensors[k].flatten()[rng.start:rng.end].to(device=main.device, dtype=torch.float32).clone()
