"""Measured quality of the fineweb preset on the labelled near-duplicate set (data_pipeline/dedup/labelled.py):
recall >= 0.95 on pairs with Jaccard >= 0.9, and no pair below Jaccard 0.6 predicted a duplicate."""

from __future__ import annotations

from data_pipeline.dedup.labelled import base_documents, evaluate, labelled_pairs
from data_pipeline.dedup.minhash import MinHasher, MinHashParams
from data_pipeline.samples import fetch


def test_fineweb_preset_recall_and_precision_on_labelled_pairs():
    kit = fetch(["botchan"])["botchan"].read_text()
    # copyright files where the machine has them; botchan chunks always (the set is never empty)
    docs = base_documents(kit, max_copyright=40, kit_chunk_words=600)
    assert sum(name.startswith("botchan@") for name, _ in docs) >= 50
    params = MinHashParams(ngram=5, bands=14, rows=8)
    pairs = labelled_pairs(docs, MinHasher(params))
    result = evaluate(pairs, params, threshold=0.72)
    assert result["bands"]["0.9-1.0"]["pairs"] >= 100 and result["pairs_below_0.6"] >= 100, result
    assert result["recall_j_ge_0.9"] >= 0.95, result
    assert result["removed_below_0.6"] == 0 and result["precision_j_ge_0.6"] >= 0.98, result
