"""`python -m tests.pretrain.layers_model OUT.json`: the tiny model built with our layer spec (pretrain.layers'
RMSNorm, SwiGLU and RoPE, SDPA) against the same weights in megatron-core's own local spec (torch's RMSNorm
through WrappedTorchNorm, megatron's unfused glu and RoPE, its DotProductAttention): loss, every parameter's gradient, and the
bytes each keeps for the backward. World of one, gloo."""

import json
import sys

import torch


def main(out_file: str) -> None:
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from pretrain import config as C
    from pretrain import runtime
    from pretrain.model import build_model_chunks, init_weights, transformer_config

    runtime.init_distributed(runtime.dist_env({}))
    parallel_state.initialize_model_parallel(1, 1)
    tensor_parallel.model_parallel_cuda_manual_seed(0)
    cfg = C.load(["model=tiny"])
    m, vocab = cfg.model, 512
    (ours,) = build_model_chunks(m, cfg.parallel, vocab, bf16=False)
    init_weights([ours], m, 0)
    m.attention = "local"
    tcfg = transformer_config(m, cfg.parallel, bf16=False)
    tcfg.use_te_activation_func = False
    tcfg.apply_rope_fusion = False  # megatron's unfused RoPE (ours is pretrain.layers.rope)
    theirs = GPTModel(config=tcfg, transformer_layer_spec=get_gpt_layer_local_spec(normalization="RMSNorm"),
                      vocab_size=vocab, max_sequence_length=m.seq_length, pre_process=True, post_process=True,
                      share_embeddings_and_output_weights=not m.untie_embeddings, position_embedding_type="rope",
                      rotary_base=m.rotary_base)
    their_params = dict(theirs.named_parameters())
    with torch.no_grad():
        for name, p in ours.named_parameters():
            their_params[name].copy_(p)
    assert set(their_params) == {n for n, _ in ours.named_parameters()}
    tokens = torch.randint(0, vocab, (2, m.seq_length + 1), generator=torch.Generator().manual_seed(1))
    pos = torch.arange(m.seq_length)[None].expand(2, -1)
    result = {}
    for tag, model in (("ours", ours), ("theirs", theirs)):
        saved = {}

        def pack(t):
            st = t.untyped_storage()
            if not (t.is_leaf and t.requires_grad) and not isinstance(t, torch.nn.Parameter):
                saved[st.data_ptr()] = st.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(tokens[:, :-1], pos, None, labels=tokens[:, 1:]).float().mean()
        loss.backward()
        result[tag] = {"loss": loss.item(), "saved_bytes": sum(saved.values()),
                       "grads": {n: p.grad.flatten().tolist() for n, p in model.named_parameters()}}
    with open(out_file, "w") as f:
        json.dump(result, f)
    runtime.destroy()


if __name__ == "__main__":
    main(sys.argv[1])
