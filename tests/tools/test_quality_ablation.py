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


def test_paired_differences_and_their_interval():
    from tools.bench.quality_ablation import paired

    # every seed favours top by 0.1 +- 0.01: conclusive; mixed signs around 0: not
    clear = paired([6.9, 7.0, 7.1, 6.95], [7.0, 7.11, 7.19, 7.05])
    assert clear["favour_top"] == 4 and clear["conclusive"] and clear["ci95"][1] < 0
    assert abs(clear["mean"] + 0.1) < 0.01
    mixed = paired([6.89, 7.0, 7.09], [7.2, 7.0, 7.0])
    assert mixed["differences"] == [-0.31, 0.0, 0.09] and not mixed["conclusive"]
    assert mixed["ci95"][0] < 0 < mixed["ci95"][1]
    assert "ci95" not in paired([7.0], [7.1])  # one seed: no interval
