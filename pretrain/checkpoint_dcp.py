"""The `dcp` checkpoint format: torch.distributed.checkpoint (DCP) files under the same global names as the
`full` format, written in parallel by every rank.

Each rank describes what it holds of every tensor (model weights, and the optimizer's main weights and Adam
moments as `optim.<state>.<name>`) as chunks of the global tensor: a global name, the chunk's offsets in the
global tensor and the global shape (`chunks`). What it holds is a flat range of its TP-local tensor: the whole
of it, or, for the distributed optimizer's state, the data-parallel shard it owns (a contiguous range of the
flattened tensor, cut into at most 2 * ndim - 1 boxes by `flat_boxes`). megatron's strided partitioning
(linear_fc1 under SwiGLU holds [gate_r; up_r] on TP rank r) cuts each box into `tp_stride` chunks, which
DTensor's Shard(dim) cannot express; explicit chunks can, and need no DeviceMesh or ShardedTensor process
group. `ChunkSavePlanner` turns them into DCP write items; DCP's global planning checks that the chunks tile
each tensor and de-duplicates identical ones (data-parallel replicas of weights, the tied embedding's copy on
the last pipeline stage) onto the least-loaded rank, so every rank writes its share of the checkpoint into its
own file. `ChunkLoadPlanner` reads the chunks a rank needs under any other layout straight into its tensors
(DCP computes the overlaps with the saved chunks and reads only those bytes).

`HashingWriter` is DCP's FileSystemWriter that, once its files are written (in the background thread when the
save is asynchronous), records their sha256 in `sha256/rankNNNNN.json`.
"""

from __future__ import annotations

import io
import json
import math
import operator
import re
import struct
import zipfile
from pathlib import Path

import torch
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex, TensorProperties
from torch.distributed.checkpoint.planner import (LoadItemType, LoadPlan, SavePlan, TensorWriteData, WriteItem,
                                                  WriteItemType)
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list
from torch.futures import Future

from data_pipeline.samples import file_sha256
from pretrain.model import ParamInfo, full_shape

SHA_DIR = "sha256"
DCP_METADATA = ".metadata"

# internal state-dict key -> (global name, offsets in the global tensor, global shape)
Layout = dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]]


def flat_boxes(shape: tuple[int, ...], start: int, end: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """[(offsets, sizes)]: boxes of a row-major tensor of `shape` that together hold exactly its flattened
    elements [start, end), in order: a partial first row, a block of whole rows, a partial last row, recursively
    (at most 2 * ndim - 1 boxes)."""
    if start >= end:
        return []
    if len(shape) == 1:
        return [((start,), (end - start,))]
    inner = math.prod(shape[1:])
    zeros, out = (0,) * (len(shape) - 1), []
    row = start // inner
    if start % inner:  # partial first row
        stop = min(end, (row + 1) * inner)
        out += [((row, *o), (1, *z)) for o, z in flat_boxes(shape[1:], start - row * inner, stop - row * inner)]
        start, row = stop, row + 1
    if end // inner > row:  # whole rows
        out.append(((row, *zeros), (end // inner - row, *shape[1:])))
        start = end // inner * inner
    if start < end:  # partial last row
        row = start // inner
        out += [((row, *o), (1, *z)) for o, z in flat_boxes(shape[1:], 0, end - row * inner)]
    return out


def chunks(name: str, flat: torch.Tensor, start: int, info: ParamInfo, tp_rank: int, tp_size: int):
    """[(key, view, offsets, global shape)]: the elements [start, start + flat.numel()) of this rank's TP-local
    tensor of parameter `info` (the whole of it when start is 0 and `flat` has its numel), held in the contiguous
    1-D `flat`, as chunks of the global tensor. Each view aliases `flat`. A data-parallel shard of the
    distributed optimizer is such a flat range; megatron's strided TP partitioning (linear_fc1 under SwiGLU
    holds [gate_r; up_r] on TP rank r) cuts each box into one chunk per stride."""
    shape, gshape = tuple(info.param.shape), full_shape(info, tp_size)
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    split = info.tp_dim >= 0 and tp_size > 1
    d, s = (info.tp_dim, info.tp_stride) if split else (0, 1)
    per, seg = shape[d] // s, gshape[d] // s
    out = []
    for off, size in flat_boxes(shape, start, start + flat.numel()):
        for k in range(s):
            lo, hi = max(off[d], k * per), min(off[d] + size[d], (k + 1) * per)
            if lo >= hi:
                continue
            o, z = list(off), list(size)
            o[d], z[d] = lo, hi - lo
            view = flat.as_strided(z, strides, flat.storage_offset() + sum(map(operator.mul, o, strides)) - start)
            g = list(o)
            if split:
                g[d] = lo - k * per + k * seg + tp_rank * per
            out.append((f"{name}@{tuple(g)}", view, tuple(g), gshape))
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


class _Window(io.RawIOBase):
    """The bytes [offset, offset + length) of an open binary file, as a seekable file of their own."""

    def __init__(self, f, offset: int, length: int):
        super().__init__()
        self.f, self.offset, self.length, self.pos = f, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence] + pos
        return self.pos

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self.length - self.pos))
        self.f.seek(self.offset + self.pos)
        got = self.f.readinto(memoryview(b).cast("B")[:n])
        self.pos += got
        return got


def _raw_data(f, offset: int, length: int) -> tuple[int, int] | None:
    """(file offset, size) of the tensor bytes inside the torch.save archive that DCP wrote at [offset,
    offset + length) of `f` (a zip whose one data record is stored uncompressed), or None if it is not one."""
    win = _Window(f, offset, length)
    try:
        with zipfile.ZipFile(win) as z:
            data = [i for i in z.infolist() if re.fullmatch(r"[^/]+/data/\d+", i.filename)]
            if len(data) != 1 or data[0].compress_type != zipfile.ZIP_STORED:
                return None
            info = data[0]
    except zipfile.BadZipFile:
        return None
    win.seek(info.header_offset)
    header = win.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return offset + info.header_offset + 30 + name_len + extra_len, info.file_size


class DirectReader(FileSystemReader):
    """FileSystemReader that reads each saved chunk's bytes straight into the tensor that needs them.

    DCP's own reader torch.load()s every chunk into a new tensor and copies the part needed into the target:
    two copies and a deserialisation per chunk. Here, when a target is a whole saved chunk (a resume under the
    layout it was saved in) and is contiguous on the CPU in the saved dtype, the chunk's raw bytes are read into
    it: one copy. Any other request reads the chunk's raw bytes once into a buffer and copies its part (a
    reshard); items that are not a plain stored tensor go to DCP's reader."""

    def set_up_storage_reader(self, metadata, is_coordinator: bool, *args, **kwargs) -> None:
        super().set_up_storage_reader(metadata, is_coordinator, *args, **kwargs)
        self._tensors = metadata.state_dict_metadata

    def _saved_chunk(self, index: MetadataIndex) -> tuple[torch.Size, torch.dtype] | None:
        md = self._tensors.get(index.fqn)
        chunk = next((c for c in getattr(md, "chunks", ()) if tuple(c.offsets) == tuple(index.offset)), None)
        return None if chunk is None else (chunk.sizes, md.properties.dtype)

    def read_data(self, plan: LoadPlan, planner) -> Future:
        per_file: dict[str, list] = {}
        for req in plan.items:
            per_file.setdefault(self.storage_data[req.storage_index].relative_path, []).append(req)
        rest = []
        for relative_path, reqs in per_file.items():
            with open(self.fs.concat_path(self.path, relative_path), "rb") as f:
                reqs.sort(key=lambda r: self.storage_data[r.storage_index].offset)
                buffered = (None, None)
                for req in reqs:
                    sinfo = self.storage_data[req.storage_index]
                    chunk = None if (req.type == LoadItemType.BYTE_IO or sinfo.transform_descriptors) \
                        else self._saved_chunk(req.storage_index)
                    raw = None if chunk is None else _raw_data(f, sinfo.offset, sinfo.length)
                    sizes, dtype = chunk or (None, None)
                    if raw is None or raw[1] != math.prod(sizes) * dtype.itemsize:
                        rest.append(req)
                        continue
                    target = planner.resolve_tensor(req).detach()
                    whole = tuple(req.lengths) == tuple(sizes) and not any(req.storage_offsets)
                    if whole and target.is_contiguous() and target.device.type == "cpu" and target.dtype == dtype:
                        _read_exact(f, raw, target)
                    else:
                        if buffered[0] != req.storage_index:
                            buffered = (req.storage_index, _read_exact(f, raw, torch.empty(sizes, dtype=dtype)))
                        target.copy_(_narrow(buffered[1], req.storage_offsets, req.lengths))
                    planner.commit_tensor(req, target)
        if rest:
            super().read_data(LoadPlan(rest), planner).wait()
        fut: Future = Future()
        fut.set_result(None)
        return fut


def _narrow(t: torch.Tensor, offsets, lengths) -> torch.Tensor:
    for d, (o, n) in enumerate(zip(offsets, lengths)):
        t = t.narrow(d, o, n)
    return t


def _read_exact(f, raw: tuple[int, int], out: torch.Tensor) -> torch.Tensor:
    offset, size = raw
    f.seek(offset)
    if f.readinto(memoryview(out.view(-1).view(torch.uint8).numpy())) != size:
        from pretrain.checkpoint_reader import CheckpointError

        raise CheckpointError(f"{f.name}: truncated at byte {offset} (wanted {size} bytes)")
    return out
