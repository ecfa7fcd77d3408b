"""pretrain/topology.py: rank placement and TP/PP/DP groups, as megatron-core builds them."""

from __future__ import annotations

import pytest

from pretrain.topology import MEGATRON_ORDER, build_topology, expand_nodelist, rank_groups


def test_expand_nodelist():
    assert expand_nodelist("node[1-2]") == ["node1", "node2"]
    assert expand_nodelist("gpu[08-10,12],login1") == ["gpu08", "gpu09", "gpu10", "gpu12", "login1"]
    assert expand_nodelist("a1,b[3]") == ["a1", "b3"]


def test_tp2_pp2_dp2_on_two_nodes():
    t = build_topology(["n1", "n2"], 4, tp=2, pp=2)
    assert t.dp == 2
    # megatron order tp-cp-ep-dp-pp: TP fastest, then DP, then PP (a pipeline stage per node here)
    assert t.groups["tp"] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert t.groups["dp"] == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert t.groups["pp"] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert [t.node_of(r) for r in range(8)] == ["n1"] * 4 + ["n2"] * 4
    assert t.coords(6) == {"tp": 0, "pp": 1, "dp": 1}
    assert t.warnings() == []
    text = t.describe()
    assert "world size 8 = 2 node(s) x 4 task(s); TP=2 PP=2 DP=2" in text
    assert "n2: rank 4 (tp 0, pp 1, dp 0)" in text


def test_tensor_parallel_across_nodes_is_flagged():
    t = build_topology(["n1", "n2"], 2, tp=4, pp=1)
    assert "span nodes" in t.warnings()[0]


def test_layout_must_divide_world():
    with pytest.raises(ValueError, match=r"tp x pp = 2 x 2 does not divide the world size 6"):
        build_topology(["n1", "n2", "n3"], 2, tp=2, pp=2)


@pytest.mark.parametrize("tp,pp,dp", [(1, 1, 4), (2, 1, 2), (2, 2, 1), (2, 2, 2), (4, 2, 3), (1, 4, 2), (8, 1, 1)])
def test_groups_are_megatrons(tp, pp, dp):
    from megatron.core.parallel_state import RankGenerator

    gen = RankGenerator(tp=tp, ep=1, dp=dp, pp=pp, cp=1, order=MEGATRON_ORDER)
    assert rank_groups(tp, pp, dp) == {name: gen.get_ranks(name) for name in ("tp", "dp", "pp")}
