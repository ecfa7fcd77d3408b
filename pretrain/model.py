"""megatron-core GPTModel, Llama style: RMSNorm, SwiGLU, RoPE, grouped-query attention, no biases.

Every parameter has a global name that does not depend on the parallel layout
(`decoder.layers.<global layer>.<...>`), and a canonical full tensor from which each tensor-parallel rank's
shard is a fixed slice (`shard_of` / `full_from_shards`). Initial weights are drawn per global name from a seed
derived from (run.seed, name), so every TP/PP/DP layout starts from the same model; checkpoints use the same
names and full tensors, so they load under any layout.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
from megatron.core import parallel_state
from megatron.core.distributed.data_parallel_base import _BaseDataParallel
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build
from megatron.core.transformer.transformer_config import TransformerConfig

from pretrain.config import ModelConfig, ParallelConfig
from pretrain.layers import RMSNorm, SwiGLU, install_rope


def transformer_config(m: ModelConfig, p: ParallelConfig, bf16: bool) -> TransformerConfig:
    r = p.recompute
    # megatron's fused-RoPE hook: Transformer Engine's kernel when installed, else pretrain.layers.rope (the
    # same values as megatron's unfused RoPE, without its copies); set before TransformerConfig checks for it
    install_rope()
    return TransformerConfig(
        num_layers=m.num_layers,
        hidden_size=m.hidden_size,
        ffn_hidden_size=m.ffn_hidden_size,
        num_attention_heads=m.num_attention_heads,
        num_query_groups=m.num_query_groups,
        kv_channels=m.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=m.norm_eps,
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        # the local spec's MLP applies its activation_func submodule (pretrain.layers.SwiGLU) to fc1's output;
        # the Transformer Engine spec keeps megatron's own path
        use_te_activation_func=m.attention != "te",
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=m.init_std,
        bias_dropout_fusion=False,
        apply_rope_fusion=True,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        tensor_model_parallel_size=p.tp,
        pipeline_model_parallel_size=p.pp,
        virtual_pipeline_model_parallel_size=p.vpp,
        sequence_parallel=p.sequence_parallel,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        autocast_dtype=torch.bfloat16 if bf16 else torch.float32,
        # interleaved 1F1B on CPU needs an explicit group size (see DESIGN.md)
        microbatch_group_size_per_vp_stage=p.pp if p.vpp else None,
        # gloo matches point-to-point messages by (peer, tag): batched isend/irecv in both directions to the
        # same peer (interleaved 1F1B with pp=2) can pair the wrong messages. The unbatched path sends the two
        # directions on different groups. NCCL keeps megatron's default.
        batch_p2p_comm=torch.cuda.is_available(),
        use_cpu_initialization=not torch.cuda.is_available(),
        # megatron's own initialisation also tags parameters with their tensor-parallel attributes (used by
        # grad-norm and sequence-parallel reductions), so it stays on, with a no-op init method: the values come
        # from init_weights(), a function of the global parameter name.
        perform_initialization=True,
        init_method=_keep,
        output_layer_init_method=_keep,
        # activation recomputation (validated in pretrain.config._validate_performance)
        recompute_granularity=r.granularity,
        recompute_method=r.method if r.granularity == "full" else None,
        recompute_num_layers=r.num_layers if r.granularity == "full" else None,
        recompute_modules=list(r.modules) if r.granularity == "selective" else None,
    )


def _keep(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _layer_spec(config: TransformerConfig, vp_stage: int | None, attention: str) -> TransformerBlockSubmodules:
    """megatron's local layer spec with our RMSNorm and the chosen core attention (`sdpa`: SDPAttention,
    `local`: megatron's unfused DotProductAttention), or megatron's Transformer Engine spec (`te`: TE linears
    with the RMSNorm fused into them, TE's fused attention)."""
    n = get_num_layers_to_build(config, vp_stage=vp_stage)
    if attention == "te":
        from megatron.core.extensions.transformer_engine import TENorm
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        layer = get_gpt_layer_with_transformer_engine_spec()
        return TransformerBlockSubmodules(layer_specs=[layer] * n, layer_norm=ModuleSpec(module=TENorm))
    layer = get_gpt_layer_local_spec(normalization="RMSNorm")
    # our SwiGLU keeps only fc1's output for the backward (megatron's unfused glu keeps three tensors);
    # megatron's MLP calls it when config.use_te_activation_func is set (transformer_config does, for this spec)
    layer.submodules.mlp.submodules.activation_func = ModuleSpec(module=SwiGLU)
    norm = ModuleSpec(module=RMSNorm)
    layer.submodules.input_layernorm = norm
    layer.submodules.pre_mlp_layernorm = norm
    if attention == "sdpa":
        from pretrain.attention import SDPAttention

        layer.submodules.self_attention.submodules.core_attention = SDPAttention
    return TransformerBlockSubmodules(layer_specs=[layer] * n, layer_norm=norm)


def build_model_chunks(m: ModelConfig, p: ParallelConfig, vocab_size: int, bf16: bool) -> list[GPTModel]:
    """The model chunks this rank holds: one, or `vpp` for interleaved pipelining."""
    config = transformer_config(m, p, bf16)
    chunks = []
    for vp in range(p.vpp or 1):
        vp_stage = vp if p.vpp else None
        pre = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
        post = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
        model = GPTModel(
            config=config,
            transformer_layer_spec=_layer_spec(config, vp_stage, m.attention),
            vocab_size=vocab_size,
            max_sequence_length=m.seq_length,
            pre_process=pre,
            post_process=post,
            share_embeddings_and_output_weights=not m.untie_embeddings,
            position_embedding_type="rope",
            rotary_base=m.rotary_base,
            vp_stage=vp_stage,
        )
        model.model_parallel = True
        chunks.append(model)
    return chunks


# ----------------------------------------------------------------------------------------------------------
# Global names, canonical full tensors and TP shards

# Transformer Engine fuses each layer's norms into the next linear; their weights get the local spec's names
# (megatron's own sharded_state_dict_keys_map, reversed), so initial weights and checkpoints are the same
# whichever model.attention built the model.
_TE_NORM_NAMES = {"self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
                  "mlp.linear_fc1.layer_norm_weight": "pre_mlp_layernorm.weight"}


class SingleProcessModel(_BaseDataParallel):
    """A model chunk trained by one process alone (tp = pp = dp = 1), where megatron's DistributedDataParallel
    has nothing to reduce. It keeps megatron's data-parallel interface (no_sync, finish_grad_sync and
    zero_grad_buffer do nothing) over plain `.grad`s: autograd sums the micro-batches into
    them and the optimizer's zero_grad frees them before the next forward. Megatron's DDP instead adds every
    gradient into a 4 B/parameter fp32 buffer that lives for the whole step, forward included (torchtitan
    applies no data-parallel wrapper to a single process either)."""

    def __init__(self, config: TransformerConfig, module: torch.nn.Module, ddp_config):
        super().__init__(config=config, module=module)
        self.ddp_config = ddp_config  # get_megatron_optimizer reads it

    def finish_grad_sync(self, force_all_reduce: bool = False) -> None:
        """Nothing to reduce (finalize_model_grads passes force_all_reduce, which the base class lacks)."""

    def scale_gradients(self, scaling_factor: float) -> None:
        for param in self.module.parameters():
            if param.grad is not None:
                param.grad.mul_(scaling_factor)


@dataclass(frozen=True)
class ParamInfo:
    name: str  # layout-independent global name
    param: torch.nn.Parameter
    tp_dim: int  # -1: replicated over TP
    tp_stride: int
    tied_copy: bool = False  # the last pipeline stage's copy of tied embeddings (holds the embedding's values)


def global_params(chunks: list[torch.nn.Module]) -> Iterator[ParamInfo]:
    """This rank's parameters with their layout-independent names (layer indices made global; the last
    stage's copy of tied embeddings named as the embedding)."""
    for chunk in chunks:
        module = chunk.module if hasattr(chunk, "module") else chunk
        while hasattr(module, "module"):  # DDP / Float16Module wrappers
            module = module.module
        layer_numbers = {}
        if hasattr(module, "decoder"):
            for i, layer in enumerate(module.decoder.layers):
                layer_numbers[str(i)] = layer.layer_number - 1
        # Tied embeddings under PP > 1: the last stage holds a copy of the embedding as its output layer
        # (megatron all-reduces their grads), so it carries the embedding's name: same init, same checkpoint key.
        tied_copy = (getattr(module, "share_embeddings_and_output_weights", False)
                     and not getattr(module, "pre_process", True))
        for name, param in module.named_parameters():
            is_copy = tied_copy and name == "output_layer.weight"
            if is_copy:
                name = "embedding.word_embeddings.weight"
            parts = name.split(".")
            if parts[:2] == ["decoder", "layers"]:
                parts[2] = str(layer_numbers[parts[2]])
                rest = ".".join(parts[3:])
                if rest in _TE_NORM_NAMES:
                    parts = parts[:3] + _TE_NORM_NAMES[rest].split(".")
            tp = getattr(param, "tensor_model_parallel", False)
            yield ParamInfo(".".join(parts), param, getattr(param, "partition_dim", -1) if tp else -1,
                            getattr(param, "partition_stride", 1) if tp else 1, is_copy)


def shard_of(full: torch.Tensor, info: ParamInfo, tp_rank: int, tp_size: int) -> torch.Tensor:
    """This TP rank's slice of the canonical full tensor (megatron's strided partitioning)."""
    if info.tp_dim < 0 or tp_size == 1:
        return full
    parts = full.chunk(info.tp_stride, dim=info.tp_dim)
    return torch.cat([part.chunk(tp_size, dim=info.tp_dim)[tp_rank] for part in parts], dim=info.tp_dim)


def full_from_shards(shards: list[torch.Tensor], info: ParamInfo) -> torch.Tensor:
    """Inverse of shard_of: the canonical full tensor from the TP ranks' shards, in rank order."""
    if info.tp_dim < 0 or len(shards) == 1:
        return shards[0]
    per_rank = [s.chunk(info.tp_stride, dim=info.tp_dim) for s in shards]
    parts = [torch.cat([r[k] for r in per_rank], dim=info.tp_dim) for k in range(info.tp_stride)]
    return torch.cat(parts, dim=info.tp_dim)


def full_shape(info: ParamInfo, tp_size: int) -> tuple[int, ...]:
    shape = list(info.param.shape)
    if info.tp_dim >= 0:
        shape[info.tp_dim] *= tp_size
    return tuple(shape)


def name_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)


def initial_full_tensor(name: str, shape: tuple[int, ...], m: ModelConfig, seed: int) -> torch.Tensor:
    """The initial value of a parameter, by global name: norms 1, weights N(0, std), output projections of
    each residual branch scaled by 1/sqrt(2 * num_layers) (GPT-2 / Megatron's scaled init)."""
    if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
        return torch.ones(shape)
    std = m.init_std
    if name.endswith("linear_proj.weight") or name.endswith("linear_fc2.weight"):
        std = m.init_std / math.sqrt(2.0 * m.num_layers)
    gen = torch.Generator().manual_seed(name_seed(seed, name))
    return torch.empty(shape).normal_(0.0, std, generator=gen)


@torch.no_grad()
def init_weights(chunks: list[torch.nn.Module], m: ModelConfig, seed: int) -> None:
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    for info in global_params(chunks):
        full = initial_full_tensor(info.name, full_shape(info, tp_size), m, seed)
        info.param.copy_(shard_of(full, info, tp_rank, tp_size).to(info.param.dtype))
