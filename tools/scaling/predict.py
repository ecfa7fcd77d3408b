"""`python -m tools.scaling predict`: from a trained ladder, predict the final loss of a bigger run before paying
for it, then (by default) train that run with the ladder's own recipe and report predicted against measured.

The prediction is approach 3's L(N, D) = E + A/N^alpha + B/D^beta fitted on the ladder's final losses, evaluated
at the target's parameters and tokens; its interval is the spread of the same quantity over the bootstrap
replicates of the fit (runs resampled). The target is either a compute budget (`predict.flops`: the family shape
nearest the law's N_opt for that budget, trained for C / FLOPs-per-token tokens) or an explicit shape and token
count. The target run lives in <ladder>/predict/<name>, outside <ladder>/runs, so it never enters the fit.
Writes <out>/prediction.json and the plot <out>/prediction.png|svg.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from pretrain.flops import count_params, flops_per_token
from pretrain.rundir import RunDir
from tools.scaling.bootstrap import summarize
from tools.scaling.config import ConfigError, FamilyConfig, PlanConfig, ScalingConfig
from tools.scaling.family import ModelShape, family_shapes, shape_for_depth
from tools.scaling.fit import GroupFit, fit_group, load_groups
from tools.scaling.ladder import read_run
from tools.scaling.plan import read_plan, run_overrides
from tools.scaling.runner import train_run


def _ladder_recipe(ladder: Path) -> tuple[FamilyConfig, PlanConfig, int]:
    plan = read_plan(ladder)
    if "plan_config" not in plan:
        raise ConfigError(f"data: {ladder}/plan.json was written before plans recorded their recipe. Fix: plan "
                          "the ladder again with python -m tools.scaling plan (finished runs are kept)")
    return FamilyConfig(**plan["family_config"]), PlanConfig(**plan["plan_config"]), int(plan["vocab_size"])


def _n_of(counts: dict, which: str) -> float:
    return float(counts["non_embedding" if which == "non_embedding" else "total"])


def _fpt(shape: ModelShape, vocab: int, fam: FamilyConfig, p: PlanConfig) -> float:
    """FLOPs per token by the ladder's own rule (plan.tokens)."""
    if p.tokens == "6n":
        return 6.0 * count_params(shape, vocab, untie_embeddings=fam.untie_embeddings)["total"]
    return flops_per_token(shape, vocab)


def choose_target(cfg: ScalingConfig, g: GroupFit, fam: FamilyConfig, p: PlanConfig, vocab: int) -> dict:
    """The target's shape, steps and tokens: given, or the family shape nearest N_opt(predict.flops)."""
    t = cfg.predict
    tokens_per_step = p.global_batch_size * fam.seq_length
    if t.flops is not None:
        n_opt = float(g.law.optimal_n(t.flops, g.k))
        shapes = family_shapes(fam)
        counts = [count_params(s, vocab, untie_embeddings=fam.untie_embeddings) for s in shapes]
        i = int(np.argmin([abs(math.log(_n_of(c, cfg.fit.params) / n_opt)) for c in counts]))
        shape = shapes[i]
        iters = max(1, int(round(t.flops / _fpt(shape, vocab, fam, p) / tokens_per_step)))
        chosen_by = f"nearest family shape to approach 3's N_opt = {n_opt:.4g} at C = {t.flops:.3g}"
    else:
        if t.hidden_size % fam.head_dim:
            raise ConfigError(f"predict.hidden_size: {t.hidden_size} is not a multiple of the family's head_dim="
                              f"{fam.head_dim}. Fix: use a multiple of {fam.head_dim}")
        shape = shape_for_depth(fam, t.num_layers, t.hidden_size // fam.head_dim)
        iters = max(1, int(round(t.tokens / tokens_per_step)))
        chosen_by = "given"
    counts = count_params(shape, vocab, untie_embeddings=fam.untie_embeddings)
    tokens = iters * tokens_per_step
    fpt = _fpt(shape, vocab, fam, p)
    return {"name": f"{shape.name}_D{tokens:.3g}".replace("+", ""), "shape": shape, "iters": iters,
            "tokens": tokens, "params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
            "n": _n_of(counts, cfg.fit.params), "flops": tokens * fpt, "chosen_by": chosen_by}


def predicted_loss(g: GroupFit, n: float, d: float, level: float) -> dict:
    """L(n, d) from the fitted law, with the percentile interval over the bootstrap replicates."""
    s = g.law_samples
    k = min(len(s.get(name, [])) for name in ("E", "A", "B", "alpha", "beta")) if s else 0
    e, a, b, al, be = (np.asarray(s[name][:k], float) if k else np.empty(0)
                       for name in ("E", "A", "B", "alpha", "beta"))
    # numpy, not float **: a wild replicate (alpha = 80 on a poorly constrained ladder) overflows n**alpha,
    # which Python floats raise on; here it becomes inf / 0 and summarize drops non-finite values
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        reps = e + a / np.power(float(n), al) + b / np.power(float(d), be)
    return summarize(float(g.law.loss(n, d)), reps.tolist(), level)


def train_target(cfg: ScalingConfig, target: dict, fam: FamilyConfig, p: PlanConfig, vocab: int,
                 out: Path, log=print) -> Path:
    run_dir = out / target["name"]
    overrides = run_overrides(p, fam, target["shape"], vocab, target["iters"], run_dir)
    if RunDir(run_dir).finished() is None:
        log(f"training the target {target['name']} in {run_dir} ({target['iters']} steps, "
            f"{target['tokens']:,} tokens, {target['flops']:.3g} FLOPs)")
        t0 = time.time()
        rc = train_run(cfg.python or sys.executable, overrides, run_dir)
        if rc != 0:
            raise RuntimeError(f"the target run failed (exit {rc}); see {run_dir / 'ladder_stdout.log'}")
        log(f"trained in {time.time() - t0:.0f} s")
    return run_dir


def run_predict(cfg: ScalingConfig, log=print) -> dict:
    ladder = Path(cfg.ladder)
    fam, p, vocab = _ladder_recipe(ladder)
    groups, runs, _ = load_groups(cfg)
    # only approach 3 is used: the other fits and their bootstraps are not run
    g = fit_group(groups["all"], replace(cfg, fit=replace(cfg.fit, approaches=[3], learning_curves=False)), runs)
    if g.law is None:
        raise ValueError(f"approach 3 could not be fitted on {ladder}: {g.doc['approach3'].get('error')}")
    target = choose_target(cfg, g, fam, p, vocab)
    pred = predicted_loss(g, target["n"], target["tokens"], cfg.fit.bootstrap.level)
    out = Path(cfg.output.dir) if cfg.output.dir else ladder / "predict"
    out.mkdir(parents=True, exist_ok=True)
    largest = float(np.max(g.points.flops))
    doc = {"ladder": str(ladder), "loss": g.points.loss_kind, "params": cfg.fit.params,
           "law": g.law.as_dict(), "flops_per_param_token": g.k, "ladder_runs": len(g.points),
           "ladder_largest_flops": largest,
           "target": {**{k: v for k, v in target.items() if k != "shape"}, "shape": asdict(target["shape"]),
                      "flops_vs_largest_ladder_run": target["flops"] / largest},
           "predicted": pred}
    log(f"target {target['name']}: {target['params_total']:,} parameters ({target['params_non_embedding']:,} "
        f"non-embedding), {target['tokens']:,} tokens, {target['flops']:.3g} FLOPs = "
        f"{target['flops'] / largest:.1f}x the ladder's largest run ({target['chosen_by']})")
    log(f"predicted final {g.points.loss_kind} loss: {_interval(pred)}")
    if cfg.predict.train:
        run_dir = train_target(cfg, target, fam, p, vocab, out, log)
        rc = read_run(run_dir, planned_iters=target["iters"], divergence_tolerance=cfg.fit.divergence_tolerance)
        if rc.problem is not None:
            raise ValueError(f"the target run {run_dir} cannot be measured: {rc.problem}")
        measured = rc.final_loss(g.points.loss_kind)
        rel = (measured - pred["value"]) / measured
        inside = "lo" in pred and pred["lo"] <= measured <= pred["hi"]
        doc["measured"] = {"run_dir": str(run_dir), "loss": measured, "relative_error": rel,
                           "inside_interval": bool(inside)}
        log(f"measured final {g.points.loss_kind} loss: {measured:.4f}; prediction error {100 * rel:+.2f}% "
            f"({'inside' if inside else 'OUTSIDE'} the {cfg.fit.bootstrap.level:.0%} interval)")
    doc["plots"] = plot_prediction(g, doc, out)
    (out / "prediction.json").write_text(json.dumps(doc, indent=1, default=float))
    doc["out"] = str(out)
    return doc


def _interval(e: dict) -> str:
    if "lo" not in e:
        return f"{e['value']:.4f}"
    return f"{e['value']:.4f} [{e['lo']:.4f}, {e['hi']:.4f}]"


def plot_prediction(g: GroupFit, doc: dict, out: Path) -> list[str]:
    """Ladder final losses against compute, coloured by N; the law along its compute-optimal frontier; the
    predicted target with its interval and, when trained, the measured one."""
    from tools.scaling.plots import _colors, _figure, _save

    fig, ax = _figure()
    pts = g.points
    col = _colors(g.n)
    for nv in np.unique(g.n):
        m = g.n == nv
        ax.plot(pts.flops[m], pts.loss[m], "o", color=col[nv], ms=4, label=f"N = {nv:.3g}")
    t, pred = doc["target"], doc["predicted"]
    c = np.geomspace(float(np.min(pts.flops)) / 1.5, t["flops"] * 1.5, 60)
    n_opt, d_opt = g.law.optimal_n(c, g.k), g.law.optimal_d(c, g.k)
    ax.plot(c, g.law.loss(n_opt, d_opt), "k--", lw=1, label="approach 3 at N_opt(C)")
    err = [[pred["value"] - pred.get("lo", pred["value"])], [pred.get("hi", pred["value"]) - pred["value"]]]
    ax.errorbar([t["flops"]], [pred["value"]], yerr=err, fmt="s", color="tab:red", capsize=4,
                label=f"predicted {pred['value']:.3f}")
    if "measured" in doc:
        m = doc["measured"]
        ax.plot([t["flops"]], [m["loss"]], "*", color="tab:orange", ms=12,
                label=f"measured {m['loss']:.3f} ({100 * m['relative_error']:+.1f}%)")
    ax.set_xscale("log")
    ax.set_xlabel("compute (FLOPs)")
    ax.set_ylabel(f"final {doc['loss']} loss")
    ax.set_title(f"prediction for {t['name']} ({t['flops_vs_largest_ladder_run']:.1f}x the largest ladder run)")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    return _save(fig, out, "prediction")
