"""The scaling plots, each as PNG and SVG: loss vs tokens per model size, IsoFLOP profiles with their minima, the
compute-optimal frontier with the target budget marked; from ladder directories also loss vs compute per run and,
when runs logged per-source validation losses (val_loss/<source>), validation loss vs tokens per source."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from tools.scaling.learning_curve import learning_curve_at
from tools.scaling.power_law import power_law_at

# Figures are built without pyplot, so plotting never touches the caller's backend (a notebook's inline one).


def _figure():
    fig = Figure(figsize=(7, 4.5))
    return fig, fig.subplots()


def _save(fig, out: Path, stem: str) -> list[str]:
    paths = []
    for ext in ("png", "svg"):
        p = out / f"{stem}.{ext}"
        fig.savefig(p, dpi=120, bbox_inches="tight")
        paths.append(str(p))
    return paths


def _colors(values):
    u = np.unique(values)
    cmap = matplotlib.colormaps["viridis"]
    return {v: cmap(i / max(1, len(u) - 1)) for i, v in enumerate(u)}


def plot_loss_vs_tokens(g, out: Path, prefix: str = "") -> list[str]:
    fig, ax = _figure()
    pts = g.points
    col = _colors(g.n)
    if g.curves:
        n_of = dict(zip(pts.name, g.n))
        for r in sorted(g.curves, key=lambda r: n_of[r.name]):
            c = col[n_of[r.name]]
            ax.plot(r.tokens, r.loss, color=c, lw=0.8, alpha=0.6)
            if len(r.val_loss):
                ax.plot(r.val_tokens, r.val_loss, "o", color=c, ms=3)
            lc = g.learning_curves.get(r.name, {})
            if "beta" in lc:
                m = r.tokens >= 0.1 * r.tokens[-1]
                ax.plot(r.tokens[m], learning_curve_at({k: lc[k]["value"] for k in ("E", "B", "beta")}, r.tokens[m]),
                        "--", color=c, lw=1)
        ax.set_title("loss vs tokens per run (dashed: L(D) = E + B/D^beta; dots: validation)")
    else:
        for nv in np.unique(g.n):
            m = g.n == nv
            ax.plot(pts.tokens[m], pts.loss[m], "o", color=col[nv], ms=3)
            if g.law is not None:
                dd = np.geomspace(pts.tokens[m].min(), pts.tokens[m].max(), 50)
                ax.plot(dd, g.law.loss(nv, dd), "-", color=col[nv], lw=0.8)
        ax.set_title("final loss vs tokens per model size (lines: approach 3 fit)")
    sm = ScalarMappable(cmap="viridis", norm=LogNorm(g.n.min(), max(g.n.max(), g.n.min() * 1.01)))
    fig.colorbar(sm, ax=ax, label="parameters N")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens D")
    ax.set_ylabel("loss")
    return _save(fig, out, prefix + "loss_vs_tokens")


def plot_loss_vs_flops(g, out: Path, prefix: str = "") -> list[str]:
    """Training (lines) and validation (dots) loss against cumulative model FLOPs, per run."""
    fig, ax = _figure()
    col = _colors(g.n)
    n_of = dict(zip(g.points.name, g.n))
    for r in sorted(g.curves, key=lambda r: n_of[r.name]):
        ax.plot(r.flops, r.loss, color=col[n_of[r.name]], lw=0.8, alpha=0.7)
        if len(r.val_loss):
            ax.plot(r.val_flops, r.val_loss, "o", color=col[n_of[r.name]], ms=3)
    if g.envelope is not None:
        ax.plot(g.envelope[0], g.envelope[3], "k--", lw=1, label="lowest-loss envelope (approach 1)")
        ax.legend(fontsize=7)
    fig.colorbar(ScalarMappable(cmap="viridis", norm=LogNorm(g.n.min(), max(g.n.max(), g.n.min() * 1.01))), ax=ax,
                 label="parameters N")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute C (model FLOPs)")
    ax.set_ylabel("loss")
    ax.set_title("loss vs compute per run")
    return _save(fig, out, prefix + "loss_vs_flops")


def plot_loss_vs_tokens_by_source(g, out: Path, prefix: str = "") -> list[str]:
    """One log-log panel per data source: each run's validation loss on that source's held-out documents
    against tokens, coloured by model size (the same colour scale in every panel, a shared loss axis)."""
    sources = sorted({s for r in g.curves for s in r.val_loss_by_source})
    ncols = min(3, len(sources))
    nrows = -(-len(sources) // ncols)
    fig = Figure(figsize=(4.2 * ncols + 1.2, 3.4 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)).ravel()
    col = _colors(g.n)
    n_of = dict(zip(g.points.name, g.n))
    for ax, source in zip(axes, sources):
        for r in sorted(g.curves, key=lambda r: n_of[r.name]):
            if source in r.val_loss_by_source:
                ax.plot(r.val_tokens_by_source[source], r.val_loss_by_source[source], "o-", color=col[n_of[r.name]],
                        ms=3, lw=1)
        ax.set_title(f"val_loss/{source}", fontsize=9)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
    for ax in axes[len(sources):]:
        ax.set_visible(False)
    for ax in axes[(nrows - 1) * ncols:]:
        ax.set_xlabel("tokens D")
    for ax in axes[::ncols]:
        ax.set_ylabel("validation loss")
    fig.colorbar(ScalarMappable(cmap="viridis", norm=LogNorm(g.n.min(), max(g.n.max(), g.n.min() * 1.01))),
                 ax=list(axes[:len(sources)]), label="parameters N")
    fig.suptitle("validation loss vs tokens per data source (each on its own held-out documents)", fontsize=10)
    return _save(fig, out, prefix + "loss_vs_tokens_by_source")


def plot_isoflops(g, out: Path, prefix: str = "") -> list[str]:
    fig, ax = _figure()
    pts = g.points
    col = _colors(pts.budget)
    for b in np.unique(pts.budget):
        m = pts.budget == b
        ax.plot(g.n[m], pts.loss[m], "o", color=col[b], ms=4, label=f"{b:.2g} FLOPs")
    for mn in g.minima:
        b = mn["budget"]
        m = pts.budget == b
        x = np.linspace(np.log(g.n[m].min()), np.log(g.n[m].max()), 60)
        ax.plot(np.exp(x), np.polyval(mn["coef_n"], x), "-", color=col[b], lw=1)
        ax.plot(mn["n_opt"], mn["loss_opt"], "*", color="crimson", ms=10)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("final loss")
    ax.set_title("IsoFLOP profiles (approach 2); stars: parabola minima")
    if len(np.unique(pts.budget)) <= 12:
        ax.legend(fontsize=7)
    return _save(fig, out, prefix + "isoflops")


def plot_frontier(g, out: Path, prefix: str = "") -> list[str]:
    fig, ax = _figure()
    lo = min(float(g.points.flops.min()), g.target) / 2
    cc = np.geomspace(lo, max(float(g.points.flops.max()), g.target) * 2, 100)
    ax.scatter(g.points.flops, g.n, s=8, c="lightgray", label="runs")
    opt = g.doc.get("compute_optimal", {})
    if g.envelope is not None and g.envelope_fit is not None:
        ax.plot(g.envelope[0], g.envelope[1], ".", color="tab:blue", ms=4, label="approach 1 envelope")
        ax.plot(cc, power_law_at(g.envelope_fit["G_N"], g.envelope_fit["a"], cc), "-", color="tab:blue",
                label=f"approach 1: N ~ C^{g.envelope_fit['a']:.2f}")
    if g.isoflop is not None:
        ax.plot([m["budget"] for m in g.minima], [m["n_opt"] for m in g.minima], "s", color="tab:orange", ms=5,
                label="approach 2 minima")
        ax.plot(cc, power_law_at(g.isoflop["G_N"], g.isoflop["a"], cc), "-", color="tab:orange",
                label=f"approach 2: N ~ C^{g.isoflop['a']:.2f}")
    if g.law is not None:
        ax.plot(cc, g.law.optimal_n(cc, g.k), "-", color="tab:green",
                label=f"approach 3: N ~ C^{g.law.beta / (g.law.alpha + g.law.beta):.2f}")
    for name, color in (("approach1", "tab:blue"), ("approach2", "tab:orange"), ("approach3", "tab:green")):
        if name in opt:
            e = opt[name]["N"]
            yerr = [[e["value"] - e.get("lo", e["value"])], [e.get("hi", e["value"]) - e["value"]]]
            ax.errorbar([g.target], [e["value"]], yerr=yerr, fmt="*", color=color, ms=10, capsize=3)
    ax.axvline(g.target, color="crimson", ls=":", lw=1, label=f"target {g.target:.2g} FLOPs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute C (FLOPs)")
    ax.set_ylabel("compute-optimal parameters N_opt")
    ax.set_title("compute-optimal frontier (stars: answer at the target, with intervals)")
    ax.legend(fontsize=7)
    return _save(fig, out, prefix + "frontier")


def plot_all(g, out: Path, prefix: str = "") -> dict[str, list[str]]:
    out.mkdir(parents=True, exist_ok=True)
    extra = {prefix + "loss_vs_flops": plot_loss_vs_flops(g, out, prefix)} if g.curves else {}
    if any(r.val_loss_by_source for r in g.curves):
        extra[prefix + "loss_vs_tokens_by_source"] = plot_loss_vs_tokens_by_source(g, out, prefix)
    return {**extra, prefix + "loss_vs_tokens": plot_loss_vs_tokens(g, out, prefix),
            prefix + "isoflops": plot_isoflops(g, out, prefix),
            prefix + "frontier": plot_frontier(g, out, prefix)}
