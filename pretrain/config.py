"""Typed configuration for the trainer, and its validation.

Hydra composes conf/pretrain/config.yaml over these dataclasses (registered in Hydra's ConfigStore as
`pretrain_schema`, so an unknown key, a wrong type or a value outside an enum fails at composition). `validate` then checks the relations between values -- parallel layout
against the model and the world size, batch sizes, data paths and splits -- and raises ConfigError naming the
key and the fix, before any process group or file is touched.
"""

from __future__ import annotations

import json

import math
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Optional

import conf
from conf import ConfigError, fail

CONF_DIR = str(conf.CONF_DIR / "pretrain")


class Attention(StrEnum):
    sdpa = "sdpa"  # torch scaled_dot_product_attention: flash / memory-efficient kernels, CPU and GPU
    local = "local"  # megatron's unfused DotProductAttention
    te = "te"  # Transformer Engine's layer spec (GPU, TE installed)


class Decay(StrEnum):
    cosine = "cosine"
    wsd = "wsd"
    linear = "linear"
    constant = "constant"


class Recompute(StrEnum):
    selective = "selective"  # the listed submodules
    full = "full"  # whole layers


class RecomputeMethod(StrEnum):
    uniform = "uniform"
    block = "block"


class CheckpointFormat(StrEnum):
    dcp = "dcp"  # torch.distributed.checkpoint: every rank writes its own shards, in parallel (pretrain.checkpoint)
    full = "full"  # whole tensors, gathered to one writer per pipeline stage


class WandbMode(StrEnum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


@dataclass
class ModelConfig:
    name: str = "tiny"
    num_layers: int = 4
    hidden_size: int = 128
    ffn_hidden_size: int = 352
    num_attention_heads: int = 4
    num_query_groups: int = 2  # grouped-query attention: KV heads
    seq_length: int = 128
    vocab_size: Optional[int] = None  # None: the tokenizer's vocabulary, padded to a multiple of 128
    init_std: float = 0.02
    rotary_base: int = 10000
    norm_eps: float = 1e-5
    untie_embeddings: bool = True
    # core attention: sdpa (torch scaled_dot_product_attention: flash / memory-efficient kernels, CPU and GPU),
    # local (megatron's unfused DotProductAttention), te (megatron's Transformer Engine layer spec; GPU + TE)
    attention: Attention = Attention.sdpa

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass
class RecomputeConfig:
    """Activation recomputation (megatron's TransformerConfig recompute_*): trade compute for memory."""
    granularity: Optional[Recompute] = None  # None | selective (the listed submodules) | full (whole layers)
    method: RecomputeMethod = RecomputeMethod.uniform  # full only: uniform (every layer, in groups of num_layers) | block (first num_layers)
    num_layers: int = 1  # full only: layers per recomputed group (uniform) / recomputed per stage chunk (block)
    modules: list[str] = field(default_factory=lambda: ["core_attn"])  # selective: core_attn, mlp, layernorm


@dataclass
class ParallelConfig:
    tp: int = 1
    pp: int = 1
    vpp: Optional[int] = None  # virtual pipeline stages per rank (interleaved 1F1B); None = plain 1F1B
    distributed_optimizer: bool = False  # ZeRO-1: optimizer state sharded over data-parallel ranks
    sequence_parallel: bool = False
    overlap_grad_reduce: bool = False  # DDP: reduce gradient buckets during the backward pass
    overlap_param_gather: bool = False  # distributed optimizer: all-gather updated params during the forward
    # megatron's DistributedDataParallel: "auto" skips it in one process (tp = pp = dp = 1) where it has nothing
    # to reduce, unless bf16 accumulates micro-batches (its fp32 buffer keeps that exact); "always" keeps it
    ddp: str = "auto"
    recompute: RecomputeConfig = field(default_factory=RecomputeConfig)


@dataclass
class TrainConfig:
    iters: int = 200
    tokens: Optional[float] = None  # alternative to iters: train this many tokens (rounded up to whole steps)
    global_batch_size: int = 16
    micro_batch_size: int = 4
    eval_interval: int = 50
    eval_iters: int = 4
    save_interval: int = 100
    log_interval: int = 1
    exit_interval: Optional[int] = None  # save and exit (code 98: requeue, run not finished) every this many steps
    bf16: Optional[bool] = None  # None: bf16 on GPU, fp32 on CPU
    # A step whose loss or grad norm is NaN/inf is skipped (the weights and Adam state stay as they were); this
    # many skipped steps in a row stop the run (exit 3) naming the last good checkpoint.
    max_nonfinite_in_a_row: int = 5
    inject_nonfinite_at: list[int] = field(default_factory=list)  # fault injection (tests): NaN loss at these steps
    # zero-shot tasks (pretrain.evaluate: cloze, choice), built from the run's own validation documents and run
    # through lm-evaluation-harness on every periodic checkpoint; results go to metrics.jsonl as eval/<task>/<metric>
    eval_tasks: list[str] = field(default_factory=list)
    # with several sources in data.paths: also the validation loss of each source on its own validation split
    # (eval_iters global batches each), logged as val_loss/<source name> next to val_loss (the blend)
    eval_per_source: bool = True


@dataclass
class OptimConfig:
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_iters: int = 10
    decay: Decay = Decay.cosine
    decay_iters: Optional[int] = None  # the schedule's horizon: lr reaches min_lr here; None: train iters
    wsd_decay_fraction: float = 0.2  # for decay=wsd: the final fraction of steps that decays
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    clip_grad: float = 1.0


@dataclass
class DataConfig:
    paths: list[Any] = field(default_factory=list)  # [prefix, ...] or [weight, prefix, weight, prefix, ...]
    # a validation blend of its own ([prefix, ...] or [weight, prefix, ...]); empty: data.split's share of data.paths
    valid_paths: list[Any] = field(default_factory=list)
    # Megatron's per-split data args JSON ({"train": [weight, prefix, ...], "valid": [...], "test": [...]}),
    # e.g. the blend.json of `python -m data_pipeline stage=tokenize`: replaces data.paths and data.valid_paths
    blend: Optional[str] = None
    split: str = "98,2,0"  # train, validation, test weights over documents
    # names of the sources in data.paths (in order), for the val_loss/<name> keys; None: each prefix's basename
    # without _text_document, numbered where two collide (source_names below)
    source_names: Optional[list[str]] = None
    tokenizer_model: Optional[str] = None
    cache_dir: Optional[str] = None  # megatron's dataset index cache; default <run.dir>/data_cache
    num_workers: int = 0


@dataclass
class WandbConfig:
    mode: WandbMode = WandbMode.offline
    project: str = "slurmtrain"
    entity: Optional[str] = None
    name: Optional[str] = None


@dataclass
class LoggingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    peak_tflops: Optional[float] = None  # per device, for MFU; None: a table lookup by device


@dataclass
class RunConfig:
    dir: str = "runs/default"
    seed: int = 1234
    resume: bool = True  # resume from <dir>/checkpoints/latest when present
    # Resuming refuses a config that would change the past (sequence length, batch, data, seed, tokenizer,
    # model shape, LR schedule); force_resume=true accepts it (the change applies from the resumed step on).
    force_resume: bool = False
    keep_last: Optional[int] = None  # keep only this many newest checkpoints (None: all)
    checkpoint_format: CheckpointFormat = CheckpointFormat.dcp  # how checkpoints are written (both are read)
    async_save: Optional[bool] = None  # write checkpoints in the background (dcp only); null: true for dcp
    pg_timeout_s: int = 600  # process-group timeout: a rank stuck longer than this fails the job


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ----------------------------------------------------------------------------------------------------------
# Derived quantities

VOCAB_PAD_MULTIPLE = 128  # fixed, so the padded vocabulary (and the initial weights) do not depend on TP


def padded_vocab_size(vocab_size: int) -> int:
    return int(math.ceil(vocab_size / VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE)


def train_iters(cfg: PretrainConfig) -> int:
    if cfg.train.tokens is not None:
        per_step = cfg.train.global_batch_size * cfg.model.seq_length
        return int(math.ceil(float(cfg.train.tokens) / per_step))
    return cfg.train.iters


# ----------------------------------------------------------------------------------------------------------
# Validation





def async_save(cfg: PretrainConfig) -> bool:
    """run.async_save, its null default resolved: asynchronous for the dcp format."""
    if cfg.run.async_save is None:
        return cfg.run.checkpoint_format == CheckpointFormat.dcp
    return bool(cfg.run.async_save)


def decay_iters(cfg: PretrainConfig) -> int:
    """The LR schedule's horizon: optim.decay_iters, else the run's training steps."""
    return cfg.optim.decay_iters if cfg.optim.decay_iters is not None else train_iters(cfg)


def validate(cfg: PretrainConfig, world_size: int, check_data: bool = True):
    """Check everything that can be checked before starting: raise ConfigError with the key and the fix.
    Returns the run's parallel Layout."""
    from pretrain.layout import Layout

    if check_data or os.path.exists(cfg.data.blend or ""):  # a blend is data: read it when data is checked
        apply_blend(cfg)
    m, p, t, o = cfg.model, cfg.parallel, cfg.train, cfg.optim
    for key, value in [("model.num_layers", m.num_layers), ("model.hidden_size", m.hidden_size),
                       ("model.num_attention_heads", m.num_attention_heads),
                       ("model.num_query_groups", m.num_query_groups), ("model.seq_length", m.seq_length),
                       ("model.ffn_hidden_size", m.ffn_hidden_size)]:
        if value < 1:
            fail(key, f"must be >= 1, got {value}", f"set {key} to a positive integer")
    if m.hidden_size % m.num_attention_heads:
        fail("model.hidden_size", f"{m.hidden_size} is not divisible by model.num_attention_heads="
              f"{m.num_attention_heads}", "choose a hidden size that is a multiple of the head count")
    if m.num_attention_heads % m.num_query_groups:
        fail("model.num_query_groups", f"{m.num_query_groups} does not divide model.num_attention_heads="
              f"{m.num_attention_heads}", "use a number of KV groups that divides the head count")
    if m.head_dim % 2:
        fail("model.hidden_size", f"head dimension {m.head_dim} (hidden_size / num_attention_heads) is odd",
              "RoPE rotates pairs of channels: choose a hidden size and head count with an even head dimension")
    for key, value in [("model.init_std", m.init_std), ("model.norm_eps", m.norm_eps),
                       ("model.rotary_base", m.rotary_base)]:
        if not value > 0:
            fail(key, f"must be > 0, got {value}", f"set {key} to a positive number")
    layout = Layout.from_config(cfg, world_size)
    if train_iters(cfg) < 1:
        fail("train.iters", f"must be >= 1, got {train_iters(cfg)}", "set train.iters or train.tokens")
    for key, value in [("train.eval_interval", t.eval_interval), ("train.save_interval", t.save_interval),
                       ("train.log_interval", t.log_interval)]:
        if value < 1:
            fail(key, f"must be >= 1, got {value}", f"set {key} to a positive number of steps")
    if t.exit_interval is not None and t.exit_interval < 1:
        fail("train.exit_interval", f"must be >= 1 or null, got {t.exit_interval}",
              "set train.exit_interval to a positive number of steps, or null")
    unknown = [x for x in t.eval_tasks if x not in ("cloze", "choice")]
    if unknown:
        fail("train.eval_tasks", f"unknown task(s) {unknown}", "use a subset of [cloze,choice], or []")
    if t.max_nonfinite_in_a_row < 1:
        fail("train.max_nonfinite_in_a_row", f"must be >= 1, got {t.max_nonfinite_in_a_row}",
              "set it to the number of NaN/inf steps in a row after which the run stops (default 5)")
    _validate_optim(cfg)
    if cfg.run.keep_last is not None and cfg.run.keep_last < 1:
        fail("run.keep_last", f"must be >= 1 or null, got {cfg.run.keep_last}",
              "keep at least one checkpoint, or set run.keep_last=null to keep all")
    if cfg.run.async_save and cfg.run.checkpoint_format == CheckpointFormat.full:
        fail("run.async_save", "asynchronous saving needs run.checkpoint_format=dcp (the full format gathers "
             "every tensor to one writer per pipeline stage and commits synchronously)",
             "set run.async_save=false, or run.checkpoint_format=dcp")
    if cfg.run.pg_timeout_s < 1:
        fail("run.pg_timeout_s", f"must be >= 1, got {cfg.run.pg_timeout_s}", "give a timeout in seconds")
    if cfg.logging.wandb.mode not in ("offline", "online", "disabled"):
        fail("logging.wandb.mode", f"unknown mode {cfg.logging.wandb.mode!r}",
              "use offline (default), online or disabled")
    _validate_performance(cfg)
    _validate_source_names(cfg)
    if check_data:
        _validate_data(cfg)
    return layout


def _validate_optim(cfg: PretrainConfig) -> None:
    """What megatron's OptimizerParamScheduler and AdamW would assert on, named by our keys."""
    o = cfg.optim
    if o.decay not in ("cosine", "wsd", "linear", "constant"):
        fail("optim.decay", f"unknown schedule {o.decay!r}", "use one of cosine, wsd, linear, constant")
    if not o.lr > 0:
        fail("optim.lr", f"must be > 0, got {o.lr}", "set a positive peak learning rate")
    if o.min_lr < 0:
        fail("optim.min_lr", f"must be >= 0, got {o.min_lr}", "set optim.min_lr >= 0")
    if o.min_lr > o.lr:
        fail("optim.min_lr", f"{o.min_lr} > optim.lr={o.lr}", "set optim.min_lr <= optim.lr")
    if o.decay_iters is not None and o.decay_iters < 1:
        fail("optim.decay_iters", f"must be >= 1 or null, got {o.decay_iters}",
              "set the step at which the LR reaches optim.min_lr, or null for the run's length")
    horizon = decay_iters(cfg)
    if o.warmup_iters < 0:
        fail("optim.warmup_iters", f"must be >= 0, got {o.warmup_iters}", "set optim.warmup_iters >= 0")
    if o.warmup_iters >= horizon:
        what = "optim.decay_iters" if o.decay_iters is not None else "training steps"
        fail("optim.warmup_iters", f"{o.warmup_iters} warmup steps >= {horizon} {what}: the warmup must end "
              "before the decay does", f"lower optim.warmup_iters below {horizon} (e.g. "
              f"{max(0, horizon // 10)}), or train longer")
    if o.decay == "wsd" and not 0 < o.wsd_decay_fraction <= 1:
        fail("optim.wsd_decay_fraction", f"must be in (0, 1], got {o.wsd_decay_fraction}",
              "give the final fraction of the schedule that decays, e.g. 0.2")
    if o.weight_decay < 0:
        fail("optim.weight_decay", f"must be >= 0, got {o.weight_decay}", "set optim.weight_decay >= 0")
    for key, value in [("optim.beta1", o.beta1), ("optim.beta2", o.beta2)]:
        if not 0 <= value < 1:
            fail(key, f"must be in [0, 1), got {value}", f"set {key} to e.g. 0.9 (beta1) or 0.95 (beta2)")
    if not o.eps > 0:
        fail("optim.eps", f"must be > 0, got {o.eps}", "set optim.eps to e.g. 1e-8")
    if o.clip_grad < 0:
        fail("optim.clip_grad", f"must be >= 0, got {o.clip_grad}", "set optim.clip_grad >= 0 (0 disables it)")


def wsd_decay_iters(cfg: PretrainConfig) -> int:
    return max(1, int(cfg.optim.wsd_decay_fraction * decay_iters(cfg)))


ATTENTION = tuple(Attention)
RECOMPUTE_MODULES = ("core_attn", "mlp", "layernorm")  # the ones that exist in a dense Llama layer
DDP_MODES = ("auto", "always")


def _validate_performance(cfg: PretrainConfig) -> None:
    """Attention backend, activation recomputation and communication overlap."""
    import importlib.util

    m, p, r = cfg.model, cfg.parallel, cfg.parallel.recompute
    if m.attention not in ATTENTION:
        fail("model.attention", f"unknown attention {m.attention!r}", "use one of " + ", ".join(ATTENTION)
              + " (sdpa: torch scaled_dot_product_attention, the default)")
    if m.attention == "te":
        import torch

        if importlib.util.find_spec("transformer_engine") is None:
            fail("model.attention", "te needs NVIDIA Transformer Engine, which is not installed",
                  "pip install --no-build-isolation transformer_engine[pytorch] (GPU machines), "
                  "or use model.attention=sdpa")
        if not torch.cuda.is_available():
            fail("model.attention", "te needs a CUDA device (Transformer Engine has no CPU kernels)",
                  "use model.attention=sdpa on CPU")
    if r.granularity is not None:
        key = "parallel.recompute.granularity"
        if r.granularity not in ("selective", "full"):
            fail(key, f"unknown granularity {r.granularity!r}", "use null (off), selective or full")
        if r.granularity == "full":
            per_chunk = m.num_layers // (p.pp * (p.vpp or 1))
            if r.method not in ("uniform", "block"):
                fail("parallel.recompute.method", f"unknown method {r.method!r}", "use uniform or block")
            if not 1 <= r.num_layers <= per_chunk:
                fail("parallel.recompute.num_layers", f"{r.num_layers} is not between 1 and the {per_chunk} "
                      "layers of a pipeline chunk", f"set parallel.recompute.num_layers in 1..{per_chunk}")
            if r.method == "uniform" and per_chunk % r.num_layers:
                fail("parallel.recompute.num_layers", f"uniform recompute groups of {r.num_layers} layers do "
                      f"not tile the {per_chunk} layers of a pipeline chunk",
                      f"use a divisor of {per_chunk}, or parallel.recompute.method=block")
        else:
            bad = [x for x in r.modules if x not in RECOMPUTE_MODULES]
            if bad or not r.modules:
                fail("parallel.recompute.modules", f"{list(r.modules)} is not a non-empty subset of "
                      f"{list(RECOMPUTE_MODULES)}", "list the submodules to recompute, e.g. [core_attn]")
            if "layernorm" in r.modules and importlib.util.find_spec("transformer_engine") is None:
                # megatron-core 0.16.1: CheckpointWithoutOutput() sets fp8 = (False is not None) = True and then
                # calls Transformer Engine's FP8GlobalStateManager, a NameError without TE
                fail("parallel.recompute.modules", "layernorm recompute needs Transformer Engine installed "
                      "(megatron-core 0.16.1 calls TE's FP8 state in its CheckpointWithoutOutput)",
                      "drop layernorm from the list (core_attn and mlp work everywhere)")
            if "layernorm" in r.modules and m.attention == "te":
                fail("parallel.recompute.modules", "Transformer Engine fuses the norms into the linears, "
                      "so there is no layernorm output to recompute", "drop layernorm from the list")
    if p.ddp not in DDP_MODES:
        fail("parallel.ddp", f"unknown mode {p.ddp!r}", f"use one of {list(DDP_MODES)}")
    if p.overlap_param_gather:
        if not p.distributed_optimizer:
            fail("parallel.overlap_param_gather", "the parameter all-gather exists only with the distributed "
                  "optimizer", "set parallel.distributed_optimizer=true, or parallel.overlap_param_gather=false")
        if not p.overlap_grad_reduce:
            fail("parallel.overlap_param_gather", "needs parallel.overlap_grad_reduce=true (as in Megatron-LM)",
                  "set parallel.overlap_grad_reduce=true")


def parse_blend(paths: list[Any]) -> tuple[list[str], Optional[list[float]]]:
    """[p1, p2] -> prefixes, None; [w1, p1, w2, p2] -> prefixes, weights."""
    items = [str(x) for x in paths]
    if not items:
        return [], None

    def is_number(s: str) -> bool:
        try:
            float(s)
            return True
        except ValueError:
            return False

    if is_number(items[0]):
        if len(items) % 2 or not all(is_number(w) for w in items[0::2]):
            fail("data.paths", f"weighted paths must alternate weight, prefix; got {items}",
                  "write data.paths=[0.7,/data/a_text_document,0.3,/data/b_text_document]")
        weights = [float(w) for w in items[0::2]]
        if any(w <= 0 for w in weights):
            fail("data.paths", f"weights must be positive, got {weights}", "drop a shard instead of weight 0")
        return items[1::2], weights
    return items, None


def source_names(cfg: PretrainConfig) -> list[str]:
    """The name of each source of data.paths, in order: data.source_names, else the prefix's basename without
    _text_document; names that collide get _1, _2, ... in data.paths order."""
    prefixes, _ = parse_blend(cfg.data.paths)
    if cfg.data.source_names is not None:
        return [str(x) for x in cfg.data.source_names]
    base = [Path(p).name.removesuffix("_text_document") or Path(p).name for p in prefixes]
    names: list[str] = []
    for b in base:
        if base.count(b) == 1:
            names.append(b)
            continue
        k = 1
        while f"{b}_{k}" in names or f"{b}_{k}" in base:
            k += 1
        names.append(f"{b}_{k}")
    return names


def _validate_source_names(cfg: PretrainConfig) -> None:
    names = cfg.data.source_names
    if names is None:
        return
    prefixes, _ = parse_blend(cfg.data.paths)
    names = [str(x) for x in names]
    if len(names) != len(prefixes):
        fail("data.source_names", f"{len(names)} names {names} for the {len(prefixes)} sources of data.paths",
             "give one name per source prefix, in data.paths order, or data.source_names=null for the "
             "prefixes' basenames")
    bad = [x for x in names if not x.strip() or "/" in x or x != x.strip()]
    if bad:
        fail("data.source_names", f"names must be non-empty, without '/' or surrounding spaces; got {bad}",
             "use short labels such as [web,wiki,code]")
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        fail("data.source_names", f"duplicate names {dup}: each becomes the key val_loss/<name>",
             "give every source its own name")


def parse_split(split: str) -> list[float]:
    try:
        parts = [float(x) for x in str(split).replace("/", ",").split(",")]
    except ValueError:
        parts = []
    while 0 < len(parts) < 3:
        parts.append(0.0)
    if len(parts) != 3 or any(x < 0 for x in parts) or sum(parts) <= 0:
        fail("data.split", f"cannot read {split!r}", 'write three non-negative weights, e.g. data.split="98,2,0"')
    return [x / sum(parts) for x in parts]


def apply_blend(cfg: PretrainConfig) -> None:
    """data.blend=PATH: data.paths and data.valid_paths from Megatron's per-split data args JSON."""
    d = cfg.data
    if not d.blend:
        return
    try:
        blend = json.loads(Path(d.blend).read_text())
        train, valid = list(blend["train"]), list(blend.get("valid") or [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail("data.blend", f"cannot read {d.blend}: {e}", "pass the blend.json a data_pipeline stage=tokenize run "
             'wrote, or a JSON file {"train": [weight, prefix, ...], "valid": [...], "test": []}')
    d.paths, d.valid_paths = train, valid  # the blend replaces them (a data preset's data.paths included)


def _check_shard_tokenizer(cfg: PretrainConfig, prefix: str) -> None:
    """A shard written by stage=tokenize records its tokenizer's sha256 (<prefix>.json): it must be ours."""
    meta_path = Path(f"{prefix}.json")
    if not cfg.data.tokenizer_model or not meta_path.exists():
        return
    try:
        want = json.loads(meta_path.read_text()).get("tokenizer_sha256")
    except ValueError:
        return
    if want and Path(cfg.data.tokenizer_model).is_file():
        from data_pipeline.samples import file_sha256

        have = file_sha256(Path(cfg.data.tokenizer_model))
        if have != want:
            fail("data.tokenizer_model", f"{cfg.data.tokenizer_model} (sha256 {have[:12]}) is not the tokenizer "
                 f"{prefix} was encoded with (sha256 {want[:12]}, {meta_path})",
                 "pass the tokenizer the shards were made with, or re-encode them with this one")


def _validate_data(cfg: PretrainConfig) -> None:
    prefixes, _ = parse_blend(cfg.data.paths)
    if not prefixes:
        fail("data.paths", "no token shards given",
              "run `make quickstart` to build the sample shards, or pass data.paths=[/path/to/name_text_document]")
    from data_pipeline.tokenizer.validate import IndexedDatasetError, validate_indexed_dataset

    docs_per_shard = {}
    valid_prefixes, _ = parse_blend(cfg.data.valid_paths)
    for prefix in prefixes + valid_prefixes:
        _check_shard_tokenizer(cfg, prefix)
        try:
            docs_per_shard[prefix] = validate_indexed_dataset(prefix).documents
            if docs_per_shard[prefix] == 0:
                raise IndexedDatasetError(f"token shard {prefix} is empty (no documents)")
        except IndexedDatasetError as e:
            fail("data.paths", str(e), "point data.paths at an existing prefix (without .bin/.idx), e.g. "
                  "data/quickstart/enwiki_text_document; rebuild truncated shards with "
                  "`python -m data_pipeline.tokenizer encode`")
    split = parse_split(cfg.data.split)
    if split[0] == 0:
        fail("data.split", f"{cfg.data.split!r} leaves no training data", 'give the first weight, e.g. "98,2,0"')
    if valid_prefixes:  # a validation blend of its own: data.split does not apply
        return
    # megatron splits by document: the validation split must get at least one document of every shard.
    if split[1] > 0 and cfg.train.eval_iters > 0:
        for prefix in prefixes:
            docs = docs_per_shard[prefix]
            if round(sum(split[:2]) * docs) - round(split[0] * docs) < 1:  # megatron's cumulative rounding
                fail("data.split", f"the validation split of {cfg.data.split!r} gets no document of {prefix} "
                      f"({docs} documents)", "raise the validation weight or add documents")
    if split[1] == 0 and cfg.train.eval_iters > 0:
        fail("data.split", f"{cfg.data.split!r} leaves the validation set empty but train.eval_iters="
              f"{cfg.train.eval_iters}", 'give a validation weight, e.g. "98,2,0", or set train.eval_iters=0')
    tok = cfg.data.tokenizer_model
    if tok is None or not Path(tok).is_file():
        fail("data.tokenizer_model", f"tokenizer model {tok!r} not found",
              "point data.tokenizer_model at the sentencepiece .model the shards were encoded with")
    if cfg.model.vocab_size is not None:
        vocab = tokenizer_vocab_size(tok)
        if vocab > cfg.model.vocab_size:
            fail("model.vocab_size", f"the tokenizer has {vocab} tokens, more than the embedding's "
                  f"{cfg.model.vocab_size}", "set model.vocab_size=null (use the tokenizer's) or >= " + str(vocab))
        if cfg.model.vocab_size % cfg.parallel.tp:
            fail("model.vocab_size", f"{cfg.model.vocab_size} is not divisible by tp={cfg.parallel.tp}",
                  "use a multiple of 128")


def tokenizer_vocab_size(path: str) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(path)).vocab_size()


def model_vocab_size(cfg: PretrainConfig) -> int:
    if cfg.model.vocab_size is not None:
        return cfg.model.vocab_size
    return padded_vocab_size(tokenizer_vocab_size(cfg.data.tokenizer_model))


# ----------------------------------------------------------------------------------------------------------
# Hydra


def load(overrides: list[str]) -> PretrainConfig:
    """Compose conf/pretrain/config.yaml with Hydra overrides into a PretrainConfig (no validation)."""
    register_configs()
    return to_dataclass(conf.compose("pretrain", overrides, PretrainConfig))


def register_configs() -> None:
    conf.register("pretrain_schema", PretrainConfig)


def to_dataclass(dcfg) -> PretrainConfig:
    return conf.to_object(dcfg, PretrainConfig, "pretrain")
