"""The pieces of our layer spec that megatron-core's local spec does not have: RMSNorm and SwiGLU, each a plain
autograd function that keeps less for the backward than the composed ops it replaces.

RMSNorm. A composed `x * rsqrt(mean(x^2) + eps) * w` makes autograd keep the input and the normalised input (the
output is kept by the next linear anyway). `RMSNorm` keeps the input and the per-row rsqrt and recomputes the
normalised input in the backward: one hidden-sized tensor per norm fewer. Its weight is marked for megatron's
tensor-parallel gradient all-reduce under sequence parallelism (megatron's WrappedTorchNorm refuses sequence
parallelism; Transformer Engine's norm is GPU-only). Maths in fp32 whatever the input dtype, as before.

SwiGLU. megatron-core 0.16.1's unfused gated MLP (`MLP.forward`, the `glu` closure) computes
`silu(x_glu) * (x_linear + glu_linear_offset)`: autograd then keeps the fc1 output, the silu output and the
`x_linear + 0.0` copy (2x the fc1 output's size in all). Its fused alternative (`bias_activation_fusion`) is
compiled with `torch.compile`, which on a CPU means a C++ toolchain and a long first step. `SwiGLU` keeps the fc1
output alone and recomputes silu(gate) in the backward, with aten's fused `silu_backward`: four elementwise
passes over the fc1 output in all, one more than the composed backward (which keeps the silu output instead).
The layer spec passes it as the MLP's `activation_func` submodule, which megatron's MLP applies to the whole
fc1 output when `config.use_te_activation_func` is set (the hook exists for Transformer Engine's activations;
this module is ours and runs anywhere). Under tensor parallelism each rank's fc1 output holds its gate half
then its up half (megatron's stride-2 split of fc1), as the unfused path assumes.

tests/pretrain/test_layers.py checks both against the composed ops (values and gradients) and counts what each
keeps for the backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.transformer_config import TransformerConfig


def _up(t: torch.Tensor) -> torch.Tensor:
    """fp32 for half-precision tensors (the norm's maths), as is otherwise."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        xf = _up(x)
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True).add_(eps))
        ctx.save_for_backward(x, rstd, weight)
        return (xf * rstd).mul_(_up(weight)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, rstd, weight = ctx.saved_tensors
        xhat = _up(x) * rstd
        g = _up(grad)
        d_weight = (g * xhat).reshape(-1, xhat.shape[-1]).sum(0) if ctx.needs_input_grad[1] else None
        d_xhat = g * _up(weight)
        # d x = rstd * (d_xhat - xhat * mean(d_xhat * xhat))
        proj = (d_xhat * xhat).mean(-1, keepdim=True)
        d_x = d_xhat.sub_(xhat.mul_(proj)).mul_(rstd)
        return d_x.to(x.dtype), (d_weight.to(weight.dtype) if d_weight is not None else None), None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2, last dim) + eps) * weight, in fp32, returned in x's dtype."""
    return _RMSNormFunction.apply(x, weight, eps)


class RMSNorm(torch.nn.Module):
    """megatron norm module (built with the TransformerConfig, the hidden size and eps)."""

    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        # finalize_model_grads all-reduces, over the TP group, the grads of params marked sequence_parallel.
        setattr(self.weight, "sequence_parallel", config.sequence_parallel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class _SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:
        gate, up = y.chunk(2, dim=-1)
        ctx.save_for_backward(y)
        return F.silu(gate).mul_(up)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        gate, up = y.chunk(2, dim=-1)
        out = torch.empty_like(y)
        d_gate, d_up = out.chunk(2, dim=-1)
        torch.mul(grad, F.silu(gate), out=d_up)
        # d_gate = grad * up * silu'(gate), silu' by aten's fused silu_backward, written in place: four
        # elementwise passes over the fc1 output in all
        torch.mul(grad, up, out=d_gate)
        torch.ops.aten.silu_backward.grad_input(d_gate, gate, grad_input=d_gate)
        return out


def swiglu(y: torch.Tensor) -> torch.Tensor:
    """silu(first half of the last dim) * second half; saves only `y` for the backward."""
    return _SwiGLUFunction.apply(y)


class SwiGLU(torch.nn.Module):
    """megatron MLP `activation_func` submodule: built with the TransformerConfig, called on fc1's output."""

    def __init__(self, config: TransformerConfig | None = None):
        super().__init__()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return swiglu(y)
