"""The keep rules of data_pipeline/score/rules.py: GPT-3's Pareto rule and the exact top fraction per source."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipeline.score.rules import (Threshold, above, id_uniform, keep_top_fraction, keep_top_fraction_by_source,
                                       pareto_keep, pareto_keep_probability, top_fraction_threshold)

N = 100_000
IDS = [f"crawl/{i:06d}.warc.gz#{i * 7919 % 1000003}" for i in range(N)]


def test_uniforms_from_ids_are_uniform():
    u = np.array([id_uniform(i, 3) for i in IDS])
    assert 0.0 < u.min() and u.max() < 1.0
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(counts - N / 10) < 5 * np.sqrt(N / 10))  # chi-like check, 5 sigma per bin


@pytest.mark.parametrize("score", [0.0, 0.3, 0.6, 0.8, 0.9, 0.97, 1.0])
def test_pareto_keep_rate_matches_the_closed_form(score):
    p = float(pareto_keep_probability(score))
    assert p == pytest.approx((2.0 - score) ** -9)
    rate = pareto_keep(IDS, np.full(N, score), seed=7).mean()
    sigma = np.sqrt(p * (1 - p) / N)
    assert abs(rate - p) <= 4 * sigma + 1e-12, (score, rate, p)


def test_pareto_keep_is_numpys_pareto_in_distribution():
    """The same keep rate as GPT-3's np.random.pareto(9) > 1 - s draw (a generator, for comparison only)."""
    scores = np.random.default_rng(0).uniform(size=N)
    ours = pareto_keep(IDS, scores, seed=1).mean()
    numpy = (np.random.default_rng(1).pareto(9, size=N) > 1 - scores).mean()
    expected = pareto_keep_probability(scores).mean()
    sigma = np.sqrt(expected * (1 - expected) / N)
    assert abs(ours - expected) < 4 * sigma and abs(numpy - expected) < 4 * sigma


def test_pareto_decisions_do_not_depend_on_order_or_split():
    scores = np.random.default_rng(1).uniform(size=N)
    keep = pareto_keep(IDS, scores, seed=5)
    perm = np.random.default_rng(2).permutation(N)
    assert np.array_equal(pareto_keep([IDS[i] for i in perm], scores[perm], seed=5), keep[perm])
    # any task split: each task decides its share alone
    parts = [pareto_keep(IDS[r::7], scores[r::7], seed=5) for r in range(7)]
    assert all(np.array_equal(parts[r], keep[r::7]) for r in range(7))
    other = pareto_keep(IDS, scores, seed=6)
    assert not np.array_equal(other, keep) and abs(other.mean() - keep.mean()) < 0.01
    with pytest.raises(ValueError, match="positive"):
        pareto_keep(IDS[:1], [0.5], seed=1, alpha=0)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_top_fraction_keeps_exactly_the_fraction_with_ties(fraction):
    n = 10_000
    rng = np.random.default_rng(3)
    scores = np.round(rng.uniform(size=n), 2)  # 101 distinct values: many ties at the threshold
    ids = IDS[:n]
    keep = keep_top_fraction(ids, scores, fraction, seed=4)
    assert keep.sum() == round(fraction * n)
    if 0 < keep.sum() < n:
        assert scores[keep].min() >= scores[~keep].max()  # a score threshold
        assert scores[keep].min() == scores[~keep].max()  # with ties there, broken by the id hash
    perm = rng.permutation(n)
    assert np.array_equal(keep_top_fraction([ids[i] for i in perm], scores[perm], fraction, seed=4), keep[perm])
    threshold = top_fraction_threshold(ids, scores, fraction, seed=4)
    assert [above(threshold, i, s, seed=4) for i, s in zip(ids[:500], scores[:500])] == keep[:500].tolist()


def test_top_fraction_per_source():
    rng = np.random.default_rng(5)
    sources = ["web"] * 3000 + ["wiki"] * 1000 + ["books"] * 10
    scores = np.concatenate([rng.uniform(0, 0.5, 3000), rng.uniform(0.5, 1, 1000), rng.uniform(size=10)])
    keep = keep_top_fraction_by_source(sources, IDS[:4010], scores, {"web": 0.1, "wiki": 0.5, "books": 0.35})
    src = np.array(sources)
    assert [int(keep[src == s].sum()) for s in ("web", "wiki", "books")] == [300, 500, 4]
    assert keep_top_fraction_by_source(sources, IDS[:4010], scores, 0.2).sum() == 600 + 200 + 2
    with pytest.raises(ValueError, match="no fraction for source 'books'"):
        keep_top_fraction_by_source(sources, IDS[:4010], scores, {"web": 0.1, "wiki": 0.5})
    with pytest.raises(ValueError, match="share"):
        top_fraction_threshold(IDS[:2], [0.1, 0.2], 1.5)
    assert top_fraction_threshold(IDS[:2], [0.1, 0.2], 0.0) is None and not above(None, "x", 1.0)
    t = top_fraction_threshold(IDS[:2], [0.1, 0.2], 0.5)
    assert isinstance(t, Threshold) and t.score == 0.2
