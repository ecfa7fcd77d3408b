"""pretrain.layers: RMSNorm and SwiGLU as autograd functions give the composed ops' values and gradients and
keep less for the backward; RoPE is bit-identical to megatron's unfused RoPE; the whole tiny model built with
them matches megatron-core's own local spec."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pretrain.layers import rms_norm, rope, swiglu

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def composed_rms_norm(x, w, eps=1e-5):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)


def megatron_glu(y):  # megatron-core 0.16.1 MLP.forward's unfused glu, glu_linear_offset 0.0
    gate, up = torch.chunk(y, 2, dim=-1)
    return F.silu(gate) * (up + 0.0)


def saved_bytes(fn, *args) -> int:
    seen = {}

    def pack(t):
        if not (t.is_leaf and t.requires_grad):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return sum(seen.values())


def test_gradients_are_exact_in_float64():
    x = torch.randn(3, 2, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: rms_norm(a, b, 1e-5), (x, w))
    y = torch.randn(3, 2, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(swiglu, (y,))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_values_and_gradients_match_the_composed_ops(dtype, tol):
    gen = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(32, 4, 64, generator=gen)).to(dtype).requires_grad_()
    w = (torch.rand(64, generator=gen) + 0.5).to(dtype).requires_grad_()
    g = torch.randn(32, 4, 64, generator=gen).to(dtype)
    for fn, ref, args in ((lambda a, b: rms_norm(a, b, 1e-5), composed_rms_norm, (x, w)),
                          (swiglu, megatron_glu, (x,))):
        out, want = fn(*args), ref(*args)
        assert out.dtype == want.dtype == dtype
        torch.testing.assert_close(out, want, rtol=tol, atol=tol)
        gout = g[..., : out.shape[-1]]
        for a, b in zip(torch.autograd.grad(out, args, gout), torch.autograd.grad(want, args, gout)):
            torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)


def test_they_keep_less_for_the_backward():
    x = torch.randn(256, 4, 768, requires_grad=True) * 1.0  # a non-leaf, as the residual stream is
    w = torch.ones(768, requires_grad=True)
    row = x.numel() * 4  # one hidden-sized fp32 tensor
    assert saved_bytes(lambda: rms_norm(x, w, 1e-5)) == row + 256 * 4 * 4  # the input and the per-row rsqrt
    assert saved_bytes(lambda: composed_rms_norm(x, w)) >= 2 * row
    y = torch.randn(256, 4, 2 * 768, requires_grad=True)
    y1 = y * 1.0  # a non-leaf, as fc1's output is
    assert saved_bytes(lambda: swiglu(y1)) == y.numel() * 4  # fc1's output only
    assert saved_bytes(lambda: megatron_glu(y1)) == 2 * y.numel() * 4  # + silu(gate) and up + 0.0


def rope_angles(s: int, rot_dim: int) -> torch.Tensor:
    """megatron's RotaryEmbedding angles: [s, 1, 1, rot_dim], the two halves equal."""
    inv = 1.0 / (10000 ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim))
    f = torch.outer(torch.arange(s, dtype=torch.float32), inv)
    return torch.cat((f, f), -1)[:, None, None, :]


@pytest.mark.parametrize("rot_dim", [64, 32])  # whole head, and megatron's rotary_percent=0.5
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_is_bit_identical_to_megatrons_unfused_rope(dtype, rot_dim):
    from megatron.core.models.common.embeddings.rope_utils import _apply_rotary_pos_emb_bshd

    gen = torch.Generator().manual_seed(0)
    # query and key as megatron's attention gets them: strided views into the fused QKV projection's output
    qkv = torch.randn(48, 2, 3, 2, 64, generator=gen).to(dtype).requires_grad_()
    freqs = rope_angles(48, rot_dim)
    g = torch.randn(48, 2, 2, 64, generator=gen).to(dtype)
    for t in (qkv[:, :, 0], qkv[:, :, 1]):
        out, want = rope(t, freqs), _apply_rotary_pos_emb_bshd(t, freqs)
        assert out.dtype == dtype and out.is_contiguous()
        assert torch.equal(out, want)
        (got,), (ref,) = torch.autograd.grad(out, qkv, g), torch.autograd.grad(want, qkv, g)
        assert torch.equal(got, ref)


def test_rope_gradient_in_float64_and_what_it_keeps():
    t = torch.randn(6, 2, 3, 8, dtype=torch.float64, requires_grad=True)
    for rot_dim in (8, 4):
        freqs = rope_angles(6, rot_dim).double()
        assert torch.autograd.gradcheck(lambda x: rope(x, freqs), (t,))
    q = torch.randn(256, 4, 12, 64, requires_grad=True) * 1.0
    assert saved_bytes(lambda: rope(q, rope_angles(256, 64))) == 2 * 256 * 64 * 4  # cos and sin only
    with pytest.raises(ValueError, match="interleaved"):
        rope(q, rope_angles(256, 64), interleaved=True)


def test_models_use_it_as_megatrons_fused_rope():
    from megatron.core.models.common.embeddings import rope_utils

    from pretrain import config as C
    from pretrain.model import transformer_config

    cfg = C.load(["model=tiny"])
    assert transformer_config(cfg.model, cfg.parallel, bf16=False).apply_rope_fusion
    # Transformer Engine's kernel when installed (GPU images), ours otherwise
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        assert rope_utils.fused_apply_rotary_pos_emb is rope


@pytest.mark.slow
def test_tiny_model_matches_megatrons_local_spec(tmp_path):
    out = tmp_path / "layers.json"
    proc = subprocess.run([sys.executable, "-m", "tests.pretrain.layers_model", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    ours, theirs = res["ours"], res["theirs"]
    assert abs(ours["loss"] - theirs["loss"]) <= 1e-6 * abs(theirs["loss"])
    assert ours["grads"].keys() == theirs["grads"].keys()
    for name in theirs["grads"]:
        torch.testing.assert_close(torch.tensor(ours["grads"][name]), torch.tensor(theirs["grads"][name]),
                                   rtol=1e-4, atol=1e-7, msg=name)
    # SDPA, RMSNorm and SwiGLU together keep less than megatron's unfused attention, norm and glu
    assert ours["saved_bytes"] < 0.75 * theirs["saved_bytes"], (ours["saved_bytes"], theirs["saved_bytes"])
