"""Layout-independent checkpoints: save under one (TP, PP, DP), load under any other.

Every tensor is stored whole, under its global name (pretrain.model.global_params): model weights, and the
optimizer's fp32 main weights (when training in bf16) and Adam moments as `optim.<state>.<name>`. Saving gathers
each parameter's tensor-parallel shards (and, with the distributed optimizer, the data-parallel shards of its
optimizer state) and one rank per pipeline stage writes them; loading reads each whole tensor (memory-mapped)
and keeps this rank's slice. The data position is the global consumed-samples count, also layout-independent.

Integrity: a checkpoint is written into `checkpoints/.tmp.iter_XXXXXXX/` and renamed when complete; `latest`
is replaced last, atomically; `meta.json` records every file's sha256. On resume a corrupt or partial newest
checkpoint is detected and the previous one is used, with a warning that names both.

`python -m pretrain.checkpoint inspect DIR` lists what a checkpoint holds.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from megatron.core import parallel_state

from data_pipeline.samples import file_sha256 as _sha256
from pretrain.model import ParamInfo, full_from_shards, global_params, shard_of

LATEST = "latest"
META = "meta.json"


def iter_dir_name(iteration: int) -> str:
    return f"iter_{iteration:07d}"


# ----------------------------------------------------------------------------------------------------------
# Optimizer state, per model parameter, in the parameter's own shape


def _sub_optimizers(optimizer) -> list:
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def _is_distributed(opt) -> bool:
    return hasattr(opt, "model_param_gbuf_map")


def _main_param_map(opt) -> dict:
    """model param -> fp32 main param, for megatron's non-distributed optimizers."""
    mapping = {}
    for model_group, main_group in zip(getattr(opt, "float16_groups", []),
                                       getattr(opt, "fp32_from_float16_groups", [])):
        mapping.update({id(m): p for m, p in zip(model_group, main_group)})
    for group in opt.optimizer.param_groups:
        for p in group["params"]:
            mapping.setdefault(id(p), p)
    return mapping


STATE_KEYS = ("exp_avg", "exp_avg_sq")


@dataclass
class _Owner:
    opt: object
    distributed: bool
    main: dict


def _owners(optimizer, params: list[ParamInfo]) -> dict[int, _Owner]:
    owners = {}
    for opt in _sub_optimizers(optimizer):
        if _is_distributed(opt):
            # model_param_gbuf_map holds only the params whose range overlaps this rank's shard; the others
            # are still this optimizer's (held by other data-parallel ranks), so it owns every param left over.
            for info in params:
                owners.setdefault(id(info.param), _Owner(opt, True, {}))
        else:
            main = _main_param_map(opt)
            for info in params:
                if id(info.param) in main:
                    owners[id(info.param)] = _Owner(opt, False, main)
    return owners


def _local_optim_tensors(owner: _Owner, param: torch.nn.Parameter) -> dict[str, torch.Tensor]:
    """The param-shaped (TP-local) main weights and Adam moments of one parameter on this rank.
    With the distributed optimizer they are assembled from the data-parallel shards (a collective)."""
    if not owner.distributed:
        main = owner.main[id(param)]
        state = owner.opt.optimizer.state.get(main, {})
        out = {"main": main.detach()}
        for k in STATE_KEYS:
            out[k] = state[k].detach() if k in state else torch.zeros_like(main, dtype=torch.float32)
        return out
    opt = owner.opt
    out = {k: torch.zeros(param.numel(), dtype=torch.float32, device=param.device) for k in ("main",) + STATE_KEYS}
    if param in opt.model_param_gbuf_map and param in opt.model_param_group_index_map:
        rng = opt._get_model_param_range_map(param)["param"]
        tensors = opt._get_main_param_and_optimizer_states(param)
        out["main"][rng.start:rng.end] = tensors["param"].detach().float()
        for k in STATE_KEYS:
            if k in tensors:
                out[k][rng.start:rng.end] = tensors[k].detach().float()
    group = parallel_state.get_data_parallel_group(with_context_parallel=True)
    for k in out:
        torch.distributed.all_reduce(out[k], group=group)
        out[k] = out[k].view(param.shape)
    return out


def _set_local_optim_tensors(owner: _Owner, param: torch.nn.Parameter, tensors: dict[str, torch.Tensor],
                             step: int) -> None:
    if not owner.distributed:
        main = owner.main[id(param)]
        main.data.copy_(tensors["main"].to(main.dtype))
        state = owner.opt.optimizer.state.setdefault(main, {})
        for k in STATE_KEYS:
            state[k] = tensors[k].to(device=main.device, dtype=torch.float32).clone()
        state["step"] = torch.tensor(float(step))
        return
    opt = owner.opt
    if param not in opt.model_param_gbuf_map or param not in opt.model_param_group_index_map:
        return
    rng = opt._get_model_param_range_map(param)["param"]
    group_index, group_order = opt.model_param_group_index_map[param]
    main = opt.optimizer.param_groups[group_index]["params"][group_order]
    main.data.copy_(tensors["main"].flatten()[rng.start:rng.end].to(main.dtype))
    state = opt.optimizer.state.setdefault(main, {})
    for k in STATE_KEYS:
        state[k] = tensors[k].flatten()[rng.start:rng.end].to(device=main.device, dtype=torch.float32).clone()
    state["step"] = torch.tensor(float(step))


# ----------------------------------------------------------------------------------------------------------
# Save


def _tp_gather(t: torch.Tensor, info: ParamInfo) -> torch.Tensor:
    tp = parallel_state.get_tensor_model_parallel_world_size()
    if info.tp_dim < 0 or tp == 1:
        return t
    shards = [torch.empty_like(t) for _ in range(tp)]
    torch.distributed.all_gather(shards, t.contiguous(), group=parallel_state.get_tensor_model_parallel_group())
    return full_from_shards(shards, info)


def save(ckpt_root: Path, iteration: int, model_chunks, optimizer, extra: dict, save_main: bool) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory."""
    rank = torch.distributed.get_rank()
    name = iter_dir_name(iteration)
    tmp, final = ckpt_root / f".tmp.{name}", ckpt_root / name
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    torch.distributed.barrier()

    params = list(global_params(model_chunks))
    owners = _owners(optimizer, params)
    writer = (parallel_state.get_tensor_model_parallel_rank() == 0
              and parallel_state.get_data_parallel_rank(with_context_parallel=True) == 0)
    tensors: dict[str, torch.Tensor] = {}
    for info in params:
        full = _tp_gather(info.param.detach(), info)
        if writer:
            tensors[info.name] = full.cpu().clone()
        local = _local_optim_tensors(owners[id(info.param)], info.param)
        for k, t in local.items():
            if k == "main" and not save_main:
                continue
            full = _tp_gather(t, info)
            if writer:
                tensors[f"optim.{k}.{info.name}"] = full.cpu().clone()

    files: dict[str, str] = {}
    if writer:
        fname = f"tensors_rank{rank:05d}.pt"
        torch.save(tensors, tmp / fname)
        files = {k: fname for k in tensors}
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, files)
    if rank == 0:
        index = {k: v for part in gathered for k, v in part.items()}
        checksums = {f: _sha256(tmp / f) for f in sorted(set(index.values()))}
        meta = dict(extra, iteration=iteration, index=index, sha256=checksums)
        (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = ckpt_root / f".{LATEST}.tmp"
        pointer.write_text(name + "\n")
        os.replace(pointer, ckpt_root / LATEST)  # the pointer moves last
    torch.distributed.barrier()
    return final


# ----------------------------------------------------------------------------------------------------------
# Find and verify


def verify(ckpt_dir: Path) -> str | None:
    """None if the checkpoint is complete and its checksums match, else the reason."""
    meta_path = ckpt_dir / META
    if not meta_path.is_file():
        return f"{META} missing (partial write)"
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        return f"{META} unreadable: {e}"
    for fname, digest in meta.get("sha256", {}).items():
        f = ckpt_dir / fname
        if not f.is_file():
            return f"{fname} missing"
        if _sha256(f) != digest:
            return f"{fname} checksum mismatch (truncated or corrupt)"
    return None


def find_resumable(ckpt_root: Path) -> tuple[Path | None, list[str]]:
    """The newest verified checkpoint (latest first, then older ones) and warnings about skipped ones."""
    if not ckpt_root.is_dir():
        return None, []
    candidates = sorted((p for p in ckpt_root.glob("iter_*") if p.is_dir()), reverse=True)
    pointer = ckpt_root / LATEST
    if pointer.is_file():
        latest = ckpt_root / pointer.read_text().strip()
        candidates = [latest] + [c for c in candidates if c != latest]
    notes = []
    for cand in candidates:
        reason = verify(cand) if cand.is_dir() else "directory missing"
        if reason is None:
            if notes:
                notes[-1] += f"; resuming from {cand.name}"
            return cand, notes
        notes.append(f"checkpoint {cand.name} is corrupt ({reason})")
    if notes:
        notes[-1] += "; no usable checkpoint, starting from scratch"
    return None, notes


# ----------------------------------------------------------------------------------------------------------
# Load


class _Reader:
    def __init__(self, ckpt_dir: Path, index: dict[str, str]):
        self.dir, self.index, self.open = ckpt_dir, index, {}

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __getitem__(self, key: str) -> torch.Tensor:
        fname = self.index[key]
        if fname not in self.open:
            self.open[fname] = torch.load(self.dir / fname, mmap=True, weights_only=True, map_location="cpu")
        return self.open[fname][key]


def read_meta(ckpt_dir: Path) -> dict:
    return json.loads((ckpt_dir / META).read_text())


@torch.no_grad()
def load(ckpt_dir: Path, model_chunks, optimizer) -> dict:
    """Load weights and optimizer state for this rank's shards. Returns the checkpoint's metadata."""
    meta = read_meta(ckpt_dir)
    reader = _Reader(ckpt_dir, meta["index"])
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    params = list(global_params(model_chunks))
    owners = _owners(optimizer, params)
    missing = [i.name for i in params if i.name not in reader]
    if missing:
        raise KeyError(f"checkpoint {ckpt_dir} lacks {len(missing)} parameters of this model, e.g. {missing[:3]}: "
                       "it was saved from a different model shape (check model.* overrides)")
    for info in params:
        full = reader[info.name]
        local = shard_of(full, info, tp_rank, tp_size)
        if tuple(local.shape) != tuple(info.param.shape):
            raise ValueError(f"{info.name}: checkpoint shape {tuple(full.shape)} does not fit this model "
                             f"(local {tuple(info.param.shape)} under tp={tp_size})")
        info.param.copy_(local.to(info.param.dtype))
        tensors = {}
        main_key = f"optim.main.{info.name}"
        tensors["main"] = shard_of(reader[main_key], info, tp_rank, tp_size) if main_key in reader else local
        for k in STATE_KEYS:
            tensors[k] = shard_of(reader[f"optim.{k}.{info.name}"], info, tp_rank, tp_size)
        _set_local_optim_tensors(owners[id(info.param)], info.param, tensors, meta["iteration"])
    # megatron's DDP keeps the model weights in contiguous buffers that the optimizer copies from its main
    # weights after each step; the copies above wrote the model weights and main weights directly.
    return meta


# ----------------------------------------------------------------------------------------------------------
# CLI


def inspect(ckpt_dir: Path) -> str:
    ckpt_dir = Path(ckpt_dir)
    if (ckpt_dir / LATEST).is_file():
        ckpt_dir = ckpt_dir / (ckpt_dir / LATEST).read_text().strip()
    elif (ckpt_dir / "checkpoints" / LATEST).is_file():
        root = ckpt_dir / "checkpoints"
        ckpt_dir = root / (root / LATEST).read_text().strip()
    meta = read_meta(ckpt_dir)
    reason = verify(ckpt_dir)
    lines = [f"checkpoint: {ckpt_dir}",
             f"status: {'OK (all checksums match)' if reason is None else 'CORRUPT: ' + reason}",
             f"iteration: {meta['iteration']}   consumed samples: {meta.get('consumed_samples')}   "
             f"tokens: {meta.get('tokens')}",
             f"saved under: {meta.get('layout')}"]
    reader = _Reader(ckpt_dir, meta["index"])
    model_keys = sorted(k for k in meta["index"] if not k.startswith("optim."))
    optim_keys = sorted(k for k in meta["index"] if k.startswith("optim."))
    n = 0
    lines.append(f"model tensors ({len(model_keys)}):")
    for k in model_keys:
        t = reader[k]
        n += t.numel()
        lines.append(f"  {k:70s} {str(tuple(t.shape)):>16s} {str(t.dtype).replace('torch.', '')}")
    lines.append(f"parameters: {n:,}")
    kinds = sorted({k.split(".")[1] for k in optim_keys})
    lines.append(f"optimizer state: {len(optim_keys)} tensors ({', '.join(kinds)}), step {meta['iteration']}")
    files = meta.get("sha256", {})
    lines.append(f"files: {len(files)} ({sum((ckpt_dir / f).stat().st_size for f in files) / 2**20:.1f} MiB)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "inspect":
        print("usage: python -m pretrain.checkpoint inspect <checkpoint dir | checkpoints dir | run dir>",
              file=sys.stderr)
        return 2
    try:
        print(inspect(Path(argv[1])))
    except FileNotFoundError as e:
        print(f"error: {e}. Pass a checkpoint directory (iter_XXXXXXX), its parent, or a run directory.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    sys.exit(main())
