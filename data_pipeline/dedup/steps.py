"""The dedup stage's datatrove steps, one per pipeline (see stage.py for the order and the files).

signatures (N tasks)  documents -> nodes/<task>.npy (key, hashes, length, quality) and, per bucket,
                      band rows (band key, doc, 32-bit signature) and exact/URL key rows
pairs (B tasks)       bucket b: rows sorted by key; candidates of one key verified by signature agreement;
                      local connected components -> edges/<b>.npy (node -> smallest node of its local part)
clusters (1 task)     components over the per-bucket forests (numpy label propagation with pointer jumping);
                      keep policy; decisions/<write task>.npy (removed doc, kept doc, cluster, size, reason)
write (N tasks)       documents -> kept under documents/, removed (with cluster metadata) under removed/
"""

from __future__ import annotations

import glob
import json
import math
import os
import resource

import numpy as np
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.jsonl import JsonlWriter

from data_pipeline.dedup.minhash import MinHasher, MinHashParams, _fmix64, hash64, text_hash
from data_pipeline.dedup.positions import Positions
from data_pipeline.dedup.records import read_records, records_ok, write_records
from data_pipeline.filters.links import normalize_url

REASONS = ("exact", "url", "minhash")
KIND_SALT = {"exact": 0x51ED2701, "url": 0xA11CE5}
PART_DOCS = 20000  # documents per part file of a signatures task: bounds its memory
WINDOW = 64  # a member of a band group is verified against this many members before it


def node_dtype():
    return np.dtype([("doc", "u8"), ("exact", "u8"), ("url", "u8"), ("scope", "u8"), ("length", "i8"),
                     ("quality", "f8")])


def band_dtype(k: int):
    return np.dtype([("key", "u8"), ("doc", "u8"), ("sig", "u4", (k,))])


KEY_DTYPE = np.dtype([("key", "u8"), ("doc", "u8")])
EDGE_DTYPE = np.dtype([("a", "u8"), ("b", "u8")])
DECISION_DTYPE = np.dtype([("doc", "u8"), ("kept", "u8"), ("cluster", "u8"), ("size", "u4"), ("reason", "u1")])


def record_peak_rss(work: str, pipeline: str, rank: int) -> None:
    os.makedirs(f"{work}/rss", exist_ok=True)
    with open(f"{work}/rss/{pipeline}_{rank:05d}.json", "w") as f:
        json.dump({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, f)


def _mix(values: np.ndarray, salt: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _fmix64(values.astype(np.uint64) ^ np.uint64(salt))


def components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the graph with edges (a[i], b[i]): (nodes sorted, smallest node of each one's
    component). Min-label propagation with pointer jumping, vectorised; deterministic."""
    nodes = np.unique(np.concatenate([a, b]))
    ia, ib = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    label = np.arange(len(nodes), dtype=np.int64)
    while True:
        low = np.minimum(label[ia], label[ib])
        new = label.copy()
        np.minimum.at(new, ia, low)
        np.minimum.at(new, ib, low)
        while True:  # pointer jumping: every node points at its label's label
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, label):
            return nodes, nodes[label]
        label = new


class _WorkStep(PipelineStep):
    type = "🫂 - DEDUP"

    def __init__(self, work: str):
        super().__init__()
        self.work = work


class Signatures(_WorkStep):
    """Per document: stable key, exact/URL hashes, MinHash band rows; documents go no further."""

    name = "signatures"

    def __init__(self, work: str, positions: Positions, params: MinHashParams, buckets: int, exact: bool,
                 url: bool, minhash: bool, scope: str, scope_key: str, quality_key: str):
        super().__init__(work)
        self.positions, self.params, self.buckets = positions, params, buckets
        self.exact, self.url, self.minhash = exact, url, minhash
        self.scope, self.scope_key, self.quality_key = scope, scope_key, quality_key

    def outputs(self, rank: int) -> list[str]:
        return sorted(glob.glob(f"{self.work}/nodes/{rank:05d}.npy") + glob.glob(f"{self.work}/bands/*/{rank:05d}_*.npy")
                      + glob.glob(f"{self.work}/keys/*/{rank:05d}_*.npy"))

    def outputs_ok(self, rank: int) -> bool:
        listed = f"{self.work}/parts/{rank:05d}.json"
        if not os.path.exists(listed):
            return False
        with open(listed) as f:
            files = json.load(f)
        return all(records_ok(f"{self.work}/{name}") for name in files)

    def scope_of(self, doc, pos) -> int:
        if self.scope == "source":
            return int(pos[0]) + 1
        if self.scope == "snapshot":
            return hash64(str(doc.metadata.get(self.scope_key, "")).encode()) | 1
        return 0

    def run(self, data, rank: int = 0, world_size: int = 1):
        for path in self.outputs(rank):  # a task that is redone starts from nothing
            os.remove(path)
        hasher = MinHasher(self.params)
        k = self.params.permutations
        nodes, bands, keys, written = [], [], [], []
        part = 0

        def flush():
            nonlocal part, bands, keys
            for kind, rows, dtype in (("bands", bands, band_dtype(k)), ("keys", keys, KEY_DTYPE)):
                if not rows:
                    continue
                arr = np.concatenate(rows) if len(rows) > 1 else rows[0]
                bucket = (arr["key"] % np.uint64(self.buckets)).astype(np.int64)
                order = np.argsort(bucket, kind="stable")
                arr, bucket = arr[order], bucket[order]
                bounds = np.searchsorted(bucket, np.arange(self.buckets + 1))
                for b in range(self.buckets):
                    if bounds[b] < bounds[b + 1]:
                        name = f"{kind}/{b:05d}/{rank:05d}_{part:05d}.npy"
                        write_records(f"{self.work}/{name}", arr[bounds[b]:bounds[b + 1]])
                        written.append(name)
            bands, keys = [], []
            part += 1

        count = 0
        for doc in data or ():
            pos = doc.metadata.pop("dedup_pos")
            key = self.positions.key(pos)
            scope = self.scope_of(doc, pos)
            with self.track_time():
                exact = text_hash(doc.text) if self.exact else 0
                url = doc.metadata.get("url")
                url_h = hash64(normalize_url(url).encode()) if self.url and isinstance(url, str) and url else 0
                quality = doc.metadata.get(self.quality_key)
                quality = float(quality) if isinstance(quality, (int, float)) and math.isfinite(quality) else -math.inf
                nodes.append((key, exact, url_h, scope, len(doc.text), quality))
                for kind, h in (("exact", exact), ("url", url_h)):
                    if h:
                        row = np.zeros(1, KEY_DTYPE)
                        row["key"] = _mix(np.array([h ^ scope], dtype=np.uint64), KIND_SALT[kind])
                        row["doc"] = key
                        keys.append(row)
                if self.minhash:
                    shingles = hasher.shingle_hashes(doc.text)
                    if not len(shingles):
                        self.stat_update("dedup_no_words")
                    else:
                        if len(hasher.tokens(doc.text)) < self.params.ngram:
                            self.stat_update("dedup_shorter_than_ngram")
                        sig = hasher.signature_of_shingles(shingles)
                        rows = np.zeros(self.params.bands, band_dtype(k))
                        rows["key"] = hasher.band_keys(sig, scope)
                        rows["doc"] = key
                        rows["sig"] = (sig >> np.uint64(32)).astype(np.uint32)
                        bands.append(rows)
            self.stat_update("dedup_documents")
            count += 1
            if count % PART_DOCS == 0:
                flush()
        flush()
        arr = np.array(nodes, dtype=node_dtype())
        write_records(f"{self.work}/nodes/{rank:05d}.npy", arr)
        written.append(f"nodes/{rank:05d}.npy")
        os.makedirs(f"{self.work}/parts", exist_ok=True)
        with open(f"{self.work}/parts/{rank:05d}.json.tmp", "w") as f:
            json.dump(written, f)
        os.replace(f"{self.work}/parts/{rank:05d}.json.tmp", f"{self.work}/parts/{rank:05d}.json")
        record_peak_rss(self.work, self.name, rank)
        return
        yield


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each run of equal keys with two or more members, in a sorted array."""
    if not len(keys):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(keys)]])
    big = ends - starts >= 2
    return starts[big], ends[big]


class Pairs(_WorkStep):
    """Bucket ``rank``: verified candidate pairs (and exact/URL groups) -> local components -> forest edges."""

    name = "pairs"

    def __init__(self, work: str, threshold: float, permutations: int):
        super().__init__(work)
        self.threshold, self.k = threshold, permutations

    def outputs_ok(self, rank: int) -> bool:
        return records_ok(f"{self.work}/edges/{rank:05d}.npy")

    def _load(self, kind: str, rank: int, dtype) -> np.ndarray:
        files = sorted(glob.glob(f"{self.work}/{kind}/{rank:05d}/*.npy"))
        return np.concatenate([read_records(f) for f in files]) if files else np.empty(0, dtype)

    def run(self, data, rank: int = 0, world_size: int = 1):
        a_parts, b_parts = [], []
        with self.track_time():
            keys = self._load("keys", rank, KEY_DTYPE)
            keys = keys[np.lexsort((keys["doc"], keys["key"]))]
            starts, ends = _groups(keys["key"])
            for s, e in zip(starts, ends):  # same normalised text or URL: a star on the smallest doc
                a_parts.append(np.full(e - s - 1, keys["doc"][s], dtype=np.uint64))
                b_parts.append(keys["doc"][s + 1:e])
            self.stat_update("dedup_exact_or_url_pairs", value=int((ends - starts - 1).sum()))
            del keys
            bands = self._load("bands", rank, band_dtype(self.k))
            bands = bands[np.lexsort((bands["doc"], bands["key"]))]
            starts, ends = _groups(bands["key"])
            candidates = verified = 0
            need = math.ceil(self.threshold * self.k - 1e-9)
            for s, e in zip(starts, ends):
                docs, sigs = bands["doc"][s:e], bands["sig"][s:e]
                for i in range(1, e - s):
                    lo = max(0, i - WINDOW)
                    agree = (sigs[lo:i] == sigs[i]).sum(axis=1)
                    ok = agree >= need
                    candidates += i - lo
                    verified += int(ok.sum())
                    if ok.any():
                        a_parts.append(docs[lo:i][ok])
                        b_parts.append(np.full(int(ok.sum()), docs[i], dtype=np.uint64))
            del bands
            self.stat_update("dedup_candidate_pairs", value=candidates)
            self.stat_update("dedup_verified_pairs", value=verified)
            self.stat_update("dedup_rejected_pairs", value=candidates - verified)
            edges = np.empty(0, EDGE_DTYPE)
            if a_parts:
                nodes, label = components(np.concatenate(a_parts), np.concatenate(b_parts))
                moved = nodes != label
                edges = np.zeros(int(moved.sum()), EDGE_DTYPE)
                edges["a"], edges["b"] = label[moved], nodes[moved]
            write_records(f"{self.work}/edges/{rank:05d}.npy", edges)
        record_peak_rss(self.work, self.name, rank)
        return
        yield


class Clusters(_WorkStep):
    """Global components over the buckets' forests; the kept document of each; decisions per write task."""

    name = "clusters"

    def __init__(self, work: str, positions: Positions, keep: str, exact: bool, url: bool):
        super().__init__(work)
        self.positions, self.keep, self.exact, self.url = positions, keep, exact, url

    def outputs_ok(self, rank: int) -> bool:
        return all(records_ok(f"{self.work}/decisions/{t:05d}.npy") for t in range(-1, self.positions.tasks))

    def run(self, data, rank: int = 0, world_size: int = 1):
        with self.track_time():
            edges = [read_records(f) for f in sorted(glob.glob(f"{self.work}/edges/*.npy"))]
            edges = np.concatenate(edges) if edges else np.empty(0, EDGE_DTYPE)
            decisions = np.empty(0, DECISION_DTYPE)
            if len(edges):
                nodes, label = components(edges["a"], edges["b"])
                info = []
                for f in sorted(glob.glob(f"{self.work}/nodes/*.npy")):
                    arr = read_records(f)
                    info.append(arr[np.isin(arr["doc"], nodes)])
                info = np.concatenate(info)
                info = info[np.argsort(info["doc"])]
                if len(info) != len(nodes) or not np.array_equal(info["doc"], nodes):
                    raise RuntimeError("dedup: pair files name documents missing from the signature files; "
                                       "delete the output dir's work/ folder and rerun")
                quality = -info["quality"] if self.keep == "quality" else np.zeros(len(info))
                length = -info["length"] if self.keep in ("quality", "longest") else np.zeros(len(info), np.int64)
                order = np.lexsort((info["doc"], length, quality, label))
                label, info = label[order], info[order]
                first = np.concatenate([[True], label[1:] != label[:-1]])
                group = np.cumsum(first) - 1
                kept_idx = np.flatnonzero(first)[group]
                sizes = np.bincount(group)
                removed = ~first
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
                decisions["reason"] = reason
                self.stat_update("dedup_clusters", value=int(first.sum()))
                self.stat_update("dedup_documents_in_clusters", value=len(info))
                self.stat_update("dedup_largest_cluster", value=int(sizes.max()))
            self.stat_update("dedup_removed", value=len(decisions))
            decisions = decisions[np.argsort(decisions["doc"])]
            owners = self.positions.owners(decisions["doc"])
            for t in range(-1, self.positions.tasks):
                write_records(f"{self.work}/decisions/{t:05d}.npy", decisions[owners == t])
        record_peak_rss(self.work, self.name, rank)
        return
        yield


class DedupDecide(BaseFilter):
    """Drops the documents the clusters step removed (reason exact | url | minhash); every document gets
    ``metadata.dedup_id``; a removed one also ``metadata.dedup`` = {reason, cluster_id, cluster_size, kept_id}."""

    name = "🫂 dedup decisions"

    def __init__(self, work: str, positions: Positions, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.work, self.positions = work, positions
        self._decisions = None
        self._seen = 0

    def _load(self, rank: int):
        parts = [read_records(f"{self.work}/decisions/{t:05d}.npy") for t in (-1, rank)]
        d = np.concatenate(parts)
        self._decisions = d[np.argsort(d["doc"])]

    def filter(self, doc):
        key = self.positions.key(doc.metadata.pop("dedup_pos"))
        doc.metadata["dedup_id"] = self.positions.id_of(key)
        doc.metadata["dedup_shard"] = self.positions.shard_name(key, self._rank)
        self.stat_update("dedup_documents")
        d = self._decisions
        i = np.searchsorted(d["doc"], np.uint64(key))
        if i < len(d) and d["doc"][i] == key:
            self._seen += 1
            row = d[i]
            reason = REASONS[int(row["reason"])]
            doc.metadata["dedup"] = {"reason": reason, "cluster_id": self.positions.id_of(int(row["cluster"])),
                                     "cluster_size": int(row["size"]), "kept_id": self.positions.id_of(int(row["kept"]))}
            return False, reason
        return True

    def run(self, data, rank: int = 0, world_size: int = 1):
        self._rank = rank
        self._load(rank)
        yield from super().run(data, rank, world_size)
        own = int((self.positions.owners(self._decisions["doc"]) == rank).sum())
        if self._seen < own:  # a decision for a document this task should have read but did not
            self.stat_update("dedup_unmatched_decisions", value=own - self._seen)


class ShardedJsonlWriter(JsonlWriter):
    """A JSONL writer whose file is named by the document's input file (``metadata.dedup_shard``), so the
    output is the same files, byte for byte, for any task count."""

    def __init__(self, folder: str, compression: str | None):
        suffix = ".jsonl" + (".zst" if compression else "")
        super().__init__(folder, output_filename="${shard}" + suffix, compression=compression)

    def write(self, document, rank: int = 0, **kwargs):
        super().write(document, rank, shard=document.metadata.pop("dedup_shard"), **kwargs)
