"""The `dcp` checkpoint format: torch.distributed.checkpoint (DCP) files under the same global names as the
`full` format, written in parallel by every rank.

Each rank describes its TP-local slice of every tensor (model weights, and the optimizer's main weights and Adam
moments as `optim.<state>.<name>`) as chunks of the global tensor: a global name, the chunk's offsets in the
global tensor and the global shape (`pieces`). megatron's strided partitioning (linear_fc1 under SwiGLU holds
[gate_r; up_r] on TP rank r) makes one rank's slice `tp_stride` separate chunks, which DTensor's Shard(dim)
cannot express; explicit chunks can, and need no DeviceMesh or ShardedTensor process group. `ChunkSavePlanner`
turns them into DCP write items; DCP's global planning de-duplicates identical chunks (data-parallel replicas,
the tied embedding's copy on the last pipeline stage) onto the least-loaded rank, so every rank writes its
share of the checkpoint into its own file. `ChunkLoadPlanner` reads the chunks a rank needs under any other
layout (DCP computes the overlaps with the saved chunks and reads only those bytes).

`HashingWriter` is DCP's FileSystemWriter that, once its files are written (in the background thread when the
save is asynchronous), records their sha256 in `sha256/rankNNNNN.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex, TensorProperties
from torch.distributed.checkpoint.planner import (LoadPlan, SavePlan, TensorWriteData, WriteItem,
                                                  WriteItemType)
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from data_pipeline.samples import file_sha256
from pretrain.model import ParamInfo, full_shape

SHA_DIR = "sha256"
DCP_METADATA = ".metadata"

# internal state-dict key -> (global name, offsets in the global tensor, global shape)
Layout = dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]]


def pieces(name: str, local: torch.Tensor, info: ParamInfo, tp_rank: int, tp_size: int):
    """[(key, view of `local`, offsets, global shape)]: this rank's TP-local tensor as chunks of the global one
    (the inverse of pretrain.model.shard_of)."""
    gshape = full_shape(info, tp_size)
    zero = (0,) * local.dim()
    if info.tp_dim < 0 or tp_size == 1:
        return [(f"{name}#0", local, zero, gshape)]
    d, s = info.tp_dim, info.tp_stride
    per, seg = local.shape[d] // s, gshape[d] // s
    out = []
    for k in range(s):
        offsets = list(zero)
        offsets[d] = k * seg + tp_rank * per
        out.append((f"{name}#{k}", local.narrow(d, k * per, per), tuple(offsets), gshape))
    return out


class ChunkSavePlanner(DefaultSavePlanner):
    """Writes each state-dict tensor as the chunk `layout` places it at."""

    def __init__(self, layout: Layout):
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self.layout = layout

    def create_local_plan(self) -> SavePlan:
        items, self._by_index = [], {}
        for key, t in self.state_dict.items():
            name, offsets, gshape = self.layout[key]
            index = MetadataIndex(name, torch.Size(offsets))
            self._by_index[(name, tuple(offsets))] = t
            items.append(WriteItem(index=index, type=WriteItemType.SHARD, tensor_data=TensorWriteData(
                chunk=ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=t.size()),
                properties=TensorProperties.create_from_tensor(t), size=torch.Size(gshape))))
        self.plan = SavePlan(items)
        return self.plan

    def resolve_data(self, write_item: WriteItem):
        t = self._by_index[(write_item.index.fqn, tuple(write_item.index.offset))]
        return t if t.is_contiguous() else t.contiguous()


class ChunkLoadPlanner(DefaultLoadPlanner):
    """Fills each state-dict tensor with the chunk of the saved global tensor that `layout` places it at."""

    def __init__(self, layout: Layout):
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self.layout = layout

    def create_local_plan(self) -> LoadPlan:
        items, self._by_index = [], {}
        md = self.metadata.state_dict_metadata
        for key, t in self.state_dict.items():
            name, offsets, gshape = self.layout[key]
            saved = md[name]
            if tuple(saved.size) != tuple(gshape):
                from pretrain.checkpoint_reader import CheckpointError

                raise CheckpointError(f"{name}: checkpoint shape {tuple(saved.size)} does not fit this model "
                                      f"(global {tuple(gshape)})")
            self._by_index[(name, tuple(offsets))] = t
            items += create_read_items_for_chunk_list(
                name, saved, [ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=t.size())])
        return LoadPlan(items)

    def lookup_tensor(self, index: MetadataIndex) -> torch.Tensor:
        return self._by_index[(index.fqn, tuple(index.offset))]


class HashingWriter(FileSystemWriter):
    """FileSystemWriter that records the sha256 of the files this rank wrote in sha256/rankNNNNN.json."""

    def __init__(self, path: Path, rank: int):
        super().__init__(str(path))
        self.dir, self.rank = Path(path), rank

    def write_data(self, plan, planner):
        fut = super().write_data(plan, planner)
        results = fut.wait()
        files = sorted({r.storage_data.relative_path for r in results})
        digests = {f: file_sha256(self.dir / f) for f in files}
        (self.dir / SHA_DIR).mkdir(exist_ok=True)
        tmp = self.dir / SHA_DIR / f".rank{self.rank:05d}.json.tmp"
        tmp.write_text(json.dumps(digests, indent=1, sort_keys=True))
        tmp.replace(self.dir / SHA_DIR / f"rank{self.rank:05d}.json")
        return fut


def recorded_files(ckpt_dir: Path, meta: dict) -> dict[str, str] | str:
    """{relative file: sha256} of a dcp checkpoint (meta.json's own files and every writer's record), or the
    reason it cannot be listed."""
    files = dict(meta.get("sha256", {}))
    for r in range(int(meta.get("writers", 0))):
        f = Path(ckpt_dir) / SHA_DIR / f"rank{r:05d}.json"
        try:
            files.update(json.loads(f.read_text()))
        except (OSError, ValueError) as e:
            return f"{SHA_DIR}/{f.name} unreadable or missing ({type(e).__name__})"
    return files
