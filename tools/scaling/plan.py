"""IsoFLOP ladder planning: for each compute budget, several model sizes with tokens = C / (FLOPs per token).

Writes <ladder>/plan.json (everything the runner and the fits need) and <ladder>/runs.txt (one line of Hydra
overrides per run, for the Slurm array: task i runs line i+1).
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pretrain.flops import count_params, flops_per_token
from tools.scaling.config import ConfigError, FamilyConfig, PlanConfig, ScalingConfig
from tools.scaling.family import ModelShape, family_shapes


DEFAULT_VOCAB = 32000  # when neither plan.vocab_size nor a tokenizer is given (the tokenizer trainer's default)


@dataclass
class PlannedRun:
    name: str
    budget: float  # the IsoFLOP budget this run belongs to (FLOPs)
    shape: ModelShape
    params_total: int
    params_non_embedding: int
    flops_per_token: float  # pretrain/flops.py, or 6 N with plan.tokens=6n
    tokens: int  # iters x global batch x sequence length
    iters: int
    flops: float  # tokens x flops_per_token: the compute actually planned
    overrides: list[str]


@dataclass
class Plan:
    runs: list[PlannedRun]
    skipped: list[dict]  # (budget, reason) for budgets or sizes left out
    vocab_size: int


def resolve_vocab_size(cfg: ScalingConfig) -> int:
    if cfg.plan.vocab_size is not None:
        return int(cfg.plan.vocab_size)
    for o in cfg.plan.overrides:
        if o.startswith("model.vocab_size="):
            return int(o.split("=", 1)[1])
    for o in cfg.plan.overrides:
        if o.startswith("data.tokenizer_model="):
            from pretrain.config import padded_vocab_size, tokenizer_vocab_size

            path = o.split("=", 1)[1]
            if not Path(path).is_file():
                raise ConfigError(f"plan.overrides: data.tokenizer_model={path} does not exist. Fix: point it "
                                  "at the sentencepiece .model the shards were encoded with")
            return padded_vocab_size(tokenizer_vocab_size(path))
    return DEFAULT_VOCAB


def _budget_label(budget: float) -> str:
    mant, exp = f"{budget:.2e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def run_overrides(p: PlanConfig, fam: FamilyConfig, shape: ModelShape, vocab: int, iters: int,
                  run_dir: Path) -> list[str]:
    """The trainer overrides of one run of a ladder (and of a run predicted from it: same recipe)."""
    return [*p.overrides, *shape.overrides(),
            f"model.untie_embeddings={str(fam.untie_embeddings).lower()}",
            f"model.vocab_size={vocab}",  # the FLOPs planned are the FLOPs trained
            f"train.iters={iters}", "train.tokens=null",
            f"train.global_batch_size={p.global_batch_size}",
            f"train.micro_batch_size={p.micro_batch_size}",
            f"train.eval_interval={max(1, math.ceil(iters / p.eval_points))}",
            f"train.eval_iters={p.eval_iters}", f"train.save_interval={iters}",
            f"train.log_interval={p.log_interval}",
            f"optim.lr={p.lr}", f"optim.min_lr={p.min_lr}", f"optim.decay={p.decay}",
            f"optim.warmup_iters={max(1, min(iters - 1, int(round(p.warmup_fraction * iters))))}",
            f"run.dir={run_dir}", f"run.seed={p.seed}"]


def plan_ladder(cfg: ScalingConfig) -> Plan:
    fam = cfg.families[cfg.family]
    p = cfg.plan
    vocab = resolve_vocab_size(cfg)
    tokens_per_step = p.global_batch_size * fam.seq_length
    shapes = family_shapes(fam)
    counts = [count_params(s, vocab, untie_embeddings=fam.untie_embeddings) for s in shapes]
    order = sorted(range(len(shapes)), key=lambda i: (counts[i]["total"], shapes[i].num_layers))
    shapes, counts = [shapes[i] for i in order], [counts[i] for i in order]
    fpts = [flops_per_token(s, vocab) if p.tokens == "formula" else 6.0 * c["total"] for s, c in zip(shapes, counts)]
    runs, skipped = [], []
    for budget in sorted(float(b) for b in cfg.budgets):
        # candidates: sizes whose tokens/parameter ratio at this budget lies in the configured range
        cand = []
        for s, c, fpt in zip(shapes, counts, fpts):
            ratio = budget / fpt / c["total"]
            if p.min_tokens_per_param <= ratio <= p.max_tokens_per_param:
                cand.append((s, c, fpt))
        if len(cand) < 2:
            skipped.append({"budget": budget, "reason": f"only {len(cand)} family sizes give "
                            f"{p.min_tokens_per_param}-{p.max_tokens_per_param} tokens/parameter at this budget; "
                            "widen plan.min/max_tokens_per_param or families.<name>.min/max_layers"})
            continue
        # spread the chosen sizes evenly in log N over the candidates
        log_n = np.log([c["total"] for _, c, _ in cand])
        targets = np.linspace(log_n[0], log_n[-1], min(p.sizes_per_budget, len(cand)))
        chosen = sorted({int(np.argmin(np.abs(log_n - t))) for t in targets})
        for i in chosen:
            s, c, fpt = cand[i]
            iters = int(round(budget / fpt / tokens_per_step))
            if iters < p.min_iters:
                skipped.append({"budget": budget, "model": s.name, "reason": f"{iters} steps < plan.min_iters="
                                f"{p.min_iters}; raise the budget or lower plan.global_batch_size"})
                continue
            name = f"C{_budget_label(budget)}_{s.name}"
            overrides = run_overrides(p, fam, s, vocab, iters, Path(cfg.ladder) / "runs" / name)
            tokens = iters * tokens_per_step
            runs.append(PlannedRun(name, budget, s, c["total"], c["non_embedding"], fpt, tokens, iters,
                                   tokens * fpt, overrides))
    if not runs:
        raise ConfigError("budgets: no run fits the plan: " + "; ".join(s["reason"] for s in skipped)
                          + ". Fix: change budgets or the family's depth range")
    return Plan(runs, skipped, vocab)


def write_plan(plan: Plan, cfg: ScalingConfig) -> Path:
    ladder = Path(cfg.ladder)
    ladder.mkdir(parents=True, exist_ok=True)
    doc = {"family": cfg.family, "family_config": asdict(cfg.families[cfg.family]), "budgets": list(cfg.budgets),
           "plan_config": asdict(cfg.plan),
           "vocab_size": plan.vocab_size, "tokens_rule": cfg.plan.tokens,
           "runs": [asdict(r) for r in plan.runs], "skipped": plan.skipped}
    tmp = ladder / "plan.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(ladder / "plan.json")
    (ladder / "runs.txt").write_text("".join(" ".join(shlex.quote(o) for o in r.overrides) + "\n"
                                             for r in plan.runs))
    return ladder


def read_plan(ladder: Path) -> dict:
    return json.loads((Path(ladder) / "plan.json").read_text())


def format_plan(plan: Plan) -> str:
    head = f"{'run':<24}{'budget':>10}{'layers':>7}{'hidden':>7}{'params':>14}{'non-emb':>14}" \
           f"{'tokens':>16}{'tok/param':>10}{'iters':>10}"
    lines = [head, "-" * len(head)]
    for r in plan.runs:
        lines.append(f"{r.name:<24}{r.budget:>10.2e}{r.shape.num_layers:>7}{r.shape.hidden_size:>7}"
                     f"{r.params_total:>14,}{r.params_non_embedding:>14,}{r.tokens:>16,}"
                     f"{r.tokens / r.params_total:>10.1f}{r.iters:>10}")
    lines.append(f"vocabulary: {plan.vocab_size} (every run sets model.vocab_size to it)")
    for s in plan.skipped:
        lines.append(f"skipped {s.get('model', '')} at {s['budget']:.2e}: {s['reason']}")
    return "\n".join(lines)
