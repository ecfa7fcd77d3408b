"""Percentile-bootstrap intervals: refit on resampled runs, report the spread of each quantity."""

from __future__ import annotations

from typing import Callable

import numpy as np


def resample(rng: np.random.Generator, n: int, strata: np.ndarray | None = None) -> np.ndarray:
    """Indices drawn with replacement; within each stratum (e.g. an IsoFLOP budget) when strata is given."""
    if strata is None:
        return rng.integers(0, n, n)
    out = []
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        out.append(rng.choice(members, len(members), replace=True))
    return np.concatenate(out)


def summarize(value: float, samples: list[float], level: float) -> dict:
    """{"value", "lo", "hi", "se", "n_boot"}: the point estimate and its percentile interval."""
    s = np.asarray([x for x in samples if np.isfinite(x)], float)
    out = {"value": float(value)}
    if len(s) >= 2:
        q = (1 - level) / 2
        out.update(lo=float(np.quantile(s, q)), hi=float(np.quantile(s, 1 - q)), se=float(np.std(s, ddof=1)))
    out["n_boot"] = int(len(s))
    return out


def bootstrap(fit: Callable[[np.ndarray], dict[str, float]], n_items: int, n_boot: int, seed: int,
              strata: np.ndarray | None = None) -> dict[str, list[float]]:
    """Run `fit(indices)` on n_boot resamples; a resample the fit rejects (ValueError) is skipped."""
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        idx = resample(rng, n_items, strata)
        try:
            res = fit(idx)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            continue
        for k, v in res.items():
            samples.setdefault(k, []).append(float(v))
    return samples


def with_intervals(point: dict[str, float], samples: dict[str, list[float]], level: float) -> dict[str, dict]:
    return {k: summarize(v, samples.get(k, []), level) for k, v in point.items()}
