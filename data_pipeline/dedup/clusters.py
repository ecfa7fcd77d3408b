"""Connected components of the duplicate graph across tasks, then the kept document of each component.

No task holds the whole graph. Edges live in partitioned files: an undirected edge (u, v) is stored twice, as
u -> v in partition part(u) and v -> u in partition part(v), so a task holds the whole neighbourhood of each of
its nodes and nothing else. The rounds alternate the large-star and small-star operations of Kiveris et al.,
"Connected Components in MapReduce and Beyond" (SoCC 2014); each is one pass over a task's edges, vectorised:

    large-star at u: m = min(u, neighbours); each neighbour v > u gets the edge (v, m)
    small-star at u: m = min(u, neighbours); u and each neighbour v < u get the edge (v, m)

Neither adds edges, and the graph they converge to is a forest of stars whose centre is the smallest node of its
component. A task checks that state on its own nodes before each round (no node has both a smaller and a larger
neighbour, none has two smaller ones): when every task of a round found it, that round's input is the answer and
the later rounds do nothing. The result does not depend on the task count.

    work/cc/r<NN>/<dst>/<src>.npy    directed edges into partition dst, written by task src of round NN-1
    work/cc/stable/r<NN>/<t>.json    task t's check of round NN's input: {stable, edges}
    work/members/<dst>/<src>.npy     each clustered document with its component label, partitioned by label
    work/decisions/<owner>/<t>.npy   removed documents (kept one, cluster, size, reason) for write task owner
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from data_pipeline.dedup.index import is_index
from data_pipeline.dedup.positions import Positions
from data_pipeline.dedup.records import read_records
from data_pipeline.dedup.work import (DECISION_DTYPE, EDGE_DTYPE, WorkStep, listed_outputs_ok, node_dtype,
                                      node_part, read_listing, record_peak_rss, remove_listed, write_listing,
                                      write_partitioned)

MEMBER_DTYPE = np.dtype([("label", "u8")] + node_dtype().descr)


def write_edges(work: str, round_: int, rank: int, a: np.ndarray, b: np.ndarray, parts: int) -> list[str]:
    """The undirected edges (a[i], b[i]) as directed edges into both endpoints' partitions for round ``round_``."""
    keep = a != b
    a, b = a[keep], b[keep]
    edges = np.zeros(2 * len(a), EDGE_DTYPE)
    edges["a"] = np.concatenate([a, b])
    edges["b"] = np.concatenate([b, a])
    return write_partitioned(work, f"cc/r{round_:02d}", f"{rank:05d}", edges, node_part(edges["a"], parts), parts)


def load_edges(work: str, round_: int, rank: int) -> np.ndarray:
    """Task ``rank``'s directed edges of round ``round_``, sorted by (source, target), without duplicates."""
    files = sorted(glob.glob(f"{work}/cc/r{round_:02d}/{rank:05d}/*.npy"))
    if not files:
        return np.empty(0, EDGE_DTYPE)
    edges = np.concatenate([read_records(f) for f in files])
    return np.unique(edges)  # structured unique sorts by (a, b)


def _groups(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For edges sorted by source: each edge's group index, and the start of each group."""
    first = np.concatenate([[True], u[1:] != u[:-1]]) if len(u) else np.empty(0, bool)
    return np.cumsum(first) - 1, np.flatnonzero(first)


def stable(edges: np.ndarray) -> bool:
    """A forest of stars centred on the smallest node, as seen from these nodes' neighbourhoods."""
    u, v = edges["a"], edges["b"]
    if not len(u):
        return True
    group, starts = _groups(u)
    smaller = np.bincount(group, weights=v < u).astype(np.int64)
    larger = np.bincount(group, weights=v > u).astype(np.int64)
    return bool(((smaller <= 1) & ((smaller == 0) | (larger == 0))).all())


def star_step(edges: np.ndarray, large: bool) -> tuple[np.ndarray, np.ndarray]:
    """One large-star or small-star pass over a task's neighbourhoods: the undirected edges it emits."""
    u, v = edges["a"], edges["b"]
    if not len(u):
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    group, starts = _groups(u)
    m = np.minimum(u[starts], np.minimum.reduceat(v, starts))[group]
    if large:
        sel = v > u
        return v[sel], m[sel]
    sel = v < u
    centres = u[starts]
    own = centres != m[starts]  # u itself joins its smallest neighbour
    return np.concatenate([v[sel], centres[own]]), np.concatenate([m[sel], m[starts][own]])


def converged_round(work: str, tasks: int, rounds: int) -> int | None:
    """The first round whose every task found the star forest, or None."""
    for r in range(rounds):
        marks = [read_listing(f"{work}/cc/stable/r{r:02d}/{t:05d}.json") for t in range(tasks)]
        if any(m is None for m in marks):
            return None
        if all(m["stable"] for m in marks):
            return r
    return None


class ComponentsRound(WorkStep):
    """Round ``round_`` (large-star when even, small-star when odd) over partition ``rank`` of the edges."""

    name = "clusters"

    def __init__(self, work: str, round_: int, tasks: int):
        super().__init__(work)
        self.round, self.tasks = round_, tasks

    def done_before(self) -> bool:
        """An earlier round already converged: this one has nothing to do."""
        return converged_round(self.work, self.tasks, self.round) is not None

    def outputs_ok(self, rank: int) -> bool:
        return listed_outputs_ok(self.work, f"cc/listing/r{self.round:02d}/{rank:05d}.json")

    def run(self, data, rank: int = 0, world_size: int = 1):
        listing = f"cc/listing/r{self.round:02d}/{rank:05d}.json"
        remove_listed(self.work, listing)
        written = []
        if not self.done_before():
            with self.track_time():
                edges = load_edges(self.work, self.round, rank)
                is_stable = stable(edges)  # checked here, acted on by the next round (all tasks must agree)
                self.stat_update("dedup_edges", value=len(edges))
                a, b = star_step(edges, large=self.round % 2 == 0)
                del edges
                written = write_edges(self.work, self.round + 1, rank, a, b, self.tasks)
            mark = f"{self.work}/cc/stable/r{self.round:02d}/{rank:05d}.json"
            os.makedirs(os.path.dirname(mark), exist_ok=True)
            with open(f"{mark}.tmp", "w") as f:
                json.dump({"stable": is_stable}, f)
            os.replace(f"{mark}.tmp", mark)
            self.stat_update("dedup_rounds_run")
        write_listing(f"{self.work}/{listing}", written)
        record_peak_rss(self.work, self.name, rank)
        return
        yield


class Members(WorkStep):
    """Partition ``rank`` of the converged star forest: each node's label (the smallest node of its
    component) joined with its signature-step row, sent to the label's partition."""

    name = "members"

    def __init__(self, work: str, tasks: int, rounds: int):
        super().__init__(work)
        self.tasks, self.rounds = tasks, rounds

    def outputs_ok(self, rank: int) -> bool:
        return listed_outputs_ok(self.work, f"members/listing/{rank:05d}.json")

    def run(self, data, rank: int = 0, world_size: int = 1):
        remove_listed(self.work, f"members/listing/{rank:05d}.json")
        with self.track_time():
            final = converged_round(self.work, self.tasks, self.rounds)
            if final is None:
                raise RuntimeError(
                    f"dedup: the connected components did not converge in dedup.max_rounds={self.rounds} rounds "
                    f"(a very long chain of near copies). Rerun the same command with dedup.max_rounds="
                    f"{2 * self.rounds}: the finished rounds are kept")
            edges = load_edges(self.work, final, rank)
            group, starts = _groups(edges["a"])
            nodes = edges["a"][starts]
            label = np.minimum(nodes, np.minimum.reduceat(edges["b"], starts)) if len(nodes) else nodes
            del edges, group
            found = []
            for f in sorted(glob.glob(f"{self.work}/nodes/{rank:05d}/*.npy")):
                arr = read_records(f)
                found.append(arr[np.isin(arr["doc"], nodes)])
            indexed = nodes[is_index(nodes)]  # documents of an index: no row here, and they always win (Keep)
            if len(indexed):
                rows = np.zeros(len(indexed), node_dtype())
                rows["doc"], rows["quality"] = indexed, np.inf
                found.append(rows)
            info = np.concatenate(found) if found else np.empty(0, node_dtype())
            info = info[np.argsort(info["doc"])]
            if len(info) != len(nodes) or not np.array_equal(info["doc"], nodes):
                raise RuntimeError("dedup: pair files name documents missing from the signature files; "
                                   "delete the output dir's work/ folder and rerun")
            rows = np.zeros(len(nodes), MEMBER_DTYPE)
            rows["label"] = label
            for field in node_dtype().names:
                rows[field] = info[field]
            written = write_partitioned(self.work, "members", f"{rank:05d}", rows, node_part(label, self.tasks), self.tasks)
        write_listing(f"{self.work}/members/listing/{rank:05d}.json", written)
        record_peak_rss(self.work, self.name, rank)
        return
        yield


class Keep(WorkStep):
    """Partition ``rank`` of the components: the kept document of each (policy ``keep``), and the decisions
    for the others, one file per write task that reads them."""

    name = "keep"

    def __init__(self, work: str, positions: Positions, keep: str, exact: bool, url: bool):
        super().__init__(work)
        self.positions, self.keep, self.exact, self.url = positions, keep, exact, url

    def outputs_ok(self, rank: int) -> bool:
        return listed_outputs_ok(self.work, f"decisions/listing/{rank:05d}.json")

    def run(self, data, rank: int = 0, world_size: int = 1):
        remove_listed(self.work, f"decisions/listing/{rank:05d}.json")
        with self.track_time():
            files = sorted(glob.glob(f"{self.work}/members/{rank:05d}/*.npy"))
            info = np.concatenate([read_records(f) for f in files]) if files else np.empty(0, MEMBER_DTYPE)
            decisions = np.empty(0, DECISION_DTYPE)
            largest = 0
            if len(info):
                quality = -info["quality"] if self.keep == "quality" else np.zeros(len(info))
                length = -info["length"] if self.keep in ("quality", "longest") else np.zeros(len(info), np.int64)
                outside = ~is_index(info["doc"])  # an index document (an earlier run's) is kept first
                info = info[np.lexsort((info["doc"], length, quality, outside, info["label"]))]
                label = info["label"]
                first = np.concatenate([[True], label[1:] != label[:-1]])
                group = np.cumsum(first) - 1
                kept_idx = np.flatnonzero(first)[group]
                sizes = np.bincount(group)
                largest = int(sizes.max())
                removed = ~first & ~is_index(info["doc"])
                decisions = np.zeros(int(removed.sum()), DECISION_DTYPE)
                decisions["doc"] = info["doc"][removed]
                kept = info[kept_idx[removed]]
                decisions["kept"] = kept["doc"]
                decisions["cluster"] = label[removed]
                decisions["size"] = sizes[group[removed]]
                me = info[removed]
                reason = np.full(len(me), 2, np.uint8)
                if self.url:
                    reason[(me["url"] != 0) & (me["url"] == kept["url"])] = 1
                if self.exact:
                    reason[(me["exact"] != 0) & (me["exact"] == kept["exact"])] = 0
                reason[is_index(kept["doc"])] = 3
                decisions["reason"] = reason
                self.stat_update("dedup_clusters", value=int(first.sum()))
                self.stat_update("dedup_documents_in_clusters", value=int((~is_index(info["doc"])).sum()))
                self.stat_update("dedup_index_documents_matched", value=int(is_index(info["doc"]).sum()))
            self.stat_update("dedup_removed", value=len(decisions))
            decisions = decisions[np.argsort(decisions["doc"])]
            owners = self.positions.owners(decisions["doc"]) + 1  # -1 (every task) -> folder 0
            written = write_partitioned(self.work, "decisions", f"{rank:05d}", decisions, owners, self.positions.tasks + 1)
            os.makedirs(f"{self.work}/keep", exist_ok=True)
            with open(f"{self.work}/keep/{rank:05d}.json", "w") as f:
                json.dump({"largest_cluster": largest}, f)
        write_listing(f"{self.work}/decisions/listing/{rank:05d}.json", written)
        record_peak_rss(self.work, self.name, rank)
        return
        yield


def load_decisions(work: str, rank: int) -> np.ndarray:
    """The decisions write task ``rank`` applies (its own and those every task looks up), sorted by doc."""
    files = sorted(glob.glob(f"{work}/decisions/00000/*.npy") + glob.glob(f"{work}/decisions/{rank + 1:05d}/*.npy"))
    d = np.concatenate([read_records(f) for f in files]) if files else np.empty(0, DECISION_DTYPE)
    return d[np.argsort(d["doc"])]


def largest_cluster(work: str) -> int:
    sizes = [read_listing(p) or {} for p in glob.glob(f"{work}/keep/*.json")]
    return max([s.get("largest_cluster", 0) for s in sizes], default=0)

