"""Typed configuration of the scaling-law tools (conf/scaling/config.yaml) and its validation.

Hydra composes conf/scaling/config.yaml over these dataclasses (registered in Hydra's ConfigStore as
`scaling_schema`, so an unknown key, a wrong type or a value outside an enum fails at composition); `validate`
checks the values against each other and raises ConfigError naming the key and the fix, before any run is
planned, started or fitted.

Every command works on `ladder=DIR`: plan writes it, run trains it, fit fits it, predict extends it. fit reads
`input.paths=[runs.csv]` (published runs) instead when given; fit and predict write under `output.dir`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Optional

import conf
from conf import ConfigError, fail as _fail

CONF_DIR = conf.CONF_DIR / "scaling"


class ParamCount(StrEnum):
    total = "total"  # Chinchilla
    non_embedding = "non_embedding"  # Kaplan


class FinalLoss(StrEnum):
    auto = "auto"  # val when every run has one, else train
    val = "val"
    train = "train"


@dataclass
class FamilyConfig:
    """A depth/width rule: one model per depth, hidden = aspect_ratio x layers rounded to whole heads.

    With max_aspect_ratio, every whole-head width from aspect_ratio to max_aspect_ratio x layers at each depth:
    finer steps in N than one model per depth (Kaplan et al.: loss depends little on the aspect ratio in this
    range), which small ladders need to sample both sides of each IsoFLOP minimum."""
    aspect_ratio: int = 32  # hidden_size / num_layers
    max_aspect_ratio: Optional[int] = None
    head_dim: int = 32
    heads_per_group: int = 2  # grouped-query attention: query heads per KV head (1 = multi-head attention)
    ffn_ratio: float = 8 / 3  # SwiGLU MLP width / hidden size
    ffn_multiple: int = 32  # the MLP width is rounded up to a multiple of this
    min_layers: int = 1
    max_layers: int = 48
    seq_length: int = 128
    untie_embeddings: bool = True


@dataclass
class PlanConfig:
    sizes_per_budget: int = 4
    min_tokens_per_param: float = 2.0  # the models of a budget span these tokens/parameter ratios
    max_tokens_per_param: float = 200.0
    tokens: str = "formula"  # formula: D = C / flops_per_token (pretrain/flops.py) | 6n: D = C / (6 N)
    vocab_size: Optional[int] = None  # None: the tokenizer's (data.tokenizer_model in overrides), padded to 128
    global_batch_size: int = 16
    micro_batch_size: int = 4
    min_iters: int = 10  # a (size, budget) pair with fewer steps is left out of the plan, with the reason
    warmup_fraction: float = 0.05
    lr: float = 3e-3
    min_lr: float = 3e-4
    decay: str = "cosine"  # each run decays over its own length (Hoffmann et al.: a cosine matched to D)
    eval_points: int = 4  # validation runs this many times per run (the last at the final step)
    eval_iters: int = 4
    log_interval: int = 1
    seed: int = 1234
    overrides: list[str] = field(default_factory=list)  # extra Hydra overrides for every run (data paths...)


@dataclass
class BootstrapConfig:
    n: int = 200  # bootstrap resamples per fit (0: no intervals)
    seed: int = 0
    level: float = 0.95  # interval coverage (percentile bootstrap)


@dataclass
class FitConfig:
    params: ParamCount = ParamCount.total  # which N the laws use
    loss: FinalLoss = FinalLoss.auto  # final loss of a run
    group_by: Optional[str] = None  # CSV column: fit each value separately (e.g. config for Porian et al.)
    approaches: list[int] = field(default_factory=lambda: [1, 2, 3])
    learning_curves: bool = True  # per-run L(D) = E + B / D^beta (ladder directories only)
    huber_delta: float = 1e-3
    top_k: Optional[int] = None  # approach 3: None = L-BFGS from all 4,500 grid points (the paper); k = best k
    bootstrap_top_k: int = 5  # approach 3 bootstrap: starts from the full-data fit and the k best grid points
    min_points_per_budget: int = 3  # approach 2: an IsoFLOP group needs a parabola's worth of sizes
    budget_rtol: float = 0.05  # CSV FLOPs within this relative distance form one IsoFLOP budget
    curve_skip_fraction: float = 0.1  # learning curves: leave out the first 10% of tokens (warmup)
    divergence_tolerance: float = 0.5  # a run whose final loss exceeds its best by this much has diverged
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)


@dataclass
class PredictConfig:
    """`predict`: the target run, as a compute budget (the family's shape nearest approach 3's N_opt) or as a
    shape and a token count; trained with the ladder's recipe (plan.json) unless train=false."""
    flops: Optional[float] = None
    num_layers: Optional[int] = None
    hidden_size: Optional[int] = None
    tokens: Optional[float] = None
    train: bool = True


@dataclass
class InputConfig:
    paths: list[str] = field(default_factory=list)  # fit: a CSV of runs (or a ladder directory) instead of `ladder`


@dataclass
class OutputConfig:
    dir: Optional[str] = None  # fit: default <ladder>/fit or <csv stem>_fit; predict: default <ladder>/predict


@dataclass
class ScalingConfig:
    ladder: str = "runs/ladder"  # plan writes the ladder here; run trains it
    budgets: list[float] = field(default_factory=lambda: [1e15, 3e15, 1e16])
    family: str = "llama"
    families: dict[str, FamilyConfig] = field(default_factory=lambda: {"llama": FamilyConfig()})
    plan: PlanConfig = field(default_factory=PlanConfig)
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    exclude_highest_loss: int = 0  # fit: drop the k highest-loss runs (Besiroglu et al. drop 5)
    target_flops: Optional[float] = None  # compute-optimal answer for this budget; None: 10x the largest budget
    fit: FitConfig = field(default_factory=FitConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    python: Optional[str] = None  # run: interpreter for the trainer subprocesses; None = this one


def validate(cfg: ScalingConfig, command: str) -> None:
    if cfg.family not in cfg.families:
        _fail("family", f"unknown family {cfg.family!r}", f"use one of {sorted(cfg.families)} or define "
              f"+families.{cfg.family}.aspect_ratio=... (the other keys start from FamilyConfig's defaults)")
    fam = cfg.families[cfg.family]
    for key, v in [("head_dim", fam.head_dim), ("aspect_ratio", fam.aspect_ratio),
                   ("heads_per_group", fam.heads_per_group), ("ffn_multiple", fam.ffn_multiple),
                   ("min_layers", fam.min_layers), ("seq_length", fam.seq_length)]:
        if v < 1:
            _fail(f"families.{cfg.family}.{key}", f"must be >= 1, got {v}", "set a positive integer")
    if fam.max_layers < fam.min_layers:
        _fail(f"families.{cfg.family}.max_layers", f"{fam.max_layers} < min_layers={fam.min_layers}",
              "raise max_layers")
    if fam.max_aspect_ratio is not None and fam.max_aspect_ratio < fam.aspect_ratio:
        _fail(f"families.{cfg.family}.max_aspect_ratio", f"{fam.max_aspect_ratio} < aspect_ratio={fam.aspect_ratio}",
              "raise it, or set it to null for one width per depth")
    p = cfg.plan
    if command == "plan":
        if not cfg.budgets or any(float(b) <= 0 for b in cfg.budgets):
            _fail("budgets", f"need positive FLOP budgets, got {list(cfg.budgets)}", "write budgets=[1e15,3e15,1e16]")
        if len(set(float(b) for b in cfg.budgets)) != len(cfg.budgets):
            _fail("budgets", f"duplicate budgets in {list(cfg.budgets)}", "list each budget once")
    if p.sizes_per_budget < 2:
        _fail("plan.sizes_per_budget", f"an IsoFLOP profile needs >= 2 sizes (3+ for a parabola), got "
              f"{p.sizes_per_budget}", "set plan.sizes_per_budget=4")
    if not 0 < p.min_tokens_per_param < p.max_tokens_per_param:
        _fail("plan.min_tokens_per_param", f"need 0 < min ({p.min_tokens_per_param}) < max "
              f"({p.max_tokens_per_param})", "e.g. plan.min_tokens_per_param=2 plan.max_tokens_per_param=200")
    if p.tokens not in ("formula", "6n"):
        _fail("plan.tokens", f"unknown rule {p.tokens!r}", "use formula (measured FLOPs per token) or 6n")
    if p.global_batch_size % p.micro_batch_size:
        _fail("plan.global_batch_size", f"{p.global_batch_size} is not a multiple of plan.micro_batch_size="
              f"{p.micro_batch_size}", "use a multiple")
    if p.eval_points < 1:
        _fail("plan.eval_points", f"must be >= 1, got {p.eval_points}", "set plan.eval_points=4")
    f = cfg.fit
    if f.params not in ("total", "non_embedding"):
        _fail("fit.params", f"unknown count {f.params!r}", "use total or non_embedding")
    if f.loss not in ("auto", "val", "train"):
        _fail("fit.loss", f"unknown loss {f.loss!r}", "use auto, val or train")
    if not set(f.approaches) <= {1, 2, 3}:
        _fail("fit.approaches", f"unknown approaches in {list(f.approaches)}", "choose from [1,2,3]")
    if f.bootstrap.n < 0 or not 0 < f.bootstrap.level < 1:
        _fail("fit.bootstrap", f"n={f.bootstrap.n}, level={f.bootstrap.level}", "use n >= 0 and 0 < level < 1")
    if cfg.exclude_highest_loss < 0:
        _fail("exclude_highest_loss", f"must be >= 0, got {cfg.exclude_highest_loss}", "use 0 or e.g. 5")
    if cfg.target_flops is not None and cfg.target_flops <= 0:
        _fail("target_flops", f"must be positive, got {cfg.target_flops}", "e.g. target_flops=5.76e23")
    if command == "predict":
        t = cfg.predict
        shape_given = [t.num_layers is not None, t.hidden_size is not None, t.tokens is not None]
        if not ((t.flops is not None and not any(shape_given)) or (t.flops is None and all(shape_given))):
            _fail("predict", "give either predict.flops (a budget) or all of predict.num_layers, "
                  "predict.hidden_size and predict.tokens", "e.g. predict.flops=4e12, or predict.num_layers=4 "
                  "predict.hidden_size=64 predict.tokens=2e6")
        for key in ("flops", "num_layers", "hidden_size", "tokens"):
            if getattr(t, key) is not None and getattr(t, key) <= 0:
                _fail(f"predict.{key}", f"must be positive, got {getattr(t, key)}", "give a positive value")
        if 3 not in f.approaches:
            _fail("fit.approaches", "predict uses approach 3's L(N, D)", "keep 3 in fit.approaches")
        if cfg.input.paths:
            _fail("input.paths", "predict extends a ladder, not a CSV", "pass ladder=<ladder dir> instead")
        if not (Path(cfg.ladder) / "plan.json").is_file():
            _fail("ladder", f"{cfg.ladder} is not a planned ladder (no plan.json)", "pass ladder=<ladder dir> "
                  "planned and trained with python -m tools.scaling plan/run")
    if command == "fit":
        if len(cfg.input.paths) > 1:
            _fail("input.paths", f"fit reads one CSV or ladder, got {len(cfg.input.paths)}",
                  "concatenate the CSVs into one file, or fit each apart")
        source = fit_input(cfg)
        if not source.exists():
            what = "input.paths" if cfg.input.paths else "ladder"
            _fail(what, f"{source} does not exist", "pass ladder=<ladder dir> or input.paths=[<runs csv>]")
    if command == "run" and not (Path(cfg.ladder) / "plan.json").is_file():
        _fail("ladder", f"{cfg.ladder}/plan.json not found", "plan the ladder first: "
              f"python -m tools.scaling plan ladder={cfg.ladder} budgets=[...]")


# spellings of earlier releases, and what replaced them
RENAMED = {"data": "ladder=<ladder dir>, or input.paths=[<runs csv>] for fit", "out": "output.dir=DIR",
           "predict.out": "output.dir=DIR"}


def fit_input(cfg: ScalingConfig) -> Path:
    """What fit reads: input.paths[0] when given, else the ladder."""
    return Path(cfg.input.paths[0] if cfg.input.paths else cfg.ladder)


def load_config(command: str, overrides: list[str]) -> ScalingConfig:
    """conf/scaling/config.yaml over the ScalingConfig schema with Hydra overrides, validated for `command`.

    `+families.NAME.key=value` adds a family whose other keys start from FamilyConfig's defaults (applied after
    Hydra's composition: OmegaConf cannot create a typed dict entry from a partial mapping)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    conf.register("scaling_schema", ScalingConfig)
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise conf.from_hydra_error(e, "scaling", ScalingConfig) from None
    for o in parsed:
        if o.key_or_group in RENAMED:
            _fail(o.key_or_group, "renamed (one spelling per concept across the tools)", f"use {RENAMED[o.key_or_group]}")
    known = set(ScalingConfig().families) | set(OmegaConf.load(CONF_DIR / "config.yaml").get("families", {}))
    new_family = [o for o in parsed if o.is_add() and o.key_or_group.startswith("families.")
                  and len(o.key_or_group.split(".")) > 2 and o.key_or_group.split(".")[1] not in known]
    rest = [o.input_line for o in parsed if o not in new_family]
    cfg = conf.compose("scaling", rest, ScalingConfig)
    try:
        OmegaConf.set_struct(cfg, False)
        for o in new_family:
            name = o.key_or_group.split(".")[1]
            if name not in cfg.families:
                cfg.families[name] = OmegaConf.structured(FamilyConfig)
            OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        OmegaConf.set_struct(cfg, True)
    except OmegaConfBaseException as e:
        raise conf.from_hydra_error(e, "scaling", ScalingConfig) from None
    obj: Any = conf.to_object(cfg, ScalingConfig, "scaling")
    validate(obj, command)
    return obj
