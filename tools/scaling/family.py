"""A model family: one Llama-style shape per depth, from the depth/width rule in FamilyConfig."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tools.scaling.config import FamilyConfig


@dataclass(frozen=True)
class ModelShape:
    """The fields of pretrain.config.ModelConfig that a ladder sets (pretrain/flops.py reads them)."""
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    seq_length: int

    def overrides(self) -> list[str]:
        return [f"model.{k}={getattr(self, k)}" for k in
                ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
                 "seq_length")]

    @property
    def name(self) -> str:
        return f"L{self.num_layers}_H{self.hidden_size}"


def shape_for_depth(fam: FamilyConfig, layers: int, heads: int | None = None) -> ModelShape:
    heads = heads or max(1, round(fam.aspect_ratio * layers / fam.head_dim))
    hidden = heads * fam.head_dim
    groups = max(1, heads // fam.heads_per_group)
    while heads % groups:  # the KV groups must divide the heads
        groups -= 1
    ffn = int(math.ceil(fam.ffn_ratio * hidden / fam.ffn_multiple) * fam.ffn_multiple)
    return ModelShape(layers, hidden, ffn, heads, groups, fam.seq_length)


def family_shapes(fam: FamilyConfig) -> list[ModelShape]:
    """Every distinct shape of the family, by depth then width (the planner orders them by parameters)."""
    shapes: dict[tuple[int, int], ModelShape] = {}
    for layers in range(fam.min_layers, fam.max_layers + 1):
        if fam.max_aspect_ratio is None:
            head_counts = [None]
        else:
            lo = max(1, round(fam.aspect_ratio * layers / fam.head_dim))
            head_counts = range(lo, max(lo, int(fam.max_aspect_ratio * layers // fam.head_dim)) + 1)
        for heads in head_counts:
            s = shape_for_depth(fam, layers, heads)
            shapes[(s.num_layers, s.hidden_size)] = s
    return list(shapes.values())
