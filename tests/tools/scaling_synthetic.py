"""Synthetic ladders in the trainer's output format (docs/contract: metrics.jsonl, config.yaml, run_info.json,
finished.json), with losses drawn from a known law, so the fits can be checked against the truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from tools.scaling.config import load_config
from tools.scaling.plan import plan_ladder, write_plan

# The law the synthetic runs follow: Hoffmann et al.'s published approach-3 fit.
TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
BUDGETS = "[1e15,3e15,1e16,3e16]"


def law(n, d):
    return TRUE["E"] + TRUE["A"] / np.asarray(n, float) ** TRUE["alpha"] + TRUE["B"] / np.asarray(d, float) ** TRUE["beta"]


def write_run(run_dir: Path, run, vocab: int, noise: float, rng, logged_steps: int = 60, finished: bool = True,
              stop_at: int | None = None, loss_fn=None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    s = run.shape
    model = {"num_layers": s.num_layers, "hidden_size": s.hidden_size, "ffn_hidden_size": s.ffn_hidden_size,
             "num_attention_heads": s.num_attention_heads, "num_query_groups": s.num_query_groups,
             "seq_length": s.seq_length, "untie_embeddings": True}
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"model": model, "train": {"iters": run.iters}}))
    (run_dir / "run_info.json").write_text(json.dumps({
        "num_params": run.params_total, "num_params_non_embedding": run.params_non_embedding,
        "num_params_embedding": run.params_total - run.params_non_embedding, "flops_per_token": run.flops_per_token,
        "vocab_size": vocab, "seq_length": s.seq_length, "global_batch_size": 16, "world_size": 1, "tp": 1, "pp": 1,
        "dp": 1, "model": model}))
    per_step = run.tokens // run.iters
    steps = np.unique(np.linspace(1, run.iters, logged_steps).astype(int))
    if stop_at is not None:
        steps = steps[steps <= stop_at]
    evals = set(steps[np.linspace(0, len(steps) - 1, 4).astype(int)][1:].tolist())
    lines = []
    for st in steps:
        tokens = int(st * per_step)
        loss = (loss_fn or law)(run.params_total, tokens) * np.exp(noise * rng.standard_normal())
        row = {"step": int(st), "tokens": tokens, "flops": tokens * run.flops_per_token, "loss": float(loss),
               "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 1e4, "tflops_per_device": 0.1, "mfu": 0.01,
               "step_time_s": 0.1, "data_wait_frac": 0.0}
        if int(st) in evals:
            row["val_loss"] = float((loss_fn or law)(run.params_total, tokens) * np.exp(noise * rng.standard_normal()))
        lines.append(json.dumps(row))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if finished:
        (run_dir / "finished.json").write_text(json.dumps({"step": int(steps[-1])}))


def make_ladder(root: Path, noise: float = 0.002, seed: int = 0, sizes: int = 5,
                extra: tuple[str, ...] = ()) -> tuple[Path, object]:
    """Plan a ladder with tools.scaling's planner, then write every planned run as if it had trained."""
    cfg = load_config("plan", [*extra, f"ladder={root}", f"budgets={BUDGETS}", "plan.vocab_size=512",
                               f"plan.sizes_per_budget={sizes}", "plan.min_tokens_per_param=1",
                               "plan.max_tokens_per_param=400", "plan.global_batch_size=4",
                               "plan.micro_batch_size=4"])
    plan = plan_ladder(cfg)
    write_plan(plan, cfg)
    rng = np.random.default_rng(seed)
    for run in plan.runs:
        write_run(root / "runs" / run.name, run, plan.vocab_size, noise, rng)
    return root, plan
