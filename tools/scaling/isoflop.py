"""Chinchilla approach 2: a parabola per IsoFLOP budget in log N (and in log D), its minimum gives
N_opt(C) and D_opt(C), then power laws over the budgets."""

from __future__ import annotations

import numpy as np

from tools.scaling.power_law import fit_power_law


def parabola_minimum(x, loss) -> tuple[float, float, np.ndarray]:
    """Fit loss = p0 x^2 + p1 x + p2; return (x at the minimum, loss there, coefficients)."""
    x, loss = np.asarray(x, float), np.asarray(loss, float)
    if len(np.unique(x)) < 3:
        raise ValueError(f"a parabola needs 3 distinct sizes, got {len(np.unique(x))}")
    coef = np.polyfit(x, loss, 2)
    if coef[0] <= 0:
        raise ValueError("the IsoFLOP profile is not convex (no minimum): add sizes on both sides of the optimum")
    x_min = -coef[1] / (2 * coef[0])
    return float(x_min), float(np.polyval(coef, x_min)), coef


def isoflop_minima(n, d, loss, budget, min_points: int = 3, require_bracketed: bool = True):
    """Per budget: dict(budget, n_opt, d_opt, loss_opt, coef_n) for the usable ones, and the rejected ones."""
    n, d, loss, budget = (np.asarray(v, float) for v in (n, d, loss, budget))
    minima, rejected = [], []
    for b in np.unique(budget):
        m = budget == b
        if len(np.unique(n[m])) < min_points:
            rejected.append({"budget": float(b), "reason": f"{len(np.unique(n[m]))} model sizes < "
                             f"fit.min_points_per_budget={min_points}"})
            continue
        try:
            xn, lmin, coef = parabola_minimum(np.log(n[m]), loss[m])
            xd, _, _ = parabola_minimum(np.log(d[m]), loss[m])
        except ValueError as e:
            rejected.append({"budget": float(b), "reason": str(e)})
            continue
        if require_bracketed and not np.log(n[m]).min() <= xn <= np.log(n[m]).max():
            rejected.append({"budget": float(b), "reason": f"the minimum (N={np.exp(xn):.3g}) lies outside the "
                             "sampled sizes: the ladder does not bracket the optimum at this budget"})
            continue
        minima.append({"budget": float(b), "n_opt": float(np.exp(xn)), "d_opt": float(np.exp(xd)),
                       "loss_opt": lmin, "coef_n": [float(c) for c in coef], "points": int(m.sum())})
    return minima, rejected


def fit_isoflop(minima: list[dict]) -> dict[str, float]:
    if len(minima) < 2:
        raise ValueError(f"approach 2 needs at least 2 IsoFLOP budgets with a minimum, got {len(minima)}")
    c = [m["budget"] for m in minima]
    g_n, a = fit_power_law(c, [m["n_opt"] for m in minima])
    g_d, b = fit_power_law(c, [m["d_opt"] for m in minima])
    return {"a": a, "G_N": g_n, "b": b, "G_D": g_d}
