"""pretrain.checkpoint_dcp.chunks: any flat range of a rank's TP-local tensor (a distributed-optimizer shard)
becomes chunks of the global tensor that hold exactly that range's values, at the right global offsets."""

from __future__ import annotations

import math
import random

import pytest
import torch

from pretrain.checkpoint_dcp import chunks, flat_boxes
from pretrain.model import ParamInfo, shard_of


@pytest.mark.parametrize("shape", [(7,), (3, 5), (4, 3, 6), (2, 3, 2, 4)])
def test_flat_boxes_tile_the_range_in_order(shape):
    n = math.prod(shape)
    rng = random.Random(0)
    for _ in range(60):
        start = rng.randrange(n)
        end = rng.randrange(start, n + 1)
        marks = torch.zeros(shape, dtype=torch.int64)
        for off, size in flat_boxes(shape, start, end):
            assert len(off) == len(size) == len(shape)
            marks[tuple(slice(o, o + z) for o, z in zip(off, size))] += 1
        want = torch.zeros(n, dtype=torch.int64)
        want[start:end] = 1
        assert torch.equal(marks.view(-1), want), (shape, start, end)
        assert len(flat_boxes(shape, start, end)) <= 2 * len(shape) - 1


# (global shape, tp_dim, tp_stride, tp size): replicated, column-parallel, row-parallel, SwiGLU's strided fc1
CASES = [((6, 4), -1, 1, 2), ((8, 3), 0, 1, 2), ((3, 8), 1, 1, 4), ((8, 5), 0, 2, 2), ((12, 2), 0, 2, 3)]


@pytest.mark.parametrize("gshape,tp_dim,stride,tp", CASES)
def test_chunks_of_a_flat_range_hold_its_values_at_global_offsets(gshape, tp_dim, stride, tp):
    full = torch.arange(math.prod(gshape), dtype=torch.float32).view(gshape)
    rng = random.Random(1)
    for tp_rank in range(tp):
        probe = ParamInfo("w", torch.nn.Parameter(full), tp_dim, stride)
        local = shard_of(full, probe, tp_rank, tp).contiguous()
        info = ParamInfo("w", torch.nn.Parameter(local), tp_dim, stride)
        n = local.numel()
        for start, end in [(0, n)] + [sorted(rng.sample(range(n + 1), 2)) for _ in range(25)]:
            flat = local.view(-1)[start:end].clone()
            got = chunks("w", flat, start, info, tp_rank, tp)
            assert sum(v.numel() for _, v, _, _ in got) == end - start
            for key, view, offsets, g in got:
                assert g == gshape and key.startswith("w@")
                box = full[tuple(slice(o, o + z) for o, z in zip(offsets, view.shape))]
                assert torch.equal(view, box), (tp_rank, start, end, offsets)
            # the views alias the flat shard: writing through them fills it (how dcp.load reads into a shard)
            flat.zero_()
            for _, view, offsets, _ in got:
                view.copy_(full[tuple(slice(o, o + z) for o, z in zip(offsets, view.shape))])
            assert torch.equal(flat, local.view(-1)[start:end])


def test_direct_reader_reads_what_dcp_reads_whole_chunks_reshards_and_dtype_changes(tmp_path):
    """DirectReader (raw bytes straight into the target) against the global tensors, for a checkpoint of
    row chunks written by torch.distributed.checkpoint: targets that are whole saved chunks (the direct read),
    flat ranges crossing chunk boundaries (a reshard: buffered reads), a bf16 tensor read into fp32, and a
    non-tensor item (DCP's own reader)."""
    import io

    import torch.distributed.checkpoint as dcp

    from pretrain.checkpoint_dcp import ChunkLoadPlanner, ChunkSavePlanner, DirectReader

    w = torch.randn(8, 6)
    b = torch.randn(5, 4).to(torch.bfloat16)
    save, layout = {}, {}
    for r in range(2):  # w saved as two row chunks (two TP ranks' worth), b whole
        info = ParamInfo("w", torch.nn.Parameter(w[4 * r:4 * r + 4]), 0, 1)
        for key, view, offsets, g in chunks("w", w[4 * r:4 * r + 4].reshape(-1).clone(), 0, info, r, 2):
            save[key], layout[key] = view, ("w", offsets, g)
    save["b@0"], layout["b@0"] = b, ("b", (0, 0), (5, 4))
    dcp.save(save, storage_writer=dcp.FileSystemWriter(str(tmp_path)), planner=ChunkSavePlanner(layout),
             no_dist=True)
    dcp.save({"note": io.BytesIO(b"hello")}, storage_writer=dcp.FileSystemWriter(str(tmp_path / "bytes")),
             no_dist=True)

    def load(targets: dict) -> None:
        state, lay = {}, {}
        for name, (flat, start, info, tp_rank, tp) in targets.items():
            for key, view, offsets, g in chunks(name, flat, start, info, tp_rank, tp):
                state[key], lay[key] = view, (name, offsets, g)
        dcp.load(state, storage_reader=DirectReader(str(tmp_path)), planner=ChunkLoadPlanner(lay), no_dist=True)

    whole = torch.full((4, 6), float("nan"))  # TP rank 1's rows: exactly the second saved chunk
    load({"w": (whole.view(-1), 0, ParamInfo("w", torch.nn.Parameter(whole), 0, 1), 1, 2)})
    assert torch.equal(whole, w[4:])
    info = ParamInfo("w", torch.nn.Parameter(w), -1, 1)
    for start, end in [(0, 48), (5, 31), (23, 25), (30, 47)]:  # flat shards of the whole tensor
        flat = torch.full((end - start,), float("nan"))
        load({"w": (flat, start, info, 0, 1)})
        assert torch.equal(flat, w.view(-1)[start:end]), (start, end)
    as_fp32 = torch.zeros(20)
    load({"b": (as_fp32, 0, ParamInfo("b", torch.nn.Parameter(b.float()), -1, 1), 0, 1)})
    assert torch.equal(as_fp32, b.float().view(-1))
    got = {"note": io.BytesIO()}
    dcp.load(got, storage_reader=DirectReader(str(tmp_path / "bytes")), no_dist=True)
    assert got["note"].getvalue() == b"hello"
