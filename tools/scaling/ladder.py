"""Tracking: read a ladder directory of runs into learning curves and a Points table.

A run is a directory with metrics.jsonl (one JSON object per logged step: step, tokens, flops, loss, and
val_loss where validation ran), config.yaml (the resolved trainer config), run_info.json and, once done,
finished.json. Parameters (with and without embeddings) and FLOPs per token come from pretrain/flops.py on the
run's resolved model config. Each run is checked; a run that stopped early, has NaN/inf losses, diverged or
duplicates another is excluded with the reason.
With several data sources the trainer also logs val_loss/<source>; RunCurve.val_loss_by_source holds them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pretrain.flops import count_params, flops_per_token
from pretrain.metrics import val_loss_by_source
from pretrain.rundir import RunDir

FINAL_TRAIN_WINDOW = 10  # the final training loss is the mean of the last 10 logged steps


@dataclass
class RunCurve:
    name: str
    path: Path
    budget: float | None  # from plan.json when the ladder was planned by tools.scaling
    planned_iters: int | None
    n_total: int = 0
    n_non_embedding: int = 0
    flops_per_token: float = 0.0
    step: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0))
    flops: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    val_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0))
    val_flops: np.ndarray = field(default_factory=lambda: np.zeros(0))
    val_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # per data source (the trainer's val_loss/<source> keys): source -> tokens, source -> validation loss
    val_tokens_by_source: dict[str, np.ndarray] = field(default_factory=dict)
    val_loss_by_source: dict[str, np.ndarray] = field(default_factory=dict)
    finished: bool = False
    corrupt_lines: int = 0
    problem: str | None = None  # why the run is excluded from fits, None if usable

    def final_loss(self, kind: str) -> float:
        if kind == "val":
            return float(self.val_loss[-1])
        return float(np.mean(self.loss[-FINAL_TRAIN_WINDOW:]))


def _read_metrics(path: Path) -> tuple[list[dict], int]:
    rows, corrupt = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            int(row["step"]), float(row["tokens"]), float(row["loss"])
        except (ValueError, KeyError, TypeError):
            corrupt += 1  # a torn last line after a crash, or garbage: counted and skipped
            continue
        rows.append(row)
    return rows, corrupt


def _model_of(run: Path) -> tuple[SimpleNamespace, int, bool]:
    cfg, info = RunDir(run).read_config(), RunDir(run).read_run_info()
    m = cfg["model"]
    shape = SimpleNamespace(**{k: int(m[k]) for k in ("num_layers", "hidden_size", "ffn_hidden_size",
                                                      "num_attention_heads", "num_query_groups", "seq_length")})
    return shape, int(info["vocab_size"]), bool(m.get("untie_embeddings", True))


def read_run(run: Path, budget: float | None = None, planned_iters: int | None = None,
             divergence_tolerance: float = 0.5) -> RunCurve:
    rc = RunCurve(run.name, run, budget, planned_iters)
    for needed in ("metrics.jsonl", "config.yaml", "run_info.json"):
        if not (run / needed).is_file():
            rc.problem = f"no {needed} (the run never started or wrote nothing)"
            return rc
    shape, vocab, untie = _model_of(run)
    counts = count_params(shape, vocab, untie_embeddings=untie)
    rc.n_total, rc.n_non_embedding = counts["total"], counts["non_embedding"]
    rc.flops_per_token = flops_per_token(shape, vocab)
    info = RunDir(run).read_run_info()
    if "num_params" in info and int(info["num_params"]) != rc.n_total:
        rc.problem = (f"run_info.json counts {info['num_params']} parameters, pretrain/flops.py {rc.n_total}: "
                      "the run was made by a different model definition")
        return rc
    rows, rc.corrupt_lines = _read_metrics(run / "metrics.jsonl")
    rows = sorted({int(r["step"]): r for r in rows}.values(), key=lambda r: int(r["step"]))  # resumed: last wins
    if not rows:
        rc.problem = "metrics.jsonl has no readable step"
        return rc
    rc.step = np.array([int(r["step"]) for r in rows])
    rc.tokens = np.array([float(r["tokens"]) for r in rows])
    rc.flops = np.array([float(r.get("flops", r["tokens"] * rc.flops_per_token)) for r in rows])
    rc.loss = np.array([float(r["loss"]) for r in rows])
    val = [r for r in rows if r.get("val_loss") is not None]
    rc.val_tokens = np.array([float(r["tokens"]) for r in val])
    rc.val_flops = np.array([float(r.get("flops", r["tokens"] * rc.flops_per_token)) for r in val])
    rc.val_loss = np.array([float(r["val_loss"]) for r in val])
    for source, (tokens, losses) in val_loss_by_source(rows).items():
        rc.val_tokens_by_source[source], rc.val_loss_by_source[source] = np.array(tokens), np.array(losses)
    rc.finished = RunDir(run).finished() is not None
    bad = np.flatnonzero(~np.isfinite(rc.loss))
    bad_val = np.flatnonzero(~np.isfinite(rc.val_loss))
    if len(bad):
        rc.problem = f"loss is {rc.loss[bad[0]]} at step {rc.step[bad[0]]}"
    elif len(bad_val):
        rc.problem = f"val_loss is {rc.val_loss[bad_val[0]]} at {rc.val_tokens[bad_val[0]]:.3g} tokens"
    elif rc.final_loss("train") > rc.loss.min() + divergence_tolerance:
        rc.problem = (f"diverged: final training loss {rc.final_loss('train'):.3f} is more than "
                      f"{divergence_tolerance} above its best {rc.loss.min():.3f}")
    elif planned_iters is not None and rc.step[-1] < planned_iters:
        rc.problem = f"stopped early: last logged step {rc.step[-1]} of {planned_iters} planned"
    elif not rc.finished:
        rc.problem = "stopped early: no finished.json"
    return rc


def read_ladder(ladder: Path, divergence_tolerance: float = 0.5) -> list[RunCurve]:
    """Every run of a ladder: the planned ones (plan.json) first, then any other run directory found."""
    ladder = Path(ladder)
    planned: dict[str, dict] = {}
    if (ladder / "plan.json").is_file():
        planned = {r["name"]: r for r in json.loads((ladder / "plan.json").read_text())["runs"]}
    root = ladder / "runs" if (ladder / "runs").is_dir() else ladder
    dirs = {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and (d / "metrics.jsonl").exists()}
    for name in planned:
        dirs.setdefault(name, root / name)
    runs = []
    for name, d in sorted(dirs.items()):
        plan = planned.get(name, {})
        runs.append(read_run(d, plan.get("budget"), plan.get("iters"), divergence_tolerance))
    if not runs:
        raise ValueError(f"{ladder}: no runs found (expected run directories with metrics.jsonl under "
                         f"{root}). Fix: plan and run a ladder: python -m tools.scaling plan ...; "
                         "python -m tools.scaling run ladder=...")
    # duplicates: two directories holding the same model trained on the same tokens
    seen: dict[tuple, str] = {}
    for r in runs:
        if r.problem is None:
            key = (r.n_total, int(r.tokens[-1]))
            if key in seen:
                r.problem = f"duplicate run: same model and tokens as {seen[key]}"
            else:
                seen[key] = r.name
    return runs


def ladder_points(runs: list[RunCurve], loss: str, budget_rtol: float):
    """The final point of each usable run as Points; excluded runs are listed with their reasons."""
    from tools.scaling.points import Points, group_budgets

    ok = [r for r in runs if r.problem is None]
    excluded = [{"name": r.name, "reason": r.problem} for r in runs if r.problem is not None]
    if loss == "auto":
        loss = "val" if ok and all(len(r.val_loss) for r in ok) else "train"
    if loss == "val":
        for r in [r for r in ok if not len(r.val_loss)]:
            excluded.append({"name": r.name, "reason": "no validation loss (fit.loss=val)"})
        ok = [r for r in ok if len(r.val_loss)]
    flops = np.array([r.flops[-1] for r in ok], float)
    budgets = np.array([r.budget if r.budget is not None else math.nan for r in ok], float)
    if len(ok) and np.isnan(budgets).any():
        budgets = group_budgets(flops, budget_rtol)
    return Points([r.name for r in ok], np.array([r.n_total for r in ok], float),
                  np.array([r.n_non_embedding for r in ok], float), np.array([r.tokens[-1] for r in ok], float),
                  flops, np.array([r.final_loss(loss) for r in ok], float), budgets, excluded, loss)
