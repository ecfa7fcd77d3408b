"""Where each rank runs and which TP / PP / DP groups it joins: the `--dry-run` of slurm/pretrain.sbatch.

Ranks are laid out on nodes in blocks, as both launchers do (srun's block distribution, torchrun's
node_rank x nproc_per_node + local_rank). The groups follow megatron-core's default order (tp-cp-ep-dp-pp, as
`initialize_model_parallel` builds them; the tests compare with megatron's RankGenerator), so what is printed is
what the trainer builds.

    python -m pretrain.topology --nodes node[1-4] --tasks-per-node 8 model=1b parallel.tp=2 parallel.pp=2
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field

MEGATRON_ORDER = "tp-cp-ep-dp-pp"  # megatron.core.parallel_state.initialize_model_parallel's default


def expand_nodelist(nodelist: str) -> list[str]:
    """A Slurm hostlist as names: 'gpu[01-03,07],login1' -> ['gpu01', 'gpu02', 'gpu03', 'gpu07', 'login1']."""
    names: list[str] = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]*)\])?", nodelist.replace(" ", "")):
        prefix, ranges = m.group(1), m.group(2)
        if ranges is None:
            names.append(prefix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not hi:
                names.append(prefix + lo)
                continue
            width = len(lo)  # zero padding is kept: node[08-10] -> node08 node09 node10
            names.extend(f"{prefix}{i:0{width}d}" for i in range(int(lo), int(hi) + 1))
    return names


@dataclass(frozen=True)
class Topology:
    nodes: list[str]
    tasks_per_node: int
    tp: int
    pp: int
    groups: dict[str, list[list[int]]] = field(default_factory=dict)

    @property
    def world_size(self) -> int:
        return len(self.nodes) * self.tasks_per_node

    @property
    def dp(self) -> int:
        return self.world_size // (self.tp * self.pp)

    def node_of(self, rank: int) -> str:
        return self.nodes[rank // self.tasks_per_node]

    def coords(self, rank: int) -> dict[str, int]:
        """(tp, pp, dp) rank of a global rank: its index inside each of its groups."""
        out = {}
        for name, groups in self.groups.items():
            for g in groups:
                if rank in g:
                    out[name] = g.index(rank)
        return out

    def warnings(self) -> list[str]:
        out = []
        spread = [g for g in self.groups["tp"] if len({self.node_of(r) for r in g}) > 1]
        if spread:
            out.append(f"{len(spread)} tensor-parallel group(s) span nodes (e.g. ranks {spread[0]}): TP "
                       f"all-reduces every layer, keep it inside a node (tp <= tasks per node = "
                       f"{self.tasks_per_node})")
        return out

    def describe(self) -> str:
        lines = [f"world size {self.world_size} = {len(self.nodes)} node(s) x {self.tasks_per_node} task(s); "
                 f"TP={self.tp} PP={self.pp} DP={self.dp}"]
        for node_index, node in enumerate(self.nodes):
            ranks = range(node_index * self.tasks_per_node, (node_index + 1) * self.tasks_per_node)
            cells = []
            for r in ranks:
                c = self.coords(r)
                cells.append(f"rank {r} (tp {c['tp']}, pp {c['pp']}, dp {c['dp']})")
            lines.append(f"  {node}: " + "; ".join(cells))
        for name in ("tp", "pp", "dp"):
            lines.append(f"  {name.upper()} groups: " + " ".join(str(g) for g in self.groups[name]))
        lines += [f"  warning: {w}" for w in self.warnings()]
        return "\n".join(lines)


def rank_groups(tp: int, pp: int, dp: int) -> dict[str, list[list[int]]]:
    """TP, PP and DP groups in megatron's default order tp-cp-ep-dp-pp (cp = ep = 1): global rank =
    tp_rank + tp * (dp_rank + dp * pp_rank). Same groups, in the same order, as megatron-core's
    RankGenerator(...).get_ranks(name) (tests/pretrain/test_topology.py checks it), without importing megatron,
    so a dry run takes a second."""
    def rank(t: int, d: int, p: int) -> int:
        return t + tp * (d + dp * p)

    return {"tp": [[rank(t, d, p) for t in range(tp)] for p in range(pp) for d in range(dp)],
            "dp": [[rank(t, d, p) for d in range(dp)] for p in range(pp) for t in range(tp)],
            "pp": [[rank(t, d, p) for p in range(pp)] for d in range(dp) for t in range(tp)]}


def build_topology(nodes: list[str], tasks_per_node: int, tp: int, pp: int) -> Topology:
    world = len(nodes) * tasks_per_node
    if not nodes or tasks_per_node < 1:
        raise ValueError(f"need at least one node and one task per node, got {nodes!r} x {tasks_per_node}")
    if world % (tp * pp):
        raise ValueError(f"tp x pp = {tp} x {pp} does not divide the world size {world} "
                         f"({len(nodes)} nodes x {tasks_per_node} tasks). Fix: change parallel.tp/parallel.pp "
                         f"or the number of nodes / tasks per node")
    return Topology(nodes, tasks_per_node, tp, pp, rank_groups(tp, pp, world // (tp * pp)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pretrain.topology", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", required=True, help="Slurm hostlist, e.g. node[1-4] (SLURM_JOB_NODELIST)")
    p.add_argument("--tasks-per-node", type=int, required=True, help="ranks per node (GPUs per node)")
    p.add_argument("overrides", nargs="*", help="the trainer's Hydra overrides")
    args = p.parse_args(argv)
    from pretrain.config import ConfigError, validate

    nodes = expand_nodelist(args.nodes)
    try:
        cfg = load_config(args.overrides)
        layout = validate(cfg, len(nodes) * args.tasks_per_node)  # the Layout the trainer will build
        topo = build_topology(nodes, args.tasks_per_node, layout.tp, layout.pp)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(topo.describe())
    return 0


def load_config(overrides: list[str]):
    """The resolved trainer config for these overrides (conf/pretrain/config.yaml, as `python -m pretrain` sees it)."""
    from pretrain.config import load  # the trainer's own loader: one place composes the config

    return load(overrides)


if __name__ == "__main__":
    sys.exit(main())
