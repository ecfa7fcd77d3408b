"""`python -m tests.pretrain.megatron_forward CKPT TOKENS.pt OUT.pt`: the trainer's megatron-core GPTModel (world
of one, gloo) loaded from a checkpoint by global name; writes its fp32 logits for the token batch."""

import sys
from pathlib import Path

import torch


def main(ckpt: str, tokens_file: str, out_file: str) -> None:
    from megatron.core import parallel_state, tensor_parallel

    from pretrain import runtime
    from pretrain.checkpoint_reader import CheckpointReader
    from pretrain.config import ParallelConfig
    from pretrain.model import build_model_chunks, global_params

    runtime.init_distributed(runtime.dist_env({}))
    parallel_state.initialize_model_parallel(1, 1)
    tensor_parallel.model_parallel_cuda_manual_seed(0)
    reader = CheckpointReader.open(ckpt)
    (chunk,) = build_model_chunks(reader.model_config, ParallelConfig(), reader.vocab_size, bf16=False)
    with torch.no_grad():
        for info in global_params([chunk]):
            info.param.copy_(reader[info.name])
    chunk.eval()
    tokens = torch.load(tokens_file)
    pos = torch.arange(tokens.shape[1])[None].expand_as(tokens)
    with torch.no_grad():
        logits = chunk(tokens, pos, None)  # [B, S, V]
    torch.save(logits.float(), out_file)
    runtime.destroy()


if __name__ == "__main__":
    main(*sys.argv[1:4])
