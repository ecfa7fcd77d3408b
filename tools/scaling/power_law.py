"""y = G x^a fitted by least squares in log-log space (N_opt(C), D_opt(C) of approaches 1 and 2)."""

from __future__ import annotations

import numpy as np


def fit_power_law(x, y) -> tuple[float, float]:
    """Returns (G, a) of y = G x^a."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if len(np.unique(lx)) < 2:
        raise ValueError("a power law needs at least two distinct x values")
    a, log_g = np.polyfit(lx, ly, 1)
    return float(np.exp(log_g)), float(a)


def power_law_at(g: float, a: float, x):
    return g * np.asarray(x, float) ** a
