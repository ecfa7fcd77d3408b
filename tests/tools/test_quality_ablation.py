"""The ablation's equal-token selection (tools/bench/quality_ablation.py)."""

import pytest

from tools.bench.quality_ablation import select_equal_tokens


def test_exact_budget_in_order_last_document_cut():
    lengths = [5, 3, 8, 2]
    picked = select_equal_tokens([2, 0, 1, 3], lengths, 11)
    assert picked == [(2, 8), (0, 3)]
    picked = select_equal_tokens([3, 1, 0, 2], lengths, 12)
    assert picked == [(3, 2), (1, 3), (0, 5), (2, 2)]
    assert sum(n for _, n in picked) == 12


def test_budget_over_pool_refused():
    with pytest.raises(ValueError, match="lower --fraction"):
        select_equal_tokens([0, 1], [4, 4], 9)
