"""Core attention on torch.nn.functional.scaled_dot_product_attention, for megatron-core's SelfAttention.

megatron-core 0.16.1's local core attention (DotProductAttention) materialises the [b, heads, s, s] scores,
masks them with a [s, s] causal mask, runs softmax on them and keeps the probabilities for the backward: at
seq 2048 that is several 200 MB tensors per layer and most of the step on CPU. PyTorch's SDPA picks a fused
kernel (flash attention on CPU and GPU, memory-efficient or cuDNN on GPU) that never stores the score matrix
and skips the masked half of causal attention. Grouped-query attention is passed as is (`enable_gqa`),
without repeating the KV heads.

`SDPAttention` takes megatron's core-attention arguments and tensors ([s, b, heads, head_dim] in,
[s, b, heads * head_dim] out), so the layer spec swaps it for DotProductAttention and everything around it
(tensor-parallel heads, sequence parallelism, pipeline stages, selective recompute of "core_attn") is
megatron's own.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide


class SDPAttention(MegatronModule):
    """Causal (or unmasked) softmax attention through F.scaled_dot_product_attention."""

    def __init__(self, config: TransformerConfig, layer_number: int, attn_mask_type: AttnMaskType,
                 attention_type: str, attention_dropout: Optional[float] = None,
                 softmax_scale: Optional[float] = None, cp_comm_type: Optional[str] = None,
                 pg_collection=None):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("SDPAttention does not support context parallelism (use Transformer Engine)")
        if config.window_size is not None:
            raise ValueError("SDPAttention does not support sliding-window attention")
        if config.softmax_type != "vanilla":
            raise ValueError(f"SDPAttention supports softmax_type='vanilla' only, got {config.softmax_type!r}")
        if pg_collection is None:
            from megatron.core.process_groups_config import ProcessGroupCollection

            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp"])
        tp = pg_collection.tp.size()
        self.attn_mask_type = attn_mask_type
        self.heads = divide(config.num_attention_heads, tp)
        # apply_query_key_layer_scaling divides the scale by the layer number and multiplies it back in the
        # fp32 softmax (an fp16 overflow guard); the product is the plain scale, which SDPA applies in fp32.
        self.scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(config.kv_channels)
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: Optional[torch.Tensor], attn_mask_type: Optional[AttnMaskType] = None,
                attention_bias: Optional[torch.Tensor] = None, packed_seq_params=None) -> torch.Tensor:
        if packed_seq_params is not None:
            raise ValueError("SDPAttention does not support packed sequences (use Transformer Engine)")
        if attention_bias is not None:
            raise ValueError("SDPAttention does not support an attention bias")
        mask_type = attn_mask_type if attn_mask_type is not None else self.attn_mask_type
        sq, b, _, hn = query.shape
        sk = key.shape[0]
        # [s, b, heads, hn] -> [b, heads, s, hn] (a view; the kernel reads strided inputs)
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))
        if v.requires_grad and torch.is_grad_enabled():
            # megatron's value is a view into the fused QKV projection's output (query and key are new tensors
            # after RoPE): saved for the backward as it is, it would keep that whole output alive
            v = v.contiguous()
        mask, causal = None, False
        if attention_mask is not None:
            # megatron's masks are True where attention is NOT allowed; SDPA's boolean masks the opposite
            mask = ~attention_mask
        elif mask_type == AttnMaskType.causal and sq > 1:
            if sq == sk:
                causal = True
            else:  # queries are the last sq positions (prefill after a cache): bottom-right aligned causal mask
                mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(diagonal=sk - sq)
        dropout = self.dropout if self.training else 0.0
        forked = dropout > 0 and not self.config.sequence_parallel  # as megatron's DotProductAttention
        with tensor_parallel.get_cuda_rng_tracker().fork() if forked else contextlib.nullcontext():
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal,
                                                 scale=self.scale, enable_gqa=k.shape[1] != q.shape[1])
        # [b, heads, sq, hn] -> [sq, b, heads * hn]
        return out.permute(2, 0, 1, 3).reshape(sq, b, self.heads * hn)

