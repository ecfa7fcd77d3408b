"""The dedup stage's datatrove steps (see stage.py for the order of the pipelines and clusters.py for the
distributed clustering between pairs and write).

signatures (N tasks)  documents -> per clustering partition, node rows (key, hashes, length, quality) and,
                      per bucket, band rows (band key, doc, 32-bit signature) and exact/URL key rows
pairs (B tasks)       bucket b: rows sorted by key; candidates of one key verified by signature agreement;
                      local connected components -> the edges (node, smallest node of its local part) of round 0
write (N tasks)       documents -> kept under documents/, removed (with cluster metadata) under removed/
"""

from __future__ import annotations

import glob
import math

import numpy as np
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.jsonl import JsonlWriter

from data_pipeline.dedup.clusters import load_decisions, write_edges
from data_pipeline.dedup.index import is_index, load_index_rows
from data_pipeline.dedup.minhash import MinHasher, MinHashParams, hash64, text_hash
from data_pipeline.dedup.positions import Positions
from data_pipeline.dedup.records import read_records
from data_pipeline.dedup.work import (WorkStep, listed_outputs_ok, mix, node_dtype, node_part,
                                      record_peak_rss, remove_listed, write_listing, write_partitioned)
from data_pipeline.filters.links import normalize_url

REASONS = ("exact", "url", "minhash", "duplicate_of_index")
KIND_SALT = {"exact": 0x51ED2701, "url": 0xA11CE5}
PART_DOCS = 20000  # documents per part file of a signatures task: bounds its memory
WINDOW = 64  # a member of a band group is verified against this many members before it


def band_dtype(k: int):
    return np.dtype([("key", "u8"), ("doc", "u8"), ("sig", "u4", (k,))])


KEY_DTYPE = np.dtype([("key", "u8"), ("doc", "u8")])


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


class Signatures(WorkStep):
    """Per document: stable key, exact/URL hashes, MinHash band rows; documents go no further."""

    name = "signatures"

    def __init__(self, work: str, positions: Positions, params: MinHashParams, buckets: int, exact: bool,
                 url: bool, minhash: bool, scope: str, scope_key: str, quality_key: str):
        super().__init__(work)
        self.positions, self.params, self.buckets = positions, params, buckets
        self.exact, self.url, self.minhash = exact, url, minhash
        self.scope, self.scope_key, self.quality_key = scope, scope_key, quality_key

    def outputs_ok(self, rank: int) -> bool:
        return listed_outputs_ok(self.work, f"parts/{rank:05d}.json")

    def scope_of(self, doc, pos) -> int:
        if self.scope == "source":
            return int(pos[0]) + 1
        if self.scope == "snapshot":
            return hash64(str(doc.metadata.get(self.scope_key, "")).encode()) | 1
        return 0

    def run(self, data, rank: int = 0, world_size: int = 1):
        remove_listed(self.work, f"parts/{rank:05d}.json")
        hasher = MinHasher(self.params)
        k = self.params.permutations
        nodes, bands, keys, written = [], [], [], []
        part = 0

        def flush():
            nonlocal part, nodes, bands, keys
            name = f"{rank:05d}_{part:05d}"
            for kind, rows in (("bands", bands), ("keys", keys)):
                if rows:
                    arr = np.concatenate(rows) if len(rows) > 1 else rows[0]
                    bucket = (arr["key"] % np.uint64(self.buckets)).astype(np.int64)
                    written.extend(write_partitioned(self.work, kind, name, arr, bucket, self.buckets))
            if nodes:
                arr = np.array(nodes, dtype=node_dtype())
                written.extend(write_partitioned(self.work, "nodes", name, arr, node_part(arr["doc"], self.buckets),
                                                 self.buckets))
            nodes, bands, keys = [], [], []
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
                        row["key"] = mix(np.array([h ^ scope], dtype=np.uint64), KIND_SALT[kind])
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
        write_listing(f"{self.work}/parts/{rank:05d}.json", written)
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


class Pairs(WorkStep):
    """Bucket ``rank``: verified candidate pairs (and exact/URL groups) -> local components -> star edges
    partitioned for the clustering rounds (``parts`` partitions)."""

    name = "pairs"

    def __init__(self, work: str, threshold: float, permutations: int, parts: int, indexes: list | None = None):
        super().__init__(work)
        self.threshold, self.k, self.parts = threshold, permutations, parts
        self.indexes = indexes or []  # dedup.index.read (index.py); its rows join this bucket's

    def outputs_ok(self, rank: int) -> bool:
        return listed_outputs_ok(self.work, f"cc/listing/pairs/{rank:05d}.json")

    def _load(self, kind: str, rank: int, dtype) -> np.ndarray:
        files = sorted(glob.glob(f"{self.work}/{kind}/{rank:05d}/*.npy"))
        rows = [read_records(f) for f in files]
        if self.indexes:
            rows.append(load_index_rows(self.indexes, kind, rank, self.parts, dtype))
        return np.concatenate(rows) if rows else np.empty(0, dtype)

    def run(self, data, rank: int = 0, world_size: int = 1):
        listing = f"cc/listing/pairs/{rank:05d}.json"
        remove_listed(self.work, listing)
        a_parts, b_parts = [], []
        with self.track_time():
            keys = self._load("keys", rank, KEY_DTYPE)
            keys = keys[np.lexsort((keys["doc"], keys["key"]))]
            starts, ends = _groups(keys["key"])
            if self.indexes:  # a group of index documents only: no document of this run to decide
                live = ~is_index(keys["doc"][starts])
                starts, ends = starts[live], ends[live]
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
                    if self.indexes and is_index(docs[i:i + 1])[0]:
                        ok &= ~is_index(docs[lo:i])  # two index documents: not this run's business
                    candidates += i - lo
                    verified += int(ok.sum())
                    if ok.any():
                        a_parts.append(docs[lo:i][ok])
                        b_parts.append(np.full(int(ok.sum()), docs[i], dtype=np.uint64))
            del bands
            self.stat_update("dedup_candidate_pairs", value=candidates)
            self.stat_update("dedup_verified_pairs", value=verified)
            self.stat_update("dedup_rejected_pairs", value=candidates - verified)
            written = []
            if a_parts:  # a star per local component: fewer edges for the rounds than the verified pairs
                nodes, label = components(np.concatenate(a_parts), np.concatenate(b_parts))
                written = write_edges(self.work, 0, rank, label, nodes, self.parts)
        write_listing(f"{self.work}/{listing}", written)
        record_peak_rss(self.work, self.name, rank)
        return
        yield


class DedupDecide(BaseFilter):
    """Drops the documents the keep step removed (reason exact | url | minhash | duplicate_of_index); every document gets
    ``metadata.dedup_id``; a removed one also ``metadata.dedup`` = {reason, cluster_id, cluster_size, kept_id}."""

    name = "🫂 dedup decisions"

    def __init__(self, work: str, positions: Positions, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.work, self.positions = work, positions
        self._decisions = None
        self._seen = 0

    def _load(self, rank: int):
        self._decisions = load_decisions(self.work, rank)

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
