"""The parallel layout of a run, built and validated once from the config and the world size.

    layout = Layout.from_config(cfg, world_size)     # raises ConfigError naming the key and the fix
    layout.tp, layout.pp, layout.vpp, layout.dp, layout.num_microbatches

The trainer hands it to megatron-core (initialize_model_parallel, TransformerConfig, the pipeline schedule),
checkpoints record it, and the Slurm dry run prints it (pretrain.topology), so the three never disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional


@dataclass(frozen=True)
class Layout:
    tp: int
    pp: int
    vpp: Optional[int]  # model chunks per pipeline rank (interleaved 1F1B); None: plain 1F1B
    dp: int
    micro_batch_size: int
    global_batch_size: int
    sequence_parallel: bool = False
    distributed_optimizer: bool = False

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def num_microbatches(self) -> int:
        """Micro-batches per step on each data-parallel rank."""
        return self.global_batch_size // (self.micro_batch_size * self.dp)

    @property
    def model_chunks(self) -> int:
        return self.vpp or 1

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"tp {self.tp} x pp {self.pp} x dp {self.dp}{f' (vpp {self.vpp})' if self.vpp else ''}, "
                f"{self.num_microbatches} micro-batches of {self.micro_batch_size}")

    @classmethod
    def from_config(cls, cfg, world_size: int) -> "Layout":
        """Check the parallel sizes against the model, the batch and the world size."""
        from pretrain.config import fail

        m, p, t = cfg.model, cfg.parallel, cfg.train
        for key, value in [("parallel.tp", p.tp), ("parallel.pp", p.pp),
                           ("train.global_batch_size", t.global_batch_size),
                           ("train.micro_batch_size", t.micro_batch_size)]:
            if value < 1:
                fail(key, f"must be >= 1, got {value}", f"set {key} to a positive integer")
        if m.num_attention_heads % p.tp:
            fail("parallel.tp", f"tp={p.tp} does not divide model.num_attention_heads={m.num_attention_heads}",
                 "use a tensor-parallel size that divides the number of attention heads")
        if m.num_query_groups % p.tp:
            fail("parallel.tp", f"tp={p.tp} does not divide model.num_query_groups={m.num_query_groups}",
                 "use a tensor-parallel size that divides the number of KV groups (or raise num_query_groups)")
        if m.ffn_hidden_size % p.tp:
            fail("parallel.tp", f"tp={p.tp} does not divide model.ffn_hidden_size={m.ffn_hidden_size}",
                 "use a tensor-parallel size that divides the MLP width")
        if world_size % (p.tp * p.pp):
            fail("parallel.tp", f"tp x pp = {p.tp} x {p.pp} = {p.tp * p.pp} does not divide the world size "
                 f"{world_size}", "launch a multiple of tp*pp processes, or change parallel.tp / parallel.pp")
        if p.vpp is not None:
            if p.vpp < 2:
                fail("parallel.vpp", f"must be >= 2 or null, got {p.vpp}", "set parallel.vpp=null or >= 2")
            if p.pp < 2:
                fail("parallel.vpp", "interleaved 1F1B needs pipeline parallelism", "set parallel.pp >= 2")
        chunks = p.pp * (p.vpp or 1)
        if m.num_layers % chunks:
            what = f"pp={p.pp}" if not p.vpp else f"pp x vpp = {p.pp} x {p.vpp}"
            fail("parallel.pp", f"{what} does not divide model.num_layers={m.num_layers}",
                 "use a pipeline size (times virtual stages) that divides the number of layers")
        if p.sequence_parallel and p.tp == 1:
            fail("parallel.sequence_parallel", "sequence parallelism needs tensor parallelism",
                 "set parallel.tp >= 2 or parallel.sequence_parallel=false")
        if p.sequence_parallel and m.seq_length % p.tp:
            fail("parallel.sequence_parallel", f"model.seq_length={m.seq_length} is not divisible by tp={p.tp}",
                 "choose a sequence length that is a multiple of tp")
        dp = world_size // (p.tp * p.pp)
        if t.global_batch_size % (t.micro_batch_size * dp):
            fail("train.global_batch_size", f"{t.global_batch_size} is not divisible by micro_batch_size x "
                 f"data-parallel size = {t.micro_batch_size} x {dp}",
                 f"use a multiple of {t.micro_batch_size * dp}, or change train.micro_batch_size")
        layout = cls(p.tp, p.pp, p.vpp, dp, t.micro_batch_size, t.global_batch_size, p.sequence_parallel,
                     p.distributed_optimizer)
        if p.vpp is not None and layout.num_microbatches % p.pp:
            fail("train.global_batch_size", f"interleaved 1F1B needs the number of micro-batches "
                 f"({layout.num_microbatches}) to be a multiple of pp={p.pp}",
                 "raise train.global_batch_size or lower train.micro_batch_size")
        return layout
