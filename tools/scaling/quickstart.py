"""The quickstart's ladder: model sizes x budgets trained on CPU on the sample data, the fits, the plots, the
compute-optimal answer for a stated budget, and a bigger run predicted, trained and compared.
Called by tools/quickstart.py."""

from __future__ import annotations

from pathlib import Path

from tools.scaling.config import load_config, validate
from tools.scaling.fit import format_summary, run_fit
from tools.scaling.plan import format_plan, plan_ladder, write_plan
from tools.scaling.predict import run_predict
from tools.scaling.runner import run_ladder

# Sized to say something in ~8 minutes on 2 CPU cores: a 512-piece BPE (so non-embedding parameters are a large
# part of the bigger models), 3-layer Llama-style models in 8-wide heads at every width from 16 to 144 (one depth:
# at this scale a change of depth moves the loss more than the parameter count says, which scatters the IsoFLOP
# profiles), 3 budgets a half-decade apart, 5 sizes each spanning 2-100 tokens per parameter (both sides of
# each IsoFLOP minimum), 128-token sequences, 16 per step, validation over 16 batches (the whole held-out split).
# Then a run at 4x the largest budget is predicted from the fit, trained, and compared.
QUICKSTART = [
    "budgets=[1e11,3e11,1e12]",
    "families.llama.aspect_ratio=4", "families.llama.max_aspect_ratio=48", "families.llama.head_dim=8",
    "families.llama.ffn_multiple=8", "families.llama.min_layers=3", "families.llama.max_layers=3",
    "families.llama.seq_length=128",
    "plan.sizes_per_budget=5", "plan.min_tokens_per_param=2", "plan.max_tokens_per_param=100",
    "plan.global_batch_size=16", "plan.micro_batch_size=16", "plan.min_iters=20",
    "plan.warmup_fraction=0.05", "plan.lr=3e-3", "plan.min_lr=3e-4", "plan.eval_points=2", "plan.eval_iters=16",
]
PREDICT_FACTOR = 4  # the predicted run's budget, in multiples of the ladder's largest


def quickstart_ladder(data_cfg_overrides: list[str], out_dir: Path, budget_flops: float,
                      extra: list[str] | None = None, predict: bool = True) -> dict:
    """Plan, train (sequential subprocesses, one process each), fit and plot; print the answer for budget_flops;
    then predict a run at PREDICT_FACTOR x the largest budget, train it and print predicted against measured.

    data_cfg_overrides: trainer overrides naming the shards and tokenizer (data.paths=..., ...).
    Returns {"ladder", "fit_json", "plots", "failed", "answer", "prediction"}.
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
    fit_cfg = load_config("fit", [f"ladder={ladder}", f"output.dir={out_dir / 'fit'}", f"target_flops={budget_flops}",
                                  "fit.top_k=10", "fit.bootstrap.n=100"])
    doc = run_fit(fit_cfg)
    print(format_summary(doc))
    answer = answer_for(doc)
    print(answer["text"], flush=True)
    prediction = None
    if predict and not failed:
        target = PREDICT_FACTOR * max(float(b) for b in cfg.budgets)
        print(f"predicting a run at {target:.3g} FLOPs ({PREDICT_FACTOR}x the largest budget) from the fit, then "
              "training it", flush=True)
        prediction = run_predict(load_config("predict", [f"ladder={ladder}", f"predict.flops={target}",
                                                         f"output.dir={out_dir / 'predict'}", "fit.top_k=10",
                                                         "fit.bootstrap.n=100"]),
                                 log=lambda m: print(m, flush=True))
    return {"ladder": str(ladder), "fit_json": str(Path(doc["out"]) / "fit.json"), "plots": doc.get("plots", {}),
            "failed": failed, "answer": answer, "prediction": prediction}


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



