"""Layout-independent checkpoints: save under one (TP, PP, DP), load under any other.

Every tensor has a global name (pretrain.model.global_params): model weights, and the optimizer's fp32 main
weights (when training in bf16) and Adam moments as `optim.<state>.<name>` (pretrain.optimizer_state), with
Adam's step count in `meta.json`. The data position is the global consumed-samples count, also
layout-independent. The tokenizer the run trains with is copied into the checkpoint, so a checkpoint alone can
be sampled or exported. Two formats (`run.checkpoint_format`), both read by `load` and by CheckpointReader:

`dcp` (default): torch.distributed.checkpoint. Every rank contributes its TP-local slice of each tensor as
chunks of the global tensor (pretrain.checkpoint_dcp); DCP de-duplicates data-parallel replicas over the ranks,
so all ranks write their share in parallel, one file each. With the distributed optimizer each data-parallel
rank contributes the optimizer-state shard it holds, as it holds it: nothing is gathered. With `run.async_save`
(default for dcp) the save stages a CPU copy and returns; a background thread writes, on a gloo group of its
own, and rank 0 commits once every rank's files are written (`Checkpointer`); the next save, the end of
training and every early exit (exit_interval, signal, non-finite stop) wait for the commit. Loading: DCP reads
the overlapping bytes of the saved chunks straight into each rank's weights and optimizer state for the new
layout (no collective).

`full`: each parameter's TP shards (and, with the distributed optimizer, the data-parallel shards of its
optimizer state) are gathered and one rank per pipeline stage writes them whole; loading reads each whole
tensor (memory-mapped) and keeps this rank's slice.

Integrity: a checkpoint is written into `checkpoints/.tmp.iter_XXXXXXX/` and renamed when complete; `latest`
is replaced last, atomically, so a process killed mid-save leaves only the .tmp dir and resume takes the
previous checkpoint. Each file's sha256 is computed by the rank that wrote it (dcp: `sha256/rankNNNNN.json`,
in the background thread when async; full: meta.json). On resume every rank verifies its share of the files
(file i by rank i % world, `find_resumable_parallel`) and the ranks agree; a corrupt or partial newest
checkpoint is skipped and the previous one is used, with a warning that names both
(pretrain.checkpoint_reader, which is also the public read API).

`python -m pretrain.checkpoint inspect DIR` lists what a checkpoint holds.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from megatron.core import parallel_state

from data_pipeline.samples import file_sha256
from pretrain import checkpoint_dcp as dcpf
from pretrain import optimizer_state as ostate
from pretrain.checkpoint_reader import (META, TOKENIZER, LATEST, CheckpointError, CheckpointReader,
                                        find_resumable, inspect, iter_dir_name)
from pretrain.model import ParamInfo, full_from_shards, global_params, shard_of

__all__ = ["Checkpointer", "save", "load", "read_meta", "find_resumable", "find_resumable_parallel",
           "iter_dir_name", "LATEST"]


def _tp_gather(t: torch.Tensor, info: ParamInfo) -> torch.Tensor:
    tp = parallel_state.get_tensor_model_parallel_world_size()
    if info.tp_dim < 0 or tp == 1:
        return t
    shards = [torch.empty_like(t) for _ in range(tp)]
    torch.distributed.all_gather(shards, t.contiguous(), group=parallel_state.get_tensor_model_parallel_group())
    return full_from_shards(shards, info)


def _commit(ckpt_root: Path, tmp: Path, final: Path, meta: dict, tokenizer_model: str | None,
            keep_last: int | None) -> None:
    """Rank 0, once every rank's files are in `tmp`: tokenizer, meta.json, rename, then the `latest` pointer,
    then keep_last."""
    if tokenizer_model:
        shutil.copyfile(tokenizer_model, tmp / TOKENIZER)
        meta["sha256"][TOKENIZER] = file_sha256(tmp / TOKENIZER)
    (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = ckpt_root / f".{LATEST}.tmp"
    pointer.write_text(final.name + "\n")
    os.replace(pointer, ckpt_root / LATEST)  # the pointer moves last
    if keep_last:
        for old in sorted(p for p in ckpt_root.glob("iter_*") if p.is_dir())[:-keep_last]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)


def _make_tmp(ckpt_root: Path, iteration: int) -> tuple[Path, Path]:
    name = iter_dir_name(iteration)
    tmp, final = ckpt_root / f".tmp.{name}", ckpt_root / name
    if torch.distributed.get_rank() == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    torch.distributed.barrier()
    return tmp, final


def save(ckpt_root: Path, iteration: int, model_chunks, optimizer, extra: dict, save_main: bool,
         tokenizer_model: str | None = None, keep_last: int | None = None) -> Path:
    """The `full` format. Collective: every rank calls it. Returns the final checkpoint directory. With
    keep_last, older checkpoints beyond the newest `keep_last` are deleted once the new one is in place."""
    rank = torch.distributed.get_rank()
    tmp, final = _make_tmp(ckpt_root, iteration)
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
        meta = dict(extra, format="full", iteration=iteration, optimizer_step=step, index=index, sha256=checksums)
        _commit(ckpt_root, tmp, final, meta, tokenizer_model, keep_last)
    torch.distributed.barrier()
    return final


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.view(-1) if t.is_contiguous() else t.contiguous().view(-1)


def _local_state(model_chunks, optimizer, save_main: bool) -> tuple[dict, dcpf.Layout]:
    """This rank's tensors as DCP chunks of the global tensors: ({key: tensor}, layout). Weights and the
    non-distributed optimizer's state are TP-local (DCP de-duplicates data-parallel replicas); the distributed
    optimizer's state is the data-parallel shard this rank holds, as it is held (no gather)."""
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    params = list(global_params(model_chunks))
    owners = ostate.owners(optimizer, params)
    state, layout = {}, {}

    def add(name: str, t: torch.Tensor, start: int, info: ParamInfo) -> None:
        for key, piece, offsets, gshape in dcpf.chunks(name, _flat(t), start, info, tp_rank, tp_size):
            state[key], layout[key] = piece, (name, offsets, gshape)

    for info in params:
        add(info.name, info.param.detach(), 0, info)
        owner = owners[id(info.param)]
        if not owner.distributed:
            held = (0, ostate.local_tensors(owner, info.param))
        else:  # a tied copy's state equals the embedding's, whose shards (on the first stage) are written
            held = None if info.tied_copy else ostate.dp_shard(owner, info.param)
        if held is None:
            continue
        start, tensors = held
        for k, t in tensors.items():
            if k != "main" or save_main:
                add(f"optim.{k}.{info.name}", t, start, info)
    return state, layout


class Checkpointer:
    """Saves checkpoints in one format; `dcp` with async_save keeps at most one save in flight.

    An asynchronous save stages this rank's tensors (a CPU copy) and returns; torch.distributed.checkpoint's
    async_save writes them in a background thread, its collectives on a gloo group of their own (created at
    the first save), so they never interleave with training collectives. When every rank's files are written
    (DCP's final collective), rank 0 commits in the background: meta.json, rename, `latest`, keep_last. `wait`
    blocks until then; the next save, the end of training and every early exit call it, so no completed
    checkpoint is lost. A process killed before the commit leaves only `.tmp.iter_XXXXXXX`, which resume
    ignores."""

    def __init__(self, fmt: str = "dcp", async_save: bool = False):
        if async_save and fmt != "dcp":
            raise ValueError("async_save needs the dcp format")
        self.fmt, self.async_save = fmt, async_save
        self._group = None
        self._pending: Future | None = None
        self._pool: ThreadPoolExecutor | None = None

    def save(self, ckpt_root: Path, iteration: int, model_chunks, optimizer, extra: dict, save_main: bool,
             tokenizer_model: str | None = None, keep_last: int | None = None) -> Path:
        """Collective. Returns the checkpoint's final directory (committed already unless async_save)."""
        self.wait()
        if self.fmt == "full":
            return save(ckpt_root, iteration, model_chunks, optimizer, extra, save_main, tokenizer_model,
                        keep_last)
        import torch.distributed.checkpoint as dcp

        if self._group is None:
            self._group = torch.distributed.new_group(backend="gloo")
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        tmp, final = _make_tmp(ckpt_root, iteration)
        state, layout = _local_state(model_chunks, optimizer, save_main)
        meta = dict(extra, format="dcp", iteration=iteration, optimizer_step=ostate.optimizer_step(optimizer),
                    writers=world, sha256={})
        writer, planner = dcpf.HashingWriter(tmp, rank), dcpf.ChunkSavePlanner(layout)

        def commit() -> Path:
            if rank == 0:
                meta["sha256"][dcpf.DCP_METADATA] = file_sha256(tmp / dcpf.DCP_METADATA)
                _commit(ckpt_root, tmp, final, meta, tokenizer_model, keep_last)
            return final

        if not self.async_save:
            dcp.save(state, storage_writer=writer, planner=planner, process_group=self._group)
            commit()
            torch.distributed.barrier()
            return final
        future = dcp.async_save(state, storage_writer=writer, planner=planner, process_group=self._group)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-commit")
        self._pending = self._pool.submit(lambda: (future.result(), commit())[1])
        return final

    @property
    def in_flight(self) -> bool:
        return self._pending is not None

    def wait(self) -> Path | None:
        """Collective. Block until the save in flight (if any) is written by every rank and committed; its
        directory."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        try:
            path = pending.result()
        except Exception as e:
            raise CheckpointError(f"asynchronous checkpoint save failed on rank {torch.distributed.get_rank()}: "
                                  f"{type(e).__name__}: {e}") from e
        torch.distributed.barrier()  # rank 0's commit is visible to every rank from here on
        return path


def read_meta(ckpt_dir: Path | str) -> dict:
    return json.loads((Path(ckpt_dir) / META).read_text())


def find_resumable_parallel(ckpt_root: Path) -> tuple[Path | None, list[str]]:
    """Collective find_resumable: rank i verifies the checksums of files i, i + world, ...; the ranks agree on
    the first failure of each candidate. The same answer on every rank."""
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()

    def agree(reason: str | None) -> str | None:
        reasons: list = [None] * world
        torch.distributed.all_gather_object(reasons, reason)
        return next((r for r in reasons if r is not None), None)

    return find_resumable(ckpt_root, part=(rank, world), agree=agree)


@torch.no_grad()
def load(ckpt_dir: Path | str, model_chunks, optimizer) -> dict:
    """Load weights and optimizer state for this rank's shards (either format, any layout it was saved
    under). Returns the checkpoint's metadata."""
    meta = read_meta(ckpt_dir)
    if meta.get("format", "full") == "dcp":
        _load_dcp(Path(ckpt_dir), model_chunks, optimizer)
    else:
        _load_full(Path(ckpt_dir), model_chunks, optimizer)
    ostate.set_optimizer_step(optimizer, int(meta.get("optimizer_step", meta["iteration"])))
    # megatron's DDP keeps the model weights in contiguous buffers that the optimizer copies from its main
    # weights after each step; the copies here wrote the model weights and main weights directly.
    return meta


def _missing(ckpt_dir, params, keys) -> None:
    missing = [i.name for i in params if i.name not in keys]
    if missing:
        raise CheckpointError(f"checkpoint {ckpt_dir} lacks {len(missing)} parameters of this model, e.g. "
                              f"{missing[:3]}: it was saved from a different model shape (check model.* overrides)")


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _load_dcp(ckpt_dir: Path, model_chunks, optimizer) -> None:
    """dcp.load (on this process alone: no collective) reads the overlapping bytes of the saved chunks straight
    into this rank's tensors for this layout: the TP-local weights, and the optimizer's main weights and moments
    (the data-parallel shard this rank holds, with the distributed optimizer). Main weights the checkpoint lacks
    (saved in fp32) are copied from the weights."""
    import torch.distributed.checkpoint as dcp

    reader = dcpf.DirectReader(str(ckpt_dir))
    saved = reader.read_metadata().state_dict_metadata
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    params = list(global_params(model_chunks))
    _missing(ckpt_dir, params, saved)
    owners = ostate.owners(optimizer, params)
    state, layout, after = {}, {}, []

    def add(name: str, flat: torch.Tensor, start: int, info: ParamInfo) -> None:
        for key, piece, offsets, gshape in dcpf.chunks(name, flat, start, info, tp_rank, tp_size):
            state[key], layout[key] = piece, (name, offsets, gshape)

    for info in params:
        param = info.param.data
        add(info.name, param.view(-1), 0, info)
        owner = owners[id(info.param)]
        if owner.distributed:
            start, tensors = ostate.dp_shard(owner, info.param, for_load=True) or (0, {})
        else:
            start, tensors = 0, {"main": owner.main[id(info.param)].data,
                                 **ostate.moments_for_load(owner, info.param)}
        main = tensors.pop("main", None)
        for k, t in tensors.items():
            add(f"optim.{k}.{info.name}", t.view(-1), start, info)
        if main is None:
            continue
        flat_param = param.view(-1)[start:start + main.numel()]
        if f"optim.main.{info.name}" not in saved:
            if not _shares_storage(main, param):  # bf16 training: fp32 main weights from the weights
                after.append((main, flat_param))
        elif _shares_storage(main, param):  # an fp32 run resumed from bf16: the main weights are the weights
            buf = torch.empty(main.numel())
            add(f"optim.main.{info.name}", buf, start, info)
            after.append((main, buf))
        else:
            add(f"optim.main.{info.name}", main.view(-1), start, info)
    dcp.load(state, storage_reader=reader, planner=dcpf.ChunkLoadPlanner(layout), no_dist=True)
    for main, src in after:
        main.view(-1).copy_(src)


def _load_full(ckpt_dir: Path, model_chunks, optimizer) -> None:
    reader = CheckpointReader.open(ckpt_dir, verify_checksums=False)  # find_resumable verified it
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    params = list(global_params(model_chunks))
    owners = ostate.owners(optimizer, params)
    _missing(ckpt_dir, params, reader)
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
