"""`python -m tools.scaling fit`: read a ladder or a CSV, run every fit with bootstrap intervals, write
DIR/fit.json and the plots, and answer "for this budget, how big a model and how many tokens?"."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools.scaling.bootstrap import bootstrap, summarize, with_intervals
from tools.scaling.config import ScalingConfig, fit_input
from tools.scaling.envelope import Curve, envelope_from_curves, envelope_from_points, fit_envelope
from tools.scaling.isoflop import fit_isoflop, isoflop_minima
from tools.scaling.ladder import RunCurve, ladder_points, read_ladder
from tools.scaling.learning_curve import fit_learning_curve
from tools.scaling.parametric import ParametricLaw, fit_parametric, theta_of
from tools.scaling.points import Points, drop_duplicates, exclude_highest, read_csv
from tools.scaling.power_law import power_law_at


@dataclass
class GroupFit:
    """Everything fitted on one group of runs: fit.json's content (doc) and what the plots draw."""
    points: Points
    n: np.ndarray  # the parameter count the laws use (fit.params)
    k: float  # FLOPs per parameter per token, C / (N D): 6 for the Chinchilla convention
    target: float
    curves: list[RunCurve] = field(default_factory=list)
    law: ParametricLaw | None = None
    law_samples: dict[str, list[float]] = field(default_factory=dict)  # approach 3 bootstrap replicates
    minima: list[dict] = field(default_factory=list)
    isoflop: dict | None = None
    envelope: tuple | None = None
    envelope_fit: dict | None = None
    learning_curves: dict[str, dict] = field(default_factory=dict)
    doc: dict = field(default_factory=dict)


def _curves_for_envelope(curves: list[RunCurve], n_of: dict[str, float], skip: float) -> list[Curve]:
    out = []
    for r in curves:
        m = r.tokens >= skip * r.tokens[-1]
        if m.sum() >= 2:
            out.append(Curve(n_of[r.name], r.flops[m], r.tokens[m], r.loss[m]))
    return out


def fit_group(points: Points, cfg: ScalingConfig, curves: list[RunCurve] | None = None) -> GroupFit:
    f, boot = cfg.fit, cfg.fit.bootstrap
    pts = exclude_highest(points, cfg.exclude_highest_loss)
    n = pts.n(f.params)
    d, c, loss = pts.tokens, pts.flops, pts.loss
    if len(pts) == 0:
        raise ValueError("no usable runs left: " + "; ".join(f"{e['name']}: {e['reason']}" for e in pts.excluded))
    k = float(np.median(c / (n * d)))
    target = float(cfg.target_flops) if cfg.target_flops is not None else 10 * float(np.max(pts.budget))
    g = GroupFit(pts, n, k, target, [r for r in (curves or []) if r.name in set(pts.name)])
    doc: dict = {"n_runs": len(pts), "params": f.params, "loss": pts.loss_kind,
                 "flops_per_param_token": k, "excluded": pts.excluded, "target_flops": target,
                 "model_sizes": int(len(np.unique(n))), "budgets": sorted(float(b) for b in np.unique(pts.budget))}
    single = len(np.unique(n)) < 2
    refuse = "a single model size: a scaling law needs several (plan more sizes per budget)"
    optimal: dict = {"target_flops": target}

    law = None
    if 3 in f.approaches:
        if single or len(pts) < 5:
            doc["approach3"] = {"error": refuse if single else f"{len(pts)} runs < 5 parameters"}
        else:
            try:
                law, obj = fit_parametric(n, d, loss, f.huber_delta, top_k=f.top_k)
            except ValueError as e:
                doc["approach3"] = {"error": str(e)}
        if law is not None:
            g.law = law
            theta = theta_of(law)

            def one(idx):
                lw, _ = fit_parametric(n[idx], d[idx], loss[idx], f.huber_delta, top_k=f.bootstrap_top_k,
                                       extra_inits=theta)
                return {**lw.as_dict(), "N_opt": float(lw.optimal_n(target, k)),
                        "D_opt": float(lw.optimal_d(target, k)),
                        "loss_opt": float(lw.loss(lw.optimal_n(target, k), lw.optimal_d(target, k)))}
            point = {**law.as_dict(), "N_opt": float(law.optimal_n(target, k)),
                     "D_opt": float(law.optimal_d(target, k)),
                     "loss_opt": float(law.loss(law.optimal_n(target, k), law.optimal_d(target, k)))}
            s = bootstrap(one, len(n), boot.n, boot.seed)
            g.law_samples = s
            est = with_intervals(point, s, boot.level)
            doc["approach3"] = {**{k_: est[k_] for k_ in ("E", "A", "B", "alpha", "beta")},
                                "a": summarize(law.beta / (law.alpha + law.beta),
                                               [b / (a + b) for a, b in zip(s.get("alpha", []), s.get("beta", []))],
                                               boot.level),
                                "huber_objective": obj, "huber_delta": f.huber_delta,
                                "initialisations": "paper grid (4500)" if f.top_k is None else f"best {f.top_k} of the paper grid"}
            optimal["approach3"] = {"N": est["N_opt"], "D": est["D_opt"], "loss": est["loss_opt"]}

    if 2 in f.approaches:
        if single:
            doc["approach2"] = {"error": refuse}
        else:
            minima, rejected = isoflop_minima(n, d, loss, pts.budget, f.min_points_per_budget)
            g.minima = minima
            try:
                iso = fit_isoflop(minima)
            except ValueError as e:
                doc["approach2"] = {"error": str(e), "rejected_budgets": rejected}
            else:
                g.isoflop = iso

                def one(idx):
                    mins, _ = isoflop_minima(n[idx], d[idx], loss[idx], pts.budget[idx], f.min_points_per_budget)
                    r = fit_isoflop(mins)
                    return {**r, "N_opt": power_law_at(r["G_N"], r["a"], target),
                            "D_opt": power_law_at(r["G_D"], r["b"], target)}
                point = {**iso, "N_opt": float(power_law_at(iso["G_N"], iso["a"], target)),
                         "D_opt": float(power_law_at(iso["G_D"], iso["b"], target))}
                est = with_intervals(point, bootstrap(one, len(n), boot.n, boot.seed, strata=pts.budget), boot.level)
                doc["approach2"] = {"a": est["a"], "b": est["b"], "G_N": est["G_N"], "G_D": est["G_D"],
                                    "minima": minima, "rejected_budgets": rejected}
                optimal["approach2"] = {"N": est["N_opt"], "D": est["D_opt"]}

    if 1 in f.approaches:
        if single:
            doc["approach1"] = {"error": refuse}
        else:
            n_of = dict(zip(pts.name, n))
            use_curves = len(g.curves) == len(pts) and len(g.curves) > 0
            if use_curves:
                cv = _curves_for_envelope(g.curves, n_of, f.curve_skip_fraction)
                env_of = lambda idx: envelope_from_curves([cv[i] for i in idx])  # noqa: E731
                n_items = len(cv)
            else:
                env_of = lambda idx: envelope_from_points(c[idx], n[idx], d[idx], loss[idx])  # noqa: E731
                n_items = len(n)
            try:
                g.envelope = env_of(np.arange(n_items))
                ef = fit_envelope(*g.envelope[:3])
            except ValueError as e:
                doc["approach1"] = {"error": str(e)}
            else:
                g.envelope_fit = ef

                def one(idx):
                    r = fit_envelope(*env_of(np.unique(idx))[:3])
                    return {**r, "N_opt": power_law_at(r["G_N"], r["a"], target),
                            "D_opt": power_law_at(r["G_D"], r["b"], target)}
                point = {**ef, "N_opt": float(power_law_at(ef["G_N"], ef["a"], target)),
                         "D_opt": float(power_law_at(ef["G_D"], ef["b"], target))}
                est = with_intervals(point, bootstrap(one, n_items, boot.n, boot.seed), boot.level)
                doc["approach1"] = {"a": est["a"], "b": est["b"], "G_N": est["G_N"], "G_D": est["G_D"],
                                    "source": "learning curves" if use_curves else "final points (Pareto frontier)",
                                    "envelope_points": int(len(g.envelope[0]))}
                optimal["approach1"] = {"N": est["N_opt"], "D": est["D_opt"]}

    if f.learning_curves and g.curves:
        for r in g.curves:
            m = r.tokens >= f.curve_skip_fraction * r.tokens[-1]
            t, y = r.tokens[m], r.loss[m]
            try:
                point = fit_learning_curve(t, y)
            except ValueError as e:
                g.learning_curves[r.name] = {"error": str(e)}
                continue
            s = bootstrap(lambda idx: fit_learning_curve(t[idx], y[idx]), len(t), boot.n, boot.seed)
            g.learning_curves[r.name] = {"N": float(n_of_run(r, f.params)), **point,
                                         **{k_: v for k_, v in with_intervals(
                                             {x: point[x] for x in ("E", "B", "beta")}, s, boot.level).items()}}
        doc["learning_curves"] = g.learning_curves
    doc["compute_optimal"] = optimal
    g.doc = doc
    return g


def n_of_run(r: RunCurve, which: str) -> float:
    return r.n_non_embedding if which == "non_embedding" else r.n_total


def load_groups(cfg: ScalingConfig) -> tuple[dict[str, Points], list[RunCurve], str]:
    data = fit_input(cfg)
    if data.is_dir():
        runs = read_ladder(data, cfg.fit.divergence_tolerance)
        return {"all": ladder_points(runs, cfg.fit.loss, cfg.fit.budget_rtol)}, runs, "ladder"
    return read_csv(data, cfg.fit.budget_rtol, cfg.fit.group_by), [], "csv"


def out_dir(cfg: ScalingConfig) -> Path:
    if cfg.output.dir:
        return Path(cfg.output.dir)
    data = fit_input(cfg)
    return data / "fit" if data.is_dir() else data.with_name(data.stem + "_fit")


def run_fit(cfg: ScalingConfig, plots: bool = True) -> dict:
    groups, runs, source = load_groups(cfg)
    out = out_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, GroupFit] = {}
    doc: dict = {"input": str(fit_input(cfg)), "source": source, "exclude_highest_loss": cfg.exclude_highest_loss}
    for key, pts in groups.items():
        try:
            results[key] = fit_group(pts, cfg, runs)
        except ValueError as e:
            results[key] = None  # type: ignore[assignment]
            doc.setdefault("errors", {})[key] = str(e)
    if not any(results.values()):
        raise ValueError("nothing could be fitted: " + "; ".join(f"{k}: {v}" for k, v in doc["errors"].items()))
    if cfg.fit.group_by is None and "all" in results:
        doc.update(results["all"].doc if results["all"] else {})
    else:
        doc["group_by"] = cfg.fit.group_by
        doc["groups"] = {k: v.doc for k, v in results.items() if v is not None}
    if runs:
        doc["runs"] = [{"name": r.name, "params_total": r.n_total, "params_non_embedding": r.n_non_embedding,
                        "flops_per_token": r.flops_per_token,
                        "tokens": float(r.tokens[-1]) if len(r.tokens) else None,
                        "flops": float(r.flops[-1]) if len(r.flops) else None,
                        "final_train_loss": r.final_loss("train") if len(r.loss) else None,
                        "final_val_loss": float(r.val_loss[-1]) if len(r.val_loss) else None,
                        "final_val_loss_by_source": {k: float(v[-1]) for k, v in r.val_loss_by_source.items()
                                                     if len(v)},
                        "corrupt_metrics_lines": r.corrupt_lines, "excluded": r.problem} for r in runs]
    if plots:
        from tools.scaling.plots import plot_all

        doc["plots"] = {}
        for key, g in results.items():
            if g is not None:
                prefix = "" if len(results) == 1 else f"{cfg.fit.group_by}_{key}_"
                doc["plots"].update(plot_all(g, out, prefix))
    tmp = out / "fit.json.tmp"
    tmp.write_text(json.dumps(_clean(doc), indent=1))
    tmp.replace(out / "fit.json")
    doc["out"] = str(out)
    return doc


def _clean(x):
    """JSON without NaN/inf (written as null)."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _fmt(e: dict, spec: str = ".4g") -> str:
    if "lo" in e:
        return f"{e['value']:{spec}} [{e['lo']:{spec}}, {e['hi']:{spec}}]"
    return f"{e['value']:{spec}}"


def format_summary(doc: dict) -> str:
    groups = doc["groups"] if "groups" in doc else {"": doc}
    lines = []
    for key, gd in groups.items():
        if key:
            lines.append(f"== {doc['group_by']} = {key}")
        lines.append(f"runs used: {gd.get('n_runs')}  ({gd.get('model_sizes')} sizes, {len(gd.get('budgets', []))} "
                     f"budgets; N = {gd.get('params')} parameters; loss = {gd.get('loss')})")
        for e in gd.get("excluded", []):
            lines.append(f"  excluded {e['name']}: {e['reason']}")
        for a in ("approach1", "approach2", "approach3"):
            if a not in gd:
                continue
            r = gd[a]
            if "error" in r:
                lines.append(f"{a}: not fitted: {r['error']}")
            elif a == "approach3":
                lines.append(f"approach3: L(N, D) = E + A/N^alpha + B/D^beta  [bootstrap interval]  "
                             f"({r['initialisations']})")
                for p in ("E", "A", "B", "alpha", "beta"):
                    lines.append(f"  {p:<6}{_fmt(r[p])}   (se {r[p].get('se', float('nan')):.3g})")
                lines.append(f"  N_opt ~ C^{_fmt(r['a'], '.3f')}")
            else:
                lines.append(f"{a}: N_opt ~ C^{_fmt(r['a'], '.3f')}, D_opt ~ C^{_fmt(r['b'], '.3f')}")
            rejected = r.get("rejected_budgets", [])
            for rb in rejected[:3]:
                lines.append(f"  budget {rb['budget']:.3g} left out: {rb['reason']}")
            if len(rejected) > 3:
                lines.append(f"  ... and {len(rejected) - 3} more budgets left out (reasons in fit.json)")
        opt = gd.get("compute_optimal", {})
        if len(opt) > 1:
            lines.append(f"compute-optimal at C = {opt['target_flops']:.3g} FLOPs:")
            for a, r in opt.items():
                if a == "target_flops":
                    continue
                extra = f", loss {_fmt(r['loss'], '.4f')}" if "loss" in r else ""
                lines.append(f"  {a}: N = {_fmt(r['N'], '.3g')} parameters, D = {_fmt(r['D'], '.3g')} tokens{extra}")
    for key, err in doc.get("errors", {}).items():
        lines.append(f"group {key}: not fitted: {err}")
    if "out" in doc:
        lines.append(f"wrote {doc['out']}/fit.json")
    return "\n".join(lines)
