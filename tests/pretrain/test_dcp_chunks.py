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
