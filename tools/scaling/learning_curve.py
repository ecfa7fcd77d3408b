"""The per-run learning curve L(D) = E + B / D^beta (Hestness et al. 2017), least squares on the loss."""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares


def fit_learning_curve(tokens, loss) -> dict[str, float]:
    """Fit E, B, beta on (tokens, loss) points; E is bounded to [0, min loss]."""
    d, y = np.asarray(tokens, float), np.asarray(loss, float)
    if len(d) < 4:
        raise ValueError(f"a learning curve needs at least 4 points, got {len(d)}")
    log_d = np.log(d)
    lo = float(y.min())

    def resid(p):  # p = (E, log B, beta)
        return p[0] + np.exp(p[1] - p[2] * log_d) - y

    best = None
    for beta0 in (0.1, 0.3, 0.6, 1.0):
        e0 = 0.5 * lo
        logb0 = float(np.log(max(np.mean(y) - e0, 1e-6)) + beta0 * np.mean(log_d))
        try:
            r = least_squares(resid, [e0, logb0, beta0], bounds=([0.0, -50.0, 1e-4], [lo, 200.0, 5.0]))
        except ValueError:
            continue
        if best is None or r.cost < best.cost:
            best = r
    if best is None:
        raise ValueError("learning curve fit failed")
    e, logb, beta = best.x
    return {"E": float(e), "B": float(np.exp(logb)), "beta": float(beta),
            "rmse": float(np.sqrt(np.mean(best.fun ** 2)))}


def learning_curve_at(fit: dict, tokens):
    return fit["E"] + fit["B"] / np.asarray(tokens, float) ** fit["beta"]
