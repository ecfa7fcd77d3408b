"""Keep rules on quality scores, for the mixing stage: pure functions of (document id, score, seed).

Neither rule draws from a random generator: each document's randomness is a hash of its id and the seed, so a
decision is the same for any task count, reading order or process.

(a) GPT-3 (Brown et al. 2020, appendix A): keep a document if ``np.random.pareto(alpha) > 1 - score``, alpha=9.
    numpy's pareto is the Lomax distribution, CDF F(x) = 1 - (1 + x)^-alpha, so a uniform u gives the draw
    F^-1(u) = (1 - u)^(-1/alpha) - 1, and P(keep | s) = (2 - s)^-alpha (``pareto_keep_probability``).
(b) DCLM-style: keep the top ``fraction`` of a source by score. The cut is exact: documents are ranked by
    (score descending, hash of the id, id), the first round(fraction * n) are kept, and the threshold is the
    last kept document's rank key, so a later pass can apply it one document at a time (``above``).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

GPT3_ALPHA = 9.0


def id_hash(doc_id: str, seed: int) -> int:
    """A 64-bit hash of (seed, document id)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}\0{doc_id}".encode(), digest_size=8).digest(), "little")


def id_uniform(doc_id: str, seed: int) -> float:
    """A uniform in (0, 1) from (seed, document id): the hash's top 53 bits, centred in their cell."""
    return ((id_hash(doc_id, seed) >> 11) + 0.5) / float(1 << 53)


def pareto_keep_probability(score: float | np.ndarray, alpha: float = GPT3_ALPHA):
    """P(pareto_alpha > 1 - score) = (2 - score)^-alpha (1 at score 1; 2^-alpha at score 0)."""
    return np.power(2.0 - np.asarray(score, dtype=np.float64), -alpha)


def pareto_keep(ids: Sequence[str], scores: Sequence[float], seed: int, alpha: float = GPT3_ALPHA) -> np.ndarray:
    """GPT-3's rule per document: its Lomax draw (inverse CDF of its id's uniform) > 1 - score."""
    if alpha <= 0:
        raise ValueError(f"alpha={alpha}: the Pareto shape must be positive (GPT-3 uses 9)")
    u = np.array([id_uniform(i, seed) for i in ids], dtype=np.float64)
    draw = np.power(1.0 - u, -1.0 / alpha) - 1.0
    return draw > 1.0 - np.asarray(scores, dtype=np.float64)


@dataclass(frozen=True, order=True)
class Threshold:
    """A document is kept when its rank key (-score, hash, id) is <= this one's."""

    neg_score: float
    tie: int
    doc_id: str

    @property
    def score(self) -> float:
        return -self.neg_score


def _key(doc_id: str, score: float, seed: int) -> tuple:
    return (-float(score), id_hash(doc_id, seed), doc_id)


def top_fraction_threshold(ids: Sequence[str], scores: Sequence[float], fraction: float,
                           seed: int = 0) -> Threshold | None:
    """The rank key of the last document kept when keeping round(fraction * n) of them (None: keep nothing)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction}: use a share in [0, 1]")
    if len(ids) != len(scores):
        raise ValueError(f"{len(ids)} ids but {len(scores)} scores")
    keep = int(np.floor(fraction * len(ids) + 0.5))
    if keep == 0:
        return None
    keys = sorted(_key(i, s, seed) for i, s in zip(ids, scores))
    return Threshold(*keys[keep - 1])


def above(threshold: Threshold | None, doc_id: str, score: float, seed: int = 0) -> bool:
    return threshold is not None and Threshold(*_key(doc_id, score, seed)) <= threshold


def keep_top_fraction(ids: Sequence[str], scores: Sequence[float], fraction: float, seed: int = 0) -> np.ndarray:
    threshold = top_fraction_threshold(ids, scores, fraction, seed)
    return np.array([above(threshold, i, s, seed) for i, s in zip(ids, scores)], dtype=bool)


def keep_top_fraction_by_source(sources: Sequence[str], ids: Sequence[str], scores: Sequence[float],
                                fraction: float | Mapping[str, float], seed: int = 0) -> np.ndarray:
    """keep_top_fraction within each source; ``fraction`` is one share or a share per source."""
    members = defaultdict(list)
    for index, source in enumerate(sources):
        members[source].append(index)
    keep = np.zeros(len(ids), dtype=bool)
    for source, index in members.items():
        if not isinstance(fraction, (int, float)) and source not in fraction:
            raise ValueError(f"no fraction for source {source!r}; give one share or one per source")
        share = fraction if isinstance(fraction, (int, float)) else fraction[source]
        keep[index] = keep_top_fraction([ids[i] for i in index], [scores[i] for i in index], share, seed)
    return keep
