"""MinHash signatures over word (or character) n-grams, vectorised with numpy, and the hashes exact and URL
dedup key on.

Hash family: h_i(x) = (a_i * x + b_i) mod 2^64 with odd a_i, applied to 64-bit shingle hashes that went through
a 64-bit finaliser (splitmix64). Arithmetic mod 2^64 is exact in uint64 (it is the definition of the family,
multiply-shift hashing, not a wrapped prime modulus like datatrove's (a*x+b) mod (2^61-1), whose a*x exceeds
64 bits before the modulus is taken).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\w+")
_MASK = (1 << 64) - 1
_P = np.uint64(0x100000001B3)  # FNV prime: combines the word hashes of one shingle
_CHUNK = 8192  # shingles hashed at a time: memory stays bounded for a 10 MB document


def _fmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array (a bijection: distinct inputs stay distinct)."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def normalise_text(text: str) -> str:
    """What exact dedup compares: NFKC, lower case, words only (punctuation and spacing differences ignored)."""
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).lower()))


def text_hash(text: str) -> int:
    return hash64(normalise_text(text).encode())


@dataclass(frozen=True)
class MinHashParams:
    ngram: int = 5
    bands: int = 14
    rows: int = 8
    seed: int = 1

    @property
    def permutations(self) -> int:
        return self.bands * self.rows


class MinHasher:
    """``signature(text)`` -> uint64[bands * rows] (None when the text has no word); ``band_keys``."""

    def __init__(self, params: MinHashParams):
        self.params = params
        rng = np.random.Generator(np.random.PCG64(params.seed))
        k = params.permutations
        self.a = rng.integers(0, 1 << 63, size=k, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.b = rng.integers(0, 1 << 63, size=k, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, size=k, dtype=np.uint64)
        self._cache: dict[str, int] = {}

    def tokens(self, text: str) -> list[str]:
        """Words (``\\w+`` of the lower-cased NFKC text); for scripts without spaces (few, very long "words"):
        the characters."""
        words = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
        chars = sum(map(len, words))
        if words and chars > 12 * len(words) and chars >= 40:
            return [c for w in words for c in w]
        return words

    def _word_hashes(self, words: list[str]) -> np.ndarray:
        cache = self._cache
        if len(cache) > 1 << 20:
            cache.clear()
        out = np.empty(len(words), dtype=np.uint64)
        for i, w in enumerate(words):
            h = cache.get(w)
            if h is None:
                h = cache[w] = hash64(w.encode())
            out[i] = h
        return out

    def shingle_hashes(self, text: str) -> np.ndarray:
        """uint64 hashes of the n-grams; a text with fewer tokens than n is one shingle of all its tokens."""
        words = self.tokens(text)
        if not words:
            return np.empty(0, dtype=np.uint64)
        w = self._word_hashes(words)
        n = min(self.params.ngram, len(w))
        m = len(w) - n + 1
        s = w[:m].copy()
        with np.errstate(over="ignore"):
            for j in range(1, n):
                s *= _P
                s += w[j:j + m]
            if n < self.params.ngram:
                s += np.uint64(n)  # a short text's one shingle differs from a full n-gram of the same words
        return _fmix64(s)

    def signature_of_shingles(self, shingles: np.ndarray) -> np.ndarray | None:
        if not len(shingles):
            return None
        sig = np.full(self.params.permutations, np.iinfo(np.uint64).max, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for start in range(0, len(shingles), _CHUNK):
                chunk = shingles[start:start + _CHUNK, None]
                np.minimum(sig, (chunk * self.a + self.b).min(axis=0), out=sig)
        return sig

    def signature(self, text: str) -> np.ndarray | None:
        return self.signature_of_shingles(self.shingle_hashes(text))

    def band_keys(self, sig: np.ndarray, scope: int = 0) -> np.ndarray:
        """uint64[bands]: one key per band (its rows, the band number and the dedup scope, hashed)."""
        r = self.params.rows
        rows = sig.reshape(self.params.bands, r)
        with np.errstate(over="ignore"):
            key = np.arange(self.params.bands, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(scope & _MASK)
            for j in range(r):
                key = _fmix64(key ^ rows[:, j])
        return key


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of agreeing signature values (last axis)."""
    return (a == b).mean(axis=-1)


def s_curve(jaccard: float, bands: int, rows: int) -> float:
    """Probability that a pair of Jaccard ``jaccard`` shares at least one band."""
    return 1.0 - (1.0 - jaccard ** rows) ** bands
