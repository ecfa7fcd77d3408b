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

RoPE. megatron-core 0.16.1's unfused rotary embedding (`rope_utils._apply_rotary_pos_emb_bshd`, used when
`apply_rope_fusion` is off) computes `t * cos + cat(-t2, t1) * sin` and then `cat((t, t_pass))` with an empty
`t_pass`: a chunk, a negation and two concatenations, each a full copy of the query or key, in the forward and
again in the backward, and cos/sin recomputed for every call. `rope` writes each half of the output from the
two products directly (the same products and sums, in the same dtype, so its values and gradients are
bit-identical to megatron's) and keeps only cos and sin for the backward, which is the same rotation by -theta.
megatron calls a fused RoPE through `rope_utils.fused_apply_rotary_pos_emb` when `apply_rope_fusion` is on; that
hook holds Transformer Engine's kernel when TE is installed, and `install_rope()` puts `rope` there otherwise.

tests/pretrain/test_layers.py checks all three against megatron's or the composed ops (values and gradients)
and counts what RMSNorm and SwiGLU keep for the backward.
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


class _RoPEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        # as megatron: cos and sin of the fp32 angles, cast to t's dtype, then products in t's dtype
        cos, sin = torch.cos(freqs).to(t.dtype), torch.sin(freqs).to(t.dtype)
        ctx.save_for_backward(cos, sin)
        out = torch.empty_like(t, memory_format=torch.contiguous_format)
        _rotate(t, cos, sin, out, inverse=False)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        out = torch.empty_like(grad, memory_format=torch.contiguous_format)
        _rotate(grad, cos, sin, out, inverse=True)
        return out, None


def _rotate(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor, inverse: bool) -> None:
    """out = t * cos + rotate_half(t) * sin on the first cos.shape[-1] channels (rotate_half(t) = [-t2, t1]),
    or its transpose, g * cos + [(g * sin)2, -(g * sin)1], for the backward; the other channels are copied."""
    rot = cos.shape[-1]
    h = rot // 2
    t1, t2, o1, o2 = t[..., :h], t[..., h:rot], out[..., :h], out[..., h:rot]
    c1, c2, s1, s2 = cos[..., :h], cos[..., h:], sin[..., :h], sin[..., h:]
    if not inverse:
        torch.mul(t1, c1, out=o1).sub_(t2 * s1)
        torch.mul(t2, c2, out=o2).add_(t1 * s2)
    else:
        torch.mul(t1, c1, out=o1).add_(t2 * s2)
        torch.mul(t2, c2, out=o2).sub_(t1 * s1)
    if rot < t.shape[-1]:
        out[..., rot:].copy_(t[..., rot:])


def rope(t: torch.Tensor, freqs: torch.Tensor, transpose_output_memory: bool = False,
         interleaved: bool = False) -> torch.Tensor:
    """Rotary embedding of t [s, b, heads, dim] by the angles freqs [s, 1, 1, rot_dim] (rot_dim <= dim, the
    two halves of the rotated channels paired as in megatron's non-interleaved RoPE); the signature of megatron's
    `fused_apply_rotary_pos_emb` hook."""
    if interleaved:
        raise ValueError("pretrain.layers.rope pairs the two halves of the head (rotary_interleaved=False); "
                         "interleaved RoPE needs Transformer Engine's fused kernel")
    if freqs.shape[-1] % 2 or freqs.shape[-1] > t.shape[-1]:
        raise ValueError(f"RoPE angles of {freqs.shape[-1]} channels for heads of {t.shape[-1]}: "
                         "need an even count no larger than the head")
    return _RoPEFunction.apply(t, freqs)


def install_rope() -> None:
    """Make `rope` megatron's fused RoPE when Transformer Engine does not provide one (megatron then uses it
    for every config with `apply_rope_fusion`). Idempotent; TE's kernel, when present, is left in place."""
    from megatron.core.models.common.embeddings import rope_utils

    if rope_utils.fused_apply_rotary_pos_emb is None:
        rope_utils.fused_apply_rotary_pos_emb = rope
