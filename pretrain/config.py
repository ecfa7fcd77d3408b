"""Typed configuration for the trainer, and its validation.

Hydra composes conf/pretrain.yaml into these dataclasses (registered as structured configs, so an unknown key
or a wrong type fails at composition). `validate` then checks the relations between values -- parallel layout
against the model and the world size, batch sizes, data paths and splits -- and raises ConfigError naming the
key and the fix, before any process group or file is touched.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


class ConfigError(ValueError):
    """A configuration value that cannot work. The message names the key and the fix."""


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
    attention: str = "sdpa"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass
class RecomputeConfig:
    """Activation recomputation (megatron's TransformerConfig recompute_*): trade compute for memory."""
    granularity: Optional[str] = None  # None | selective (the listed submodules) | full (whole layers)
    method: str = "uniform"  # full only: uniform (every layer, in groups of num_layers) | block (first num_layers)
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
    exit_interval: Optional[int] = None  # save and exit (code 0, run not finished) after this many steps
    bf16: Optional[bool] = None  # None: bf16 on GPU, fp32 on CPU


@dataclass
class OptimConfig:
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_iters: int = 10
    decay: str = "cosine"  # cosine | wsd | linear | constant
    wsd_decay_fraction: float = 0.2  # for decay=wsd: the final fraction of steps that decays
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    clip_grad: float = 1.0


@dataclass
class DataConfig:
    paths: list[Any] = field(default_factory=list)  # [prefix, ...] or [weight, prefix, weight, prefix, ...]
    split: str = "98,2,0"  # train, validation, test weights over documents
    tokenizer_model: Optional[str] = None
    cache_dir: Optional[str] = None  # megatron's dataset index cache; default <run.dir>/data_cache
    num_workers: int = 0


@dataclass
class WandbConfig:
    mode: str = "offline"  # offline | online | disabled
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


def data_parallel_size(cfg: PretrainConfig, world_size: int) -> int:
    return world_size // (cfg.parallel.tp * cfg.parallel.pp)


def train_iters(cfg: PretrainConfig) -> int:
    if cfg.train.tokens is not None:
        per_step = cfg.train.global_batch_size * cfg.model.seq_length
        return int(math.ceil(float(cfg.train.tokens) / per_step))
    return cfg.train.iters


# ----------------------------------------------------------------------------------------------------------
# Validation


def _fail(key: str, problem: str, fix: str) -> None:
    raise ConfigError(f"{key}: {problem}. Fix: {fix}")


def validate(cfg: PretrainConfig, world_size: int) -> None:
    """Check everything that can be checked before starting: raise ConfigError with the key and the fix."""
    m, p, t, o = cfg.model, cfg.parallel, cfg.train, cfg.optim
    for key, value in [("parallel.tp", p.tp), ("parallel.pp", p.pp), ("model.num_layers", m.num_layers),
                       ("model.hidden_size", m.hidden_size), ("model.num_attention_heads", m.num_attention_heads),
                       ("model.num_query_groups", m.num_query_groups), ("model.seq_length", m.seq_length),
                       ("train.global_batch_size", t.global_batch_size),
                       ("train.micro_batch_size", t.micro_batch_size)]:
        if value < 1:
            _fail(key, f"must be >= 1, got {value}", f"set {key} to a positive integer")
    if m.hidden_size % m.num_attention_heads:
        _fail("model.hidden_size", f"{m.hidden_size} is not divisible by model.num_attention_heads="
              f"{m.num_attention_heads}", "choose a hidden size that is a multiple of the head count")
    if m.num_attention_heads % m.num_query_groups:
        _fail("model.num_query_groups", f"{m.num_query_groups} does not divide model.num_attention_heads="
              f"{m.num_attention_heads}", "use a number of KV groups that divides the head count")
    if m.num_attention_heads % p.tp:
        _fail("parallel.tp", f"tp={p.tp} does not divide model.num_attention_heads={m.num_attention_heads}",
              "use a tensor-parallel size that divides the number of attention heads")
    if m.num_query_groups % p.tp:
        _fail("parallel.tp", f"tp={p.tp} does not divide model.num_query_groups={m.num_query_groups}",
              "use a tensor-parallel size that divides the number of KV groups (or raise num_query_groups)")
    if m.ffn_hidden_size % p.tp:
        _fail("parallel.tp", f"tp={p.tp} does not divide model.ffn_hidden_size={m.ffn_hidden_size}",
              "use a tensor-parallel size that divides the MLP width")
    if world_size % (p.tp * p.pp):
        _fail("parallel.tp", f"tp x pp = {p.tp} x {p.pp} = {p.tp * p.pp} does not divide the world size "
              f"{world_size}", "launch a multiple of tp*pp processes, or change parallel.tp / parallel.pp")
    chunks = p.pp * (p.vpp or 1)
    if m.num_layers % chunks:
        what = f"pp={p.pp}" if not p.vpp else f"pp x vpp = {p.pp} x {p.vpp}"
        _fail("parallel.pp", f"{what} does not divide model.num_layers={m.num_layers}",
              "use a pipeline size (times virtual stages) that divides the number of layers")
    if p.vpp is not None:
        if p.vpp < 2:
            _fail("parallel.vpp", f"must be >= 2 or null, got {p.vpp}", "set parallel.vpp=null or >= 2")
        if p.pp < 2:
            _fail("parallel.vpp", "interleaved 1F1B needs pipeline parallelism", "set parallel.pp >= 2")
    if p.sequence_parallel and p.tp == 1:
        _fail("parallel.sequence_parallel", "sequence parallelism needs tensor parallelism",
              "set parallel.tp >= 2 or parallel.sequence_parallel=false")
    if p.sequence_parallel and m.seq_length % p.tp:
        _fail("parallel.sequence_parallel", f"model.seq_length={m.seq_length} is not divisible by tp={p.tp}",
              "choose a sequence length that is a multiple of tp")
    dp = data_parallel_size(cfg, world_size)
    if t.global_batch_size % (t.micro_batch_size * dp):
        _fail("train.global_batch_size", f"{t.global_batch_size} is not divisible by micro_batch_size x "
              f"data-parallel size = {t.micro_batch_size} x {dp}",
              f"use a multiple of {t.micro_batch_size * dp}, or change train.micro_batch_size")
    n_micro = t.global_batch_size // (t.micro_batch_size * dp)
    if p.vpp is not None and n_micro % p.pp:
        _fail("train.global_batch_size", f"interleaved 1F1B needs the number of micro-batches ({n_micro}) to "
              f"be a multiple of pp={p.pp}", "raise train.global_batch_size or lower train.micro_batch_size")
    if train_iters(cfg) < 1:
        _fail("train.iters", f"must be >= 1, got {train_iters(cfg)}", "set train.iters or train.tokens")
    for key, value in [("train.eval_interval", t.eval_interval), ("train.save_interval", t.save_interval),
                       ("train.log_interval", t.log_interval)]:
        if value < 1:
            _fail(key, f"must be >= 1, got {value}", f"set {key} to a positive number of steps")
    if o.decay not in ("cosine", "wsd", "linear", "constant"):
        _fail("optim.decay", f"unknown schedule {o.decay!r}", "use one of cosine, wsd, linear, constant")
    if o.warmup_iters > train_iters(cfg):
        _fail("optim.warmup_iters", f"{o.warmup_iters} warmup steps > {train_iters(cfg)} training steps",
              "lower optim.warmup_iters or train longer")
    if o.min_lr > o.lr:
        _fail("optim.min_lr", f"{o.min_lr} > optim.lr={o.lr}", "set optim.min_lr <= optim.lr")
    if cfg.logging.wandb.mode not in ("offline", "online", "disabled"):
        _fail("logging.wandb.mode", f"unknown mode {cfg.logging.wandb.mode!r}",
              "use offline (default), online or disabled")
    _validate_performance(cfg)
    _validate_data(cfg)


ATTENTION = ("sdpa", "local", "te")
RECOMPUTE_MODULES = ("core_attn", "mlp", "layernorm")  # the ones that exist in a dense Llama layer


def _validate_performance(cfg: PretrainConfig) -> None:
    """Attention backend, activation recomputation and communication overlap."""
    import importlib.util

    m, p, r = cfg.model, cfg.parallel, cfg.parallel.recompute
    if m.attention not in ATTENTION:
        _fail("model.attention", f"unknown attention {m.attention!r}", "use one of " + ", ".join(ATTENTION)
              + " (sdpa: torch scaled_dot_product_attention, the default)")
    if m.attention == "te":
        import torch

        if importlib.util.find_spec("transformer_engine") is None:
            _fail("model.attention", "te needs NVIDIA Transformer Engine, which is not installed",
                  "pip install --no-build-isolation transformer_engine[pytorch] (GPU machines), "
                  "or use model.attention=sdpa")
        if not torch.cuda.is_available():
            _fail("model.attention", "te needs a CUDA device (Transformer Engine has no CPU kernels)",
                  "use model.attention=sdpa on CPU")
    if r.granularity is not None:
        key = "parallel.recompute.granularity"
        if r.granularity not in ("selective", "full"):
            _fail(key, f"unknown granularity {r.granularity!r}", "use null (off), selective or full")
        if r.granularity == "full":
            per_chunk = m.num_layers // (p.pp * (p.vpp or 1))
            if r.method not in ("uniform", "block"):
                _fail("parallel.recompute.method", f"unknown method {r.method!r}", "use uniform or block")
            if not 1 <= r.num_layers <= per_chunk:
                _fail("parallel.recompute.num_layers", f"{r.num_layers} is not between 1 and the {per_chunk} "
                      "layers of a pipeline chunk", f"set parallel.recompute.num_layers in 1..{per_chunk}")
            if r.method == "uniform" and per_chunk % r.num_layers:
                _fail("parallel.recompute.num_layers", f"uniform recompute groups of {r.num_layers} layers do "
                      f"not tile the {per_chunk} layers of a pipeline chunk",
                      f"use a divisor of {per_chunk}, or parallel.recompute.method=block")
        else:
            bad = [x for x in r.modules if x not in RECOMPUTE_MODULES]
            if bad or not r.modules:
                _fail("parallel.recompute.modules", f"{list(r.modules)} is not a non-empty subset of "
                      f"{list(RECOMPUTE_MODULES)}", "list the submodules to recompute, e.g. [core_attn]")
            if "layernorm" in r.modules and importlib.util.find_spec("transformer_engine") is None:
                # megatron-core 0.16.1: CheckpointWithoutOutput() sets fp8 = (False is not None) = True and then
                # calls Transformer Engine's FP8GlobalStateManager, a NameError without TE
                _fail("parallel.recompute.modules", "layernorm recompute needs Transformer Engine installed "
                      "(megatron-core 0.16.1 calls TE's FP8 state in its CheckpointWithoutOutput)",
                      "drop layernorm from the list (core_attn and mlp work everywhere)")
            if "layernorm" in r.modules and m.attention == "te":
                _fail("parallel.recompute.modules", "Transformer Engine fuses the norms into the linears, "
                      "so there is no layernorm output to recompute", "drop layernorm from the list")
    if p.overlap_param_gather:
        if not p.distributed_optimizer:
            _fail("parallel.overlap_param_gather", "the parameter all-gather exists only with the distributed "
                  "optimizer", "set parallel.distributed_optimizer=true, or parallel.overlap_param_gather=false")
        if not p.overlap_grad_reduce:
            _fail("parallel.overlap_param_gather", "needs parallel.overlap_grad_reduce=true (as in Megatron-LM)",
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
            _fail("data.paths", f"weighted paths must alternate weight, prefix; got {items}",
                  "write data.paths=[0.7,/data/a_text_document,0.3,/data/b_text_document]")
        weights = [float(w) for w in items[0::2]]
        if any(w <= 0 for w in weights):
            _fail("data.paths", f"weights must be positive, got {weights}", "drop a shard instead of weight 0")
        return items[1::2], weights
    return items, None


def parse_split(split: str) -> list[float]:
    try:
        parts = [float(x) for x in str(split).replace("/", ",").split(",")]
    except ValueError:
        parts = []
    while 0 < len(parts) < 3:
        parts.append(0.0)
    if len(parts) != 3 or any(x < 0 for x in parts) or sum(parts) <= 0:
        _fail("data.split", f"cannot read {split!r}", 'write three non-negative weights, e.g. data.split="98,2,0"')
    return [x / sum(parts) for x in parts]


def _validate_data(cfg: PretrainConfig) -> None:
    prefixes, _ = parse_blend(cfg.data.paths)
    if not prefixes:
        _fail("data.paths", "no token shards given",
              "run `make quickstart` to build the sample shards, or pass data.paths=[/path/to/name_text_document]")
    from data_pipeline.tokenizer.validate import IndexedDatasetError, validate_indexed_dataset

    docs_per_shard = {}
    for prefix in prefixes:
        try:
            docs_per_shard[prefix] = validate_indexed_dataset(prefix).documents
            if docs_per_shard[prefix] == 0:
                raise IndexedDatasetError(f"token shard {prefix} is empty (no documents)")
        except IndexedDatasetError as e:
            _fail("data.paths", str(e), "point data.paths at an existing prefix (without .bin/.idx), e.g. "
                  "data/quickstart/enwiki_text_document; rebuild truncated shards with "
                  "`python -m data_pipeline.tokenizer encode`")
    split = parse_split(cfg.data.split)
    if split[0] == 0:
        _fail("data.split", f"{cfg.data.split!r} leaves no training data", 'give the first weight, e.g. "98,2,0"')
    # megatron splits by document: the validation split must get at least one document of every shard.
    if split[1] > 0 and cfg.train.eval_iters > 0:
        for prefix in prefixes:
            docs = docs_per_shard[prefix]
            if round(sum(split[:2]) * docs) - round(split[0] * docs) < 1:  # megatron's cumulative rounding
                _fail("data.split", f"the validation split of {cfg.data.split!r} gets no document of {prefix} "
                      f"({docs} documents)", "raise the validation weight or add documents")
    if split[1] == 0 and cfg.train.eval_iters > 0:
        _fail("data.split", f"{cfg.data.split!r} leaves the validation set empty but train.eval_iters="
              f"{cfg.train.eval_iters}", 'give a validation weight, e.g. "98,2,0", or set train.eval_iters=0')
    tok = cfg.data.tokenizer_model
    if tok is None or not Path(tok).is_file():
        _fail("data.tokenizer_model", f"tokenizer model {tok!r} not found",
              "point data.tokenizer_model at the sentencepiece .model the shards were encoded with")
    if cfg.model.vocab_size is not None:
        vocab = tokenizer_vocab_size(tok)
        if vocab > cfg.model.vocab_size:
            _fail("model.vocab_size", f"the tokenizer has {vocab} tokens, more than the embedding's "
                  f"{cfg.model.vocab_size}", "set model.vocab_size=null (use the tokenizer's) or >= " + str(vocab))
        if cfg.model.vocab_size % cfg.parallel.tp:
            _fail("model.vocab_size", f"{cfg.model.vocab_size} is not divisible by tp={cfg.parallel.tp}",
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
    """Compose conf/pretrain.yaml with Hydra overrides into a PretrainConfig (no validation)."""
    from hydra import compose, initialize_config_dir

    register_configs()
    conf_dir = str(CONF_DIR)
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        return to_dataclass(compose(config_name="pretrain", overrides=list(overrides)))


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="pretrain_schema", node=PretrainConfig)


def to_dataclass(dcfg) -> PretrainConfig:
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(PretrainConfig)
    merged = OmegaConf.merge(schema, OmegaConf.masked_copy(dcfg, [k for k in dcfg if k in schema]))
    return OmegaConf.to_object(merged)
