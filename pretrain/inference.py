"""A pure-PyTorch Llama forward for one process (CPU or GPU) with a KV cache, loaded from any trainer checkpoint
through pretrain.checkpoint_reader (whole tensors by global name, so the layout it was saved under does not matter).

Same maths as the trainer's megatron-core GPTModel (tests/pretrain/test_generate.py compares logits): RMSNorm,
fused QKV laid out per query group `[q_1 .. q_{heads/groups}, k, v]`, RoPE in megatron's non-interleaved
(rotate-half) convention, grouped-query attention, SwiGLU with linear_fc1 = [gate; up], tied or untied output.

Batches are left-padded: `key_valid` marks the real (non-pad) slots and `positions` are per-row positions, so a
padded row computes what it computes alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pretrain.config import ModelConfig


class ModelShapeError(ValueError):
    """Checkpoint tensors that do not fit the model shape; the message names the key and the fix."""


def expected_shapes(m: ModelConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    hd, h = m.head_dim, m.hidden_size
    qkv = (m.num_attention_heads + 2 * m.num_query_groups) * hd
    shapes = {"embedding.word_embeddings.weight": (vocab_size, h), "decoder.final_layernorm.weight": (h,)}
    for i in range(m.num_layers):
        p = f"decoder.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "self_attention.linear_qkv.weight": (qkv, h),
                       p + "self_attention.linear_proj.weight": (h, m.num_attention_heads * hd),
                       p + "pre_mlp_layernorm.weight": (h,), p + "mlp.linear_fc1.weight": (2 * m.ffn_hidden_size, h),
                       p + "mlp.linear_fc2.weight": (h, m.ffn_hidden_size)})
    if m.untie_embeddings:
        shapes["output_layer.weight"] = (vocab_size, h)
    return shapes


def check_state(state: dict[str, torch.Tensor], m: ModelConfig, vocab_size: int) -> None:
    """Raise ModelShapeError unless `state` holds exactly the tensors of this model shape."""
    want = expected_shapes(m, vocab_size)
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    hint = ("the checkpoint was saved from a different model shape: use the model.* values it was trained "
            "with (pretrain.checkpoint_reader.CheckpointReader.open(path).model_config)")
    if missing or extra:
        tie = ""
        if "output_layer.weight" in missing or "output_layer.weight" in extra:
            tie = f" (model.untie_embeddings={m.untie_embeddings} does not match the checkpoint)"
        raise ModelShapeError(f"tensors missing {missing[:3]}, unexpected {extra[:3]}{tie}. Fix: {hint}")
    for name, shape in want.items():
        if tuple(state[name].shape) != shape:
            raise ModelShapeError(f"{name}: checkpoint shape {tuple(state[name].shape)}, model.* gives {shape} "
                                  f"(model: layers {m.num_layers}, hidden {m.hidden_size}, ffn {m.ffn_hidden_size}, "
                                  f"heads {m.num_attention_heads}, groups {m.num_query_groups}, vocab {vocab_size})"
                                  f". Fix: {hint}")


@dataclass
class KVCache:
    """Keys and values of every layer for slots [0, length): [batch, groups, max_len, head_dim] each."""
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    length: int = 0


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.float()
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class InferenceModel(torch.nn.Module):
    def __init__(self, m: ModelConfig, vocab_size: int, state: dict[str, torch.Tensor],
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__()
        check_state(state, m, vocab_size)
        self.cfg, self.vocab_size = m, vocab_size
        self.w = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
        self.out_w = self.w["output_layer.weight" if m.untie_embeddings else "embedding.word_embeddings.weight"]
        hd = m.head_dim
        self.inv_freq = 1.0 / (m.rotary_base ** (torch.arange(0, hd, 2, dtype=torch.float32, device=device) / hd))
        self.device, self.dtype = torch.device(device), dtype

    @classmethod
    def from_checkpoint(cls, path, device=None, dtype=None) -> "InferenceModel":
        from pretrain.checkpoint_reader import CheckpointReader

        reader = CheckpointReader.open(path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
        return cls(reader.model_config, reader.vocab_size, reader.model_state_dict(), device, dtype)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        m = self.cfg
        shape = (batch, m.num_query_groups, max_len, m.head_dim)
        return KVCache([torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(m.num_layers)],
                       [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(m.num_layers)])

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None,
                key_valid: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """tokens, positions [B, T] for slots [start, start + T) (start = cache.length, or 0 without a cache);
        key_valid [B, >= start + T] (False: a pad slot). Returns fp32 logits [B, T, vocab]."""
        m, w = self.cfg, self.w
        B, T = tokens.shape
        start = cache.length if cache is not None else 0
        S = start + T
        if positions is None:
            positions = torch.arange(start, S, device=tokens.device).expand(B, T)
        q_slot = torch.arange(start, S, device=tokens.device)[:, None]
        k_slot = torch.arange(S, device=tokens.device)[None, :]
        mask = k_slot <= q_slot  # [T, S]
        if key_valid is not None:
            mask = (mask & key_valid[:, None, :S]) | (k_slot == q_slot)  # a pad slot sees itself (no empty rows)
            mask = mask[:, None]  # [B, 1, T, S]
        freqs = positions.float()[..., None] * self.inv_freq  # [B, T, hd/2]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, T, hd]
        cos, sin = emb.cos().to(self.dtype), emb.sin().to(self.dtype)
        nh, ng, hd = m.num_attention_heads, m.num_query_groups, m.head_dim
        per = nh // ng
        x = F.embedding(tokens, w["embedding.word_embeddings.weight"])
        for i in range(m.num_layers):
            p = f"decoder.layers.{i}."
            h = rms_norm(x, w[p + "input_layernorm.weight"], m.norm_eps)
            qkv = (h @ w[p + "self_attention.linear_qkv.weight"].T).view(B, T, ng, per + 2, hd)
            q = qkv[:, :, :, :per].reshape(B, T, nh, hd).transpose(1, 2)  # [B, nh, T, hd]
            k = qkv[:, :, :, per].transpose(1, 2)  # [B, ng, T, hd]
            v = qkv[:, :, :, per + 1].transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            if cache is not None:
                cache.k[i][:, :, start:S] = k
                cache.v[i][:, :, start:S] = v
                k, v = cache.k[i][:, :, :S], cache.v[i][:, :, :S]
            k = k.repeat_interleave(per, dim=1)
            v = v.repeat_interleave(per, dim=1)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + a.transpose(1, 2).reshape(B, T, nh * hd) @ w[p + "self_attention.linear_proj.weight"].T
            h = rms_norm(x, w[p + "pre_mlp_layernorm.weight"], m.norm_eps)
            gate, up = (h @ w[p + "mlp.linear_fc1.weight"].T).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ w[p + "mlp.linear_fc2.weight"].T
        if cache is not None:
            cache.length = S
        x = rms_norm(x, w["decoder.final_layernorm.weight"], m.norm_eps)
        return (x @ self.out_w.T).float()
