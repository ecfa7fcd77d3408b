"""The quality classifier: logistic regression on hashed word n-gram features (GPT-3's recipe, Brown et al. 2020
appendix A: Spark's tokenizer + HashingTF + logistic regression; here scikit-learn's HashingVectorizer).

The vectorizer is stateless (a hash of each n-gram picks its feature), so the model is its settings, the weight
vector and the intercept. The file is our own small format, so that the same training gives the same bytes (no
pickle, no zip time stamps) and loading it runs no code:

    b"slurmtrain-quality-lr\\n"  <header length: 8 bytes little endian>  <JSON header>  <float32 weights, LE>
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

MAGIC = b"slurmtrain-quality-lr\n"


@dataclass(frozen=True)
class Features:
    """HashingVectorizer settings: word 1..ngram_max grams of the lower-cased text, 2^log2_features buckets."""

    ngram_max: int = 2
    log2_features: int = 18  # Spark HashingTF's default 2^18, as in GPT-3's classifier
    lowercase: bool = True

    def vectorizer(self):
        from sklearn.feature_extraction.text import HashingVectorizer

        # alternate_sign=False: counts stay counts (collisions add up instead of cancelling); l2 rows so long and
        # short documents are on one scale; \w\w+ words (scikit-learn's default token pattern)
        return HashingVectorizer(n_features=1 << self.log2_features, ngram_range=(1, self.ngram_max),
                                 lowercase=self.lowercase, alternate_sign=False, norm="l2", dtype=np.float64)


class QualityModel:
    """P(reference | text) = sigmoid(features(text) . weights + intercept)."""

    def __init__(self, features: Features, weights: np.ndarray, intercept: float, info: dict | None = None):
        self.features = features
        self.weights = np.asarray(weights, dtype=np.float32)
        self.intercept = float(intercept)
        self.info = info or {}
        self._vectorizer = features.vectorizer()
        self.sha256 = ""  # of the file it was saved to or loaded from

    def scores(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        x = self._vectorizer.transform(texts)
        logits = x @ self.weights.astype(np.float64) + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))

    def to_bytes(self) -> bytes:
        header = json.dumps({"features": asdict(self.features), "intercept": self.intercept,
                             "dimensions": int(self.weights.size), "info": self.info}, sort_keys=True).encode()
        return MAGIC + struct.pack("<Q", len(header)) + header + self.weights.astype("<f4").tobytes()

    def save(self, path: str | Path) -> str:
        """Write atomically; return the file's sha256."""
        path = Path(path)
        data = self.to_bytes()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        self.sha256 = hashlib.sha256(data).hexdigest()
        return self.sha256

    @classmethod
    def load(cls, path: str | Path) -> "QualityModel":
        path = Path(path)
        data = path.read_bytes()
        fix = "pass a model written by `python -m data_pipeline.score train` (PREFIX.model)"
        if not data.startswith(MAGIC):
            raise ValueError(f"{path} is not a quality model (no {MAGIC[:-1].decode()} header); {fix}")
        try:
            (length,) = struct.unpack_from("<Q", data, len(MAGIC))
            start = len(MAGIC) + 8
            header = json.loads(data[start:start + length])
            weights = np.frombuffer(data, dtype="<f4", offset=start + length)
            if weights.size != header["dimensions"] or header["dimensions"] != 1 << header["features"]["log2_features"]:
                raise ValueError(f"{weights.size} weights, header says {header['dimensions']}")
            model = cls(Features(**header["features"]), weights, header["intercept"], header.get("info"))
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            raise ValueError(f"{path} is a truncated or corrupt quality model ({exc}); {fix}") from None
        if not math.isfinite(model.intercept) or not np.isfinite(model.weights).all():
            raise ValueError(f"{path} holds non-finite weights; {fix}")
        model.sha256 = hashlib.sha256(data).hexdigest()
        return model
