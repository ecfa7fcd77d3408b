"""Typed configuration of the scaling-law tools (conf/scaling.yaml) and its validation.

Hydra composes conf/scaling.yaml over these dataclasses (an unknown key or a wrong type fails at composition);
`validate` checks the values against each other and raises ConfigError naming the key and the fix, before
any run is planned, started or fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


class ConfigError(ValueError):
    """A configuration value that cannot work. The message names the key and the fix."""


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
    params: str = "total"  # which N the laws use: total (Chinchilla) | non_embedding (Kaplan)
    loss: str = "auto"  # final loss of a run: val | train | auto (val when every run has one, else train)
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
    out: Optional[str] = None  # default <ladder>/predict


@dataclass
class ScalingConfig:
    ladder: str = "runs/ladder"  # plan writes the ladder here; run trains it
    budgets: list[float] = field(default_factory=lambda: [1e15, 3e15, 1e16])
    family: str = "llama"
    families: dict[str, FamilyConfig] = field(default_factory=lambda: {"llama": FamilyConfig()})
    plan: PlanConfig = field(default_factory=PlanConfig)
    data: Optional[str] = None  # fit: a ladder directory or a CSV of runs
    out: Optional[str] = None  # fit: output directory (fit.json, plots); default <data>/fit or <csv stem>_fit
    exclude_highest_loss: int = 0  # fit: drop the k highest-loss runs (Besiroglu et al. drop 5)
    target_flops: Optional[float] = None  # compute-optimal answer for this budget; None: 10x the largest budget
    fit: FitConfig = field(default_factory=FitConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    python: Optional[str] = None  # run: interpreter for the trainer subprocesses; None = this one


def _fail(key: str, problem: str, fix: str) -> None:
    raise ConfigError(f"{key}: {problem}. Fix: {fix}")


def validate(cfg: ScalingConfig, command: str) -> None:
    if cfg.family not in cfg.families:
        _fail("family", f"unknown family {cfg.family!r}", f"use one of {sorted(cfg.families)} or define "
              f"+families.{cfg.family}.aspect_ratio=... in conf/scaling.yaml")
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
        if cfg.data is None or not (Path(cfg.data) / "plan.json").is_file():
            _fail("data", f"{cfg.data} is not a planned ladder (no plan.json)", "pass data=<ladder dir> planned "
                  "and trained with python -m tools.scaling plan/run")
    if command == "fit":
        if cfg.data is None:
            _fail("data", "no data given", "pass data=<ladder dir or csv>")
        if not Path(cfg.data).exists():
            _fail("data", f"{cfg.data} does not exist", "pass an existing ladder directory or CSV file")
    if command == "run" and not (Path(cfg.ladder) / "plan.json").is_file():
        _fail("ladder", f"{cfg.ladder}/plan.json not found", "plan the ladder first: "
              f"python -m tools.scaling plan ladder={cfg.ladder} budgets=[...]")


def load_config(command: str, overrides: list[str]) -> ScalingConfig:
    """conf/scaling.yaml over the ScalingConfig schema, then Hydra-syntax command-line overrides, validated.

    The overrides are parsed with Hydra's override grammar (lists, quoting, `+key=` to add a family) and applied
    to the structured config, so an unknown key or a wrong type fails here. Hydra's composition itself is not
    used: conf/ also holds the other tools' groups (conf/data/ ...), and `data=...` must stay a plain key.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = OmegaConf.structured(ScalingConfig)
        yaml_cfg = OmegaConf.load(CONF_DIR / "scaling.yaml")
        yaml_cfg.pop("defaults", None)
        cfg = OmegaConf.merge(cfg, yaml_cfg)
        for ov in OverridesParser.create().parse_overrides(list(overrides)):
            key = ov.key_or_group
            if ov.is_delete():
                raise ConfigError(f"{ov.input_line}: deleting keys is not supported. Fix: set the key instead")
            if not ov.is_add() and OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
                raise ConfigError(f"{key}: no such key in conf/scaling.yaml. Fix: check the spelling (keys: "
                                  f"{sorted(cfg.keys())}), or use +{ov.input_line} to add an entry")
            parts = key.split(".")
            if parts[0] == "families" and len(parts) > 2 and parts[1] not in cfg.families:
                cfg.families[parts[1]] = FamilyConfig()  # +families.NAME.key=... starts from the defaults
            OmegaConf.update(cfg, key, ov.value(), merge=True, force_add=ov.is_add())
        obj: Any = OmegaConf.to_object(cfg)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"{e}. Fix: check the key names and types against conf/scaling.yaml") from e
    validate(obj, command)
    return obj
