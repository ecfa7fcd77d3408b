"""pretrain.layers: RMSNorm and SwiGLU as autograd functions give the composed ops' values and gradients and
keep less for the backward; the whole tiny model built with them matches megatron-core's own local spec."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pretrain.layers import rms_norm, swiglu

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
