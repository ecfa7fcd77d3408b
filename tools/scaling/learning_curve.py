"""The per-run learning curve L(D) = E + B / D^beta (Hestness et al. 2017), least squares on the loss."""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares


def fit_learning_curve(tokens, loss) -> dict[str, float]:
    """Fit E, B, beta on (tokens, loss) points, E bounded to [0, min loss].

    For a fixed beta the model is linear in (E, B): a scan over beta with linear least squares finds the
    basin, then a bounded least-squares refinement with the analytic Jacobian polishes all three.
    """
    d, y = np.asarray(tokens, float), np.asarray(loss, float)
    if len(d) < 4:
        raise ValueError(f"a learning curve needs at least 4 points, got {len(d)}")
    log_d = np.log(d)
    lo = float(y.min())
    betas = np.geomspace(1e-3, 3.0, 80)
    x = np.exp(-np.outer(betas, log_d))  # (beta, point): D^-beta
    xm, ym = x.mean(axis=1, keepdims=True), y.mean()
    slope = ((x - xm) * (y - ym)).sum(axis=1) / np.maximum(((x - xm) ** 2).sum(axis=1), 1e-300)
    e = np.clip(ym - slope * xm[:, 0], 0.0, lo)
    slope = np.maximum(slope, 1e-12)
    sse = ((e[:, None] + slope[:, None] * x - y) ** 2).sum(axis=1)
    i = int(np.argmin(sse))
    p0 = np.array([min(max(e[i], 0.0), lo), np.log(slope[i]), betas[i]])

    def resid(p):  # p = (E, log B, beta)
        return p[0] + np.exp(p[1] - p[2] * log_d) - y

    def jac(p):
        t = np.exp(p[1] - p[2] * log_d)
        return np.column_stack([np.ones_like(t), t, -t * log_d])

    lb, ub = np.array([0.0, -50.0, 1e-4]), np.array([lo, 200.0, 5.0])
    r = least_squares(resid, np.clip(p0, lb + 1e-12, ub - 1e-12), jac=jac, bounds=(lb, ub))
    e_, logb, beta = r.x
    return {"E": float(e_), "B": float(np.exp(logb)), "beta": float(beta),
            "rmse": float(np.sqrt(np.mean(r.fun ** 2)))}


def learning_curve_at(fit: dict, tokens):
    return fit["E"] + fit["B"] / np.asarray(tokens, float) ** fit["beta"]
