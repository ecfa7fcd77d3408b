"""The quickstart's tiny ladder: a few model sizes x a few budgets trained on CPU on the sample data, then the
fits, the plots, and the compute-optimal answer for a stated budget. Called by tools/quickstart.py."""

from __future__ import annotations

from pathlib import Path

from tools.scaling.config import load_config, validate
from tools.scaling.fit import format_summary, run_fit
from tools.scaling.plan import format_plan, plan_ladder, write_plan
from tools.scaling.runner import run_ladder

# Sized for ~6 minutes on 2 CPU cores in total (9 runs; a good part of it process start-up and megatron's setup)
# with the quickstart's 4,096-piece tokenizer: 3 budgets, a small Llama family in 16-wide heads, 64-token
# sequences, 8 sequences per step. At this size the embeddings are most of the parameters and the runs see well
# under 20 tokens per parameter: the answer shows the machinery end to end, not a law to plan a real run with.
QUICKSTART = [
    "budgets=[3e10,6e10,1.2e11]",
    "families.llama.aspect_ratio=16", "families.llama.head_dim=16", "families.llama.min_layers=1",
    "families.llama.max_layers=6", "families.llama.seq_length=64",
    "plan.sizes_per_budget=3", "plan.min_tokens_per_param=0.05", "plan.max_tokens_per_param=20",
    "plan.global_batch_size=8", "plan.micro_batch_size=8", "plan.min_iters=20",
    "plan.warmup_fraction=0.1", "plan.lr=3e-3", "plan.min_lr=3e-4", "plan.eval_points=2", "plan.eval_iters=2",
]


def quickstart_ladder(data_cfg_overrides: list[str], out_dir: Path, budget_flops: float,
                      extra: list[str] | None = None) -> dict:
    """Plan, train (sequential subprocesses, one process each), fit and plot; print the answer for budget_flops.

    data_cfg_overrides: trainer overrides naming the sample shards and tokenizer (data.paths=..., ...).
    Returns {"ladder", "fit_json", "plots", "failed", "answer"}.
    """
    out_dir = Path(out_dir)
    ladder = out_dir / "ladder"
    cfg = load_config("plan", [f"ladder={ladder}", *QUICKSTART, *(extra or [])])
    cfg.plan.overrides = [*data_cfg_overrides, "logging.wandb.mode=disabled", "train.bf16=false"]
    validate(cfg, "plan")
    plan = plan_ladder(cfg)
    print(format_plan(plan), flush=True)
    write_plan(plan, cfg)
    print(f"training {len(plan.runs)} runs of the ladder in {ladder} (each: python -m pretrain ...)", flush=True)
    failed = run_ladder(cfg, log=lambda m: print(m, flush=True))
    fit_cfg = load_config("fit", [f"data={ladder}", f"out={out_dir / 'fit'}", f"target_flops={budget_flops}",
                                  "fit.top_k=10", "fit.bootstrap.n=100"])
    doc = run_fit(fit_cfg)
    print(format_summary(doc))
    answer = answer_for(doc)
    print(answer["text"], flush=True)
    print("(a toy ladder on CPU: it shows the machinery end to end; plan a real ladder with larger budgets)")
    return {"ladder": str(ladder), "fit_json": str(Path(doc["out"]) / "fit.json"), "plots": doc.get("plots", {}),
            "failed": failed, "answer": answer}


def answer_for(doc: dict) -> dict:
    """The compute-optimal answer in one sentence, from the best available approach (3, else 2, else 1)."""
    opt = doc.get("compute_optimal", {})
    for approach in ("approach3", "approach2", "approach1"):
        if approach in opt:
            r = opt[approach]
            n, d = r["N"], r["D"]
            text = (f"For a budget of {opt['target_flops']:.3g} FLOPs ({approach}): train a model of "
                    f"{n['value']:.3g} parameters (interval {n.get('lo', float('nan')):.3g}-"
                    f"{n.get('hi', float('nan')):.3g}) on {d['value']:.3g} tokens "
                    f"({d['value'] / n['value']:.1f} tokens per parameter)")
            if "loss" in r:
                text += f"; predicted loss {r['loss']['value']:.3f}"
            return {"approach": approach, "N": n, "D": d, "loss": r.get("loss"), "text": text + "."}
    return {"approach": None, "text": "No compute-optimal answer: " + "; ".join(
        f"{a}: {doc[a]['error']}" for a in ("approach1", "approach2", "approach3") if "error" in doc.get(a, {}))}



