"""A labelled near-duplicate set from real text, and precision/recall of the MinHash decision per Jaccard band.

Base documents: the Debian ``/usr/share/doc/*/copyright`` files of this machine (licence texts) and chunks of
the sample kit's botchan.txt (always there, so the set is never empty on a machine with few copyright files).
Each base gets variants edited at controlled rates: sentences dropped, inserted (from other documents),
reordered, boilerplate added. Every (base, variant) pair, and random (base, other base) pairs, is labelled with
its exact Jaccard over the same shingles MinHash uses. A pair is predicted a duplicate the way the pairs
pipeline decides it: a shared band key and 32-bit signature agreement >= threshold.
"""

from __future__ import annotations

import glob
import math
import random
import re

import numpy as np

from data_pipeline.dedup.minhash import MinHasher, MinHashParams, s_curve

BANDS = ((0.9, 1.01), (0.8, 0.9), (0.7, 0.8), (0.6, 0.7), (0.5, 0.6), (0.0, 0.5))
RATES = (0.01, 0.03, 0.06, 0.1, 0.15, 0.25, 0.4, 0.6)
BOILERPLATE = ["Cookie policy: this site uses cookies to improve your experience.",
               "Subscribe to our newsletter for weekly updates.", "All rights reserved. Terms of use apply.",
               "Share this page on social media.", "Skip to main content. Menu. Search."]
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+|\n\s*\n")


def base_documents(kit_text: str, copyright_glob: str = "/usr/share/doc/*/copyright", min_words: int = 150,
                   max_copyright: int = 150, kit_chunk_words: int = 400) -> list[tuple[str, str]]:
    """(name, text) of the base documents: distinct copyright files (by text) and botchan chunks."""
    docs, seen = [], set()
    for path in sorted(glob.glob(copyright_glob)):
        try:
            text = open(path, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        if len(text.split()) >= min_words and text not in seen and len(docs) < max_copyright:
            seen.add(text)
            docs.append((path, text))
    words = kit_text.split()
    for i in range(0, len(words) - kit_chunk_words, kit_chunk_words):
        docs.append((f"botchan@{i}", " ".join(words[i:i + kit_chunk_words])))
    return docs


def edit(text: str, rate: float, donors: list[str], rng: random.Random) -> str:
    """Drop, insert, reorder sentences (each at ``rate``) and sometimes add boilerplate."""
    sentences = [s for s in _SENTENCE.split(text) if s and s.strip()]
    out = []
    for s in sentences:
        r = rng.random()
        if r < rate / 3:
            continue  # dropped
        out.append(s)
        if r > 1 - rate / 3:
            donor = [x for x in _SENTENCE.split(rng.choice(donors)) if x and x.strip()]
            out.append(rng.choice(donor))  # inserted
    for _ in range(int(len(out) * rate / 3)):  # reordered: swap neighbours
        i = rng.randrange(max(1, len(out) - 1))
        out[i:i + 2] = out[i:i + 2][::-1]
    if rng.random() < rate:
        out = [rng.choice(BOILERPLATE)] + out + [rng.choice(BOILERPLATE)]
    return " ".join(out)


def labelled_pairs(docs: list[tuple[str, str]], hasher: MinHasher, seed: int = 0):
    """[(jaccard, text_a, text_b)]: each base with its variants, and as many random base pairs."""
    rng = random.Random(seed)
    texts = [t for _, t in docs]
    pairs = []
    for i, text in enumerate(texts):
        for rate in RATES:
            pairs.append((text, edit(text, rate, texts, rng)))
        pairs.append((text, texts[rng.randrange(len(texts))]))
    out = []
    for a, b in pairs:
        sa, sb = set(hasher.shingle_hashes(a).tolist()), set(hasher.shingle_hashes(b).tolist())
        if sa and sb and a != b:
            out.append((len(sa & sb) / len(sa | sb), a, b))
    return out


def predicted(hasher: MinHasher, threshold: float, a: str, b: str) -> bool:
    sa, sb = hasher.signature(a), hasher.signature(b)
    if not np.any(hasher.band_keys(sa) == hasher.band_keys(sb)):
        return False
    agree = int(((sa >> np.uint64(32)).astype(np.uint32) == (sb >> np.uint64(32)).astype(np.uint32)).sum())
    return agree >= math.ceil(threshold * hasher.params.permutations - 1e-9)


def evaluate(pairs, params: MinHashParams, threshold: float) -> dict:
    """Per Jaccard band: pairs, predicted duplicates, their share, and the S-curve at the band's mid-point."""
    hasher = MinHasher(params)
    rows = {}
    decisions = [(j, predicted(hasher, threshold, a, b)) for j, a, b in pairs]
    for lo, hi in BANDS:
        inside = [p for j, p in decisions if lo <= j < hi]
        mid = (lo + min(hi, 1.0)) / 2
        rows[f"{lo:.1f}-{min(hi, 1.0):.1f}"] = {
            "pairs": len(inside), "predicted": int(sum(inside)),
            "share_predicted": round(sum(inside) / len(inside), 4) if inside else None,
            "s_curve_at_mid": round(s_curve(mid, params.bands, params.rows), 4)}
    dup = [p for j, p in decisions if j >= 0.9]
    low = [p for j, p in decisions if j < 0.6]
    predicted_all = [(j, p) for j, p in decisions if p]
    return {"bands": rows,
            "recall_j_ge_0.9": round(sum(dup) / len(dup), 4) if dup else None,
            "removed_below_0.6": int(sum(low)), "pairs_below_0.6": len(low),
            "precision_j_ge_0.6": round(sum(1 for j, _ in predicted_all if j >= 0.6) / len(predicted_all), 4)
            if predicted_all else None}
