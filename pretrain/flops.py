"""Model FLOPs and parameter counts for the Llama-style GPT in model.py.

Training FLOPs per token = 3 x forward (the backward pass costs twice the forward), counting every matmul as
2 x m x n x k: the QKV and output projections (grouped-query attention), the attention scores and the weighted
sum, the SwiGLU MLP's three matrices, and the output logits. Norms, RoPE, softmax and the loss are elementwise
and left out.

Attention: by default the scores and the weighted sum count the full sequence (PaLM's appendix B, what an
unfused kernel computes, and the compute axis of our scaling ladders); `causal=True` counts half the score
matrix, since a causal mask leaves the rest unused (Megatron-LM's current convention). Both are reported:
run_info.json has both per-token counts, metrics.jsonl has `mfu` (full) and `mfu_causal`. The full count is checked against torch.utils.flop_counter.FlopCounterMode on
megatron's GPTModel in tests/pretrain/test_flops.py.
"""

from __future__ import annotations

from typing import Protocol


class _Shape(Protocol):
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    seq_length: int


def forward_flops_per_token(m: _Shape, vocab_size: int, causal: bool = False) -> float:
    h, f, s = m.hidden_size, m.ffn_hidden_size, m.seq_length
    if causal:
        s = s / 2
    kv = m.num_query_groups * (h // m.num_attention_heads)
    qkv_proj = 2 * h * (h + 2 * kv)
    out_proj = 2 * h * h
    scores_and_values = 2 * 2 * s * h
    mlp = 2 * 3 * h * f
    logits = 2 * h * vocab_size
    return float(m.num_layers * (qkv_proj + out_proj + scores_and_values + mlp) + logits)


def flops_per_token(m: _Shape, vocab_size: int, causal: bool = False) -> float:
    """Training (forward + backward) model FLOPs per token."""
    return 3.0 * forward_flops_per_token(m, vocab_size, causal)


def count_params(m: _Shape, vocab_size: int, untie_embeddings: bool = True) -> dict[str, int]:
    h, f = m.hidden_size, m.ffn_hidden_size
    kv = m.num_query_groups * (h // m.num_attention_heads)
    per_layer = h * (h + 2 * kv) + h * h + 3 * h * f + 2 * h  # qkv, proj, fc1 (gate+up), fc2, two RMSNorms
    non_embedding = m.num_layers * per_layer + h  # + final norm
    embedding = vocab_size * h * (2 if untie_embeddings else 1)
    return {"total": non_embedding + embedding, "non_embedding": non_embedding, "embedding": embedding}
