"""pretrain.flops against torch.utils.flop_counter.FlopCounterMode on the real megatron-core model."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pretrain.config import ModelConfig
from pretrain.flops import count_params, flops_per_token
from tests.conftest import ROOT

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from torch.utils.flop_counter import FlopCounterMode
    from pretrain.config import ModelConfig, ParallelConfig
    from pretrain.runtime import dist_env, init_distributed
    from megatron.core import parallel_state
    m = ModelConfig(**json.loads(sys.argv[1])); vocab = int(sys.argv[2])
    m.attention = "local"  # FlopCounterMode has no formula for SDPA's CPU flash kernel: count the unfused one
    init_distributed(dist_env({}))
    parallel_state.initialize_model_parallel(1, 1)
    from megatron.core import tensor_parallel
    tensor_parallel.model_parallel_cuda_manual_seed(0)
    from pretrain.model import build_model_chunks, init_weights
    model = build_model_chunks(m, ParallelConfig(), vocab, False)[0]
    init_weights([model], m, 0)
    b = 2
    tokens = torch.randint(0, vocab, (b, m.seq_length))
    pos = torch.arange(m.seq_length).unsqueeze(0).expand(b, -1)
    with FlopCounterMode(display=False) as counter:
        loss = model(tokens, pos, None, labels=tokens).float().mean()
        loss.backward()
    print(json.dumps({"flops": counter.get_total_flops(), "tokens": b * m.seq_length,
                      "params": sum(p.numel() for p in model.parameters())}))
""")

SHAPES = [
    ModelConfig(num_layers=2, hidden_size=128, ffn_hidden_size=352, num_attention_heads=4, num_query_groups=2,
                seq_length=128),
    ModelConfig(num_layers=3, hidden_size=256, ffn_hidden_size=688, num_attention_heads=8, num_query_groups=8,
                seq_length=256),
]


@pytest.mark.parametrize("m", SHAPES, ids=["gqa", "mha"])
def test_flops_formula_matches_flop_counter(m):
    import dataclasses
    import json

    vocab = 1024
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(dataclasses.asdict(m)), str(vocab)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    per_token = measured["flops"] / measured["tokens"]
    # the unfused attention computes the whole score matrix: the full count
    assert per_token == pytest.approx(flops_per_token(m, vocab), rel=0.02)
    # the causal count (Megatron-LM's, mfu_causal) leaves out exactly half of the scores and the weighted sum
    attention = 3 * 2 * 2 * m.seq_length * m.hidden_size * m.num_layers  # QK^T and AV, forward + backward
    assert flops_per_token(m, vocab) - flops_per_token(m, vocab, causal=True) == pytest.approx(attention / 2)
    assert measured["params"] == count_params(m, vocab)["total"]


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0),
                                       ("NVIDIA H100 NVL", 835.0), ("NVIDIA H200", 989.4),
                                       ("NVIDIA H200 NVL", 835.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                       ("NVIDIA B200", 2250.0), ("NVIDIA GH200 480GB", 989.4),
                                       ("NVIDIA H100", None), ("NVIDIA H100 80GB HBM3e custom", None)])
def test_peak_table_matches_exact_names(name, peak):
    from pretrain.metrics import peak_tflops

    assert peak_tflops(None, name) == peak
    assert peak_tflops(123.0, name) == 123.0
