"""Layout-independent checkpoints: save under one (TP, PP, DP), load under any other.

Every tensor is stored whole, under its global name (pretrain.model.global_params): model weights, and the
optimizer's fp32 main weights (when training in bf16) and Adam moments as `optim.<state>.<name>`
(pretrain.optimizer_state), with Adam's step count in `meta.json`. Saving gathers each parameter's
tensor-parallel shards (and, with the distributed optimizer, the data-parallel shards of its optimizer state)
and one rank per pipeline stage writes them; loading reads each whole tensor (memory-mapped) and keeps this
rank's slice. The data position is the global consumed-samples count, also layout-independent. The tokenizer
the run trains with is copied into the checkpoint, so a checkpoint alone can be sampled or exported.

Integrity: a checkpoint is written into `checkpoints/.tmp.iter_XXXXXXX/` and renamed when complete; `latest`
is replaced last, atomically; `meta.json` records every file's sha256, computed by the rank that wrote it. On resume a corrupt or partial newest
checkpoint is detected and the previous one is used, with a warning that names both
(pretrain.checkpoint_reader, which is also the public read API).

`python -m pretrain.checkpoint inspect DIR` lists what a checkpoint holds.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch
from megatron.core import parallel_state

from data_pipeline.samples import file_sha256
from pretrain import optimizer_state as ostate
from pretrain.checkpoint_reader import (META, TOKENIZER, LATEST, CheckpointError, CheckpointReader,
                                        find_resumable, inspect, iter_dir_name)
from pretrain.model import ParamInfo, full_from_shards, global_params, shard_of

__all__ = ["save", "load", "read_meta", "find_resumable", "iter_dir_name", "LATEST"]


def _tp_gather(t: torch.Tensor, info: ParamInfo) -> torch.Tensor:
    tp = parallel_state.get_tensor_model_parallel_world_size()
    if info.tp_dim < 0 or tp == 1:
        return t
    shards = [torch.empty_like(t) for _ in range(tp)]
    torch.distributed.all_gather(shards, t.contiguous(), group=parallel_state.get_tensor_model_parallel_group())
    return full_from_shards(shards, info)


def save(ckpt_root: Path, iteration: int, model_chunks, optimizer, extra: dict, save_main: bool,
         tokenizer_model: str | None = None, keep_last: int | None = None) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory. With keep_last, older
    checkpoints beyond the newest `keep_last` are deleted once the new one is in place."""
    rank = torch.distributed.get_rank()
    name = iter_dir_name(iteration)
    tmp, final = ckpt_root / f".tmp.{name}", ckpt_root / name
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    torch.distributed.barrier()

    params = list(global_params(model_chunks))
    owners = ostate.owners(optimizer, params)
    writer = (parallel_state.get_tensor_model_parallel_rank() == 0
              and parallel_state.get_data_parallel_rank(with_context_parallel=True) == 0)
    tensors: dict[str, torch.Tensor] = {}
    for info in params:
        full = _tp_gather(info.param.detach(), info)
        if writer:
            tensors[info.name] = full.cpu().clone()
        local = ostate.local_tensors(owners[id(info.param)], info.param)
        for k, t in local.items():
            if k == "main" and not save_main:
                continue
            full = _tp_gather(t, info)
            if writer:
                tensors[f"optim.{k}.{info.name}"] = full.cpu().clone()

    part: dict = {"index": {}, "sha256": {}}
    if writer:  # one writer per pipeline stage, in parallel; each hashes its own file
        fname = f"tensors_rank{rank:05d}.pt"
        torch.save(tensors, tmp / fname)
        part = {"index": {k: fname for k in tensors}, "sha256": {fname: file_sha256(tmp / fname)}}
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, part)
    step = ostate.optimizer_step(optimizer)
    if rank == 0:
        index = {k: v for p in gathered for k, v in p["index"].items()}
        checksums = {f: d for p in gathered for f, d in p["sha256"].items()}
        if tokenizer_model:
            shutil.copyfile(tokenizer_model, tmp / TOKENIZER)
            checksums[TOKENIZER] = file_sha256(tmp / TOKENIZER)
        meta = dict(extra, iteration=iteration, optimizer_step=step, index=index, sha256=checksums)
        (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = ckpt_root / f".{LATEST}.tmp"
        pointer.write_text(name + "\n")
        os.replace(pointer, ckpt_root / LATEST)  # the pointer moves last
        if keep_last:
            for old in sorted(p for p in ckpt_root.glob("iter_*") if p.is_dir())[:-keep_last]:
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
    torch.distributed.barrier()
    return final


def read_meta(ckpt_dir: Path | str) -> dict:
    return json.loads((Path(ckpt_dir) / META).read_text())


@torch.no_grad()
def load(ckpt_dir: Path | str, model_chunks, optimizer) -> dict:
    """Load weights and optimizer state for this rank's shards. Returns the checkpoint's metadata."""
    reader = CheckpointReader.open(ckpt_dir, verify_checksums=False)  # find_resumable verified it
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    params = list(global_params(model_chunks))
    owners = ostate.owners(optimizer, params)
    missing = [i.name for i in params if i.name not in reader]
    if missing:
        raise CheckpointError(f"checkpoint {ckpt_dir} lacks {len(missing)} parameters of this model, e.g. "
                              f"{missing[:3]}: it was saved from a different model shape (check model.* overrides)")
    for info in params:
        full = reader[info.name]
        local = shard_of(full, info, tp_rank, tp_size)
        if tuple(local.shape) != tuple(info.param.shape):
            raise CheckpointError(f"{info.name}: checkpoint shape {tuple(full.shape)} does not fit this model "
                                  f"(local {tuple(info.param.shape)} under tp={tp_size})")
        info.param.copy_(local.to(info.param.dtype))
        tensors = {}
        main_key = f"optim.main.{info.name}"
        tensors["main"] = shard_of(reader[main_key], info, tp_rank, tp_size) if main_key in reader else local
        for k in ostate.STATE_KEYS:
            tensors[k] = shard_of(reader[f"optim.{k}.{info.name}"], info, tp_rank, tp_size)
        ostate.set_local_tensors(owners[id(info.param)], info.param, tensors)
    ostate.set_optimizer_step(optimizer, int(reader.meta.get("optimizer_step", reader.iteration)))
    # megatron's DDP keeps the model weights in contiguous buffers that the optimizer copies from its main
    # weights after each step; the copies above wrote the model weights and main weights directly.
    return reader.meta


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "inspect":
        print("usage: python -m pretrain.checkpoint inspect <checkpoint dir | checkpoints dir | run dir>",
              file=sys.stderr)
        return 2
    try:
        print(inspect(Path(argv[1])))
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    sys.exit(main())
