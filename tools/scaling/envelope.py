"""Chinchilla approach 1: the lowest-loss envelope over FLOPs, then N_opt(C) and D_opt(C) as power laws.

With learning curves (a ladder directory), every run's loss is interpolated (in log FLOPs) on a common grid of
FLOPs; at each grid point the run with the lowest loss gives (N, D = tokens it had seen then). Without curves
(a CSV of final points), the envelope is the Pareto frontier: runs with a lower loss than every run of less
compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.scaling.power_law import fit_power_law


@dataclass
class Curve:
    """One run's loss along its training: FLOPs, tokens and loss at each logged step."""
    n: float
    flops: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray


def envelope_from_curves(curves: list[Curve], grid_points: int = 40) -> tuple[np.ndarray, ...]:
    """(C, N, D, loss) at grid_points FLOPs values, each from the lowest-loss run at that compute."""
    lo = min(c.flops[0] for c in curves)
    hi = max(c.flops[-1] for c in curves)
    grid = np.geomspace(lo, hi, grid_points)
    out = []
    for g in grid:
        best = None
        for c in curves:
            if not c.flops[0] <= g <= c.flops[-1]:
                continue
            lg = np.log(g)
            loss = float(np.interp(lg, np.log(c.flops), c.loss))
            tokens = float(np.exp(np.interp(lg, np.log(c.flops), np.log(c.tokens))))
            if best is None or loss < best[3]:
                best = (g, c.n, tokens, loss)
        if best is not None:
            out.append(best)
    arr = np.array(out, float).reshape(-1, 4)
    return arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]


def envelope_from_points(flops, n, tokens, loss) -> tuple[np.ndarray, ...]:
    order = np.argsort(flops, kind="stable")
    keep, best = [], np.inf
    for i in order:
        if loss[i] < best:
            keep.append(i)
            best = loss[i]
    k = np.array(keep, int)
    return np.asarray(flops)[k], np.asarray(n)[k], np.asarray(tokens)[k], np.asarray(loss)[k]


def fit_envelope(c, n, d) -> dict[str, float]:
    """Power laws N_opt = G_N C^a and D_opt = G_D C^b on the envelope points."""
    if len(np.unique(n)) < 2:
        raise ValueError("approach 1: the envelope holds a single model size; the ladder needs more sizes "
                         "or a wider compute range")
    g_n, a = fit_power_law(c, n)
    g_d, b = fit_power_law(c, d)
    return {"a": a, "G_N": g_n, "b": b, "G_D": g_d}
