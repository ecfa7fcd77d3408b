"""Run megatron-core 0.16.1 on CPU with gloo.

megatron-core is written for CUDA and offers no CPU path, but CI and laptops have no GPU and every parallel code
path (TP, PP, VPP, DP, the distributed optimizer) must be tested. `enable()` installs the patches below; it is
called by pretrain.runtime only when no CUDA device is present, so GPU runs are untouched.
Each patch names the megatron call that needs it. The pin megatron-core==0.16.1 keeps this list honest: the
tests run megatron's own schedules, DDP and optimizers through it.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode

_ENABLED = False  # idempotence guard only: enable() may be called once per process by several entry points


def _is_cuda(device) -> bool:
    if device is None:
        return False
    if isinstance(device, int):  # torch.cuda.current_device() returns 0, passed as device=0
        return True
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return False


class _CudaToCpu(TorchFunctionMode):
    """Redirect tensor factories and moves that name a CUDA device to the CPU.

    Needed by megatron calls such as torch.empty(..., device=torch.cuda.current_device()) in
    tensor_parallel.layers (weight allocation), torch.zeros(..., device='cuda') in optimizer.clip_grads and
    distributed.param_and_grad_buffer, torch.tensor(..., device='cuda') in pipeline_parallel.schedules and
    p2p_communication, and tensor.cuda() / tensor.to('cuda') in the data and loss paths.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # every torch call of the process passes here (about 4,000 per training step of the 125m shape): the
        # common case, no keyword device and none of the methods below, returns at once
        if not kwargs and func not in _METHODS:
            return func(*args)
        kwargs = dict(kwargs or {})
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
        if func is torch.Tensor.pin_memory:  # no pinned memory without CUDA
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            # Type-string checks: optimizer.clip_grads.clip_grad_by_total_norm_fp32 asserts
            # param.grad.type() == 'torch.cuda.FloatTensor'; optimizer.distrib_optimizer and
            # optimizer.optimizer.Float16OptimizerWithFloat16Params accept only 'torch.cuda.*Tensor' params.
            name = func(*args)
            return name.replace("torch.", "torch.cuda.", 1) if not name.startswith("torch.cuda.") else name
        return func(*args, **kwargs)


_METHODS = frozenset({torch.Tensor.cuda, torch.Tensor.to, torch.Tensor.pin_memory, torch.Tensor.type})


class _NullStream:
    """torch.cuda.Stream stand-in: megatron's p2p_communication and DDP bucket code wait on streams."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def record_event(self, *args, **kwargs):
        return _NullEvent()

    def wait_event(self, *args, **kwargs):
        pass


class _NullEvent:
    def __init__(self, *args, **kwargs):
        pass

    def record(self, *args, **kwargs):
        pass

    def wait(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def query(self):
        return True

    def elapsed_time(self, other):
        return 0.0


def enable() -> None:
    """Install the CPU patches (idempotent). Call before building any megatron object."""
    global _ENABLED
    if _ENABLED:
        return
    if torch.cuda.is_available():
        raise RuntimeError("pretrain.cpu.enable() is for machines without CUDA; a CUDA device is present")

    # torch.cuda.current_device(): called in ~100 places as a device argument (e.g.
    # tensor_parallel.layers.ColumnParallelLinear weight allocation, and inside autograd backward functions
    # such as LinearWithGradAccumulationAndAsyncCommunication.backward under sequence parallelism, where
    # torch-function modes are not active). Returning the CPU device makes those calls right by themselves.
    torch.cuda.current_device = lambda: torch.device("cpu")
    torch.cuda.device_count = lambda: 1
    torch.cuda.set_device = lambda *a, **k: None
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.empty_cache = lambda: None
    # p2p_communication / DDP overlap code create and wait on CUDA streams and events.
    torch.cuda.Stream = _NullStream
    torch.cuda.Event = _NullEvent
    torch.cuda.current_stream = lambda *a, **k: _NullStream()
    torch.cuda.default_stream = lambda *a, **k: _NullStream()
    torch.cuda.stream = lambda *a, **k: contextlib.nullcontext()
    torch.cuda.memory_allocated = lambda *a, **k: 0
    torch.cuda.max_memory_allocated = lambda *a, **k: 0
    # tensor_parallel.random.CudaRNGStatesTracker (add/fork) and model_parallel_cuda_manual_seed keep named
    # CUDA RNG states; on CPU the same bookkeeping works on the CPU generator, whose state dropout draws from.
    torch.cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()
    torch.cuda.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    torch.cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(seed)
    torch.cuda.manual_seed_all = lambda seed: None  # torch.manual_seed calls it; the CPU seed is already set

    from megatron.core.tensor_parallel import random as tp_random

    tp_random._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    tp_random._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)

    _CudaToCpu().__enter__()  # stays active for the life of the process
    _ENABLED = True

