"""`torchrun --nproc_per_node=N -m tests.pretrain.reshard_checkpoint SRC DST [overrides]`: builds the trainer's
model and optimizer (fp32) under the model and layout the overrides give, loads checkpoint SRC into them with
pretrain.checkpoint.load and saves them to DST (a checkpoints dir) in the dcp format, at SRC's iteration. A
checkpoint that reshards exactly comes back with the same tensors."""

import sys
from pathlib import Path


def main(src: str, dst: str, overrides: list[str]) -> None:
    from megatron.core import parallel_state, tensor_parallel

    from pretrain import checkpoint, runtime
    from pretrain import config as C
    from pretrain.checkpoint_reader import CheckpointReader
    from pretrain.train import build_model_and_optimizer

    reader = CheckpointReader.open(src)
    cfg = C.load(["logging.wandb.mode=disabled", *overrides])
    env = runtime.dist_env()
    layout = C.validate(cfg, env.world_size, check_data=False)
    device = runtime.init_distributed(env)
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=layout.tp,
                                             pipeline_model_parallel_size=layout.pp)
    tensor_parallel.model_parallel_cuda_manual_seed(0)
    model, optimizer = build_model_and_optimizer(cfg, layout, reader.vocab_size, False, device)
    meta = checkpoint.load(reader.dir, model, optimizer)
    extra = {k: meta[k] for k in ("consumed_samples", "tokens", "model", "vocab_size") if k in meta}
    checkpoint.Checkpointer("dcp").save(Path(dst), meta["iteration"], model, optimizer,
                                        dict(extra, layout=layout.as_dict()), save_main=False)
    runtime.destroy()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
