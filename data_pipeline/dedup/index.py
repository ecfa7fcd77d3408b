"""A persistent band index: dedup a new dump against the documents of earlier runs without reading them again.

``dedup.index.write=DIR`` keeps the band rows and exact/URL key rows of every document the run read (as
datatrove's MinhashBuildIndex does: to index exactly what you publish, run the dedup stage over the kept
output with ``index.write``), partitioned by band key like the run's buckets, with ``index.json``:

    DIR/index.json                 name, MinHash settings, buckets, the run's input listing (for document ids)
    DIR/{bands,keys}/<bucket>/*.npy  rows as the signatures pipeline wrote them (hard links when possible)
    DIR/parts/<bucket>.json        the files of each bucket (an index with a bucket missing is refused)

``dedup.index.read=[DIR, ...]`` (at most 8): each pairs task also reads the index rows of its bucket, with the
index documents' keys moved into their own key space (top bit set, index number in the next 3 bits), so they
join the duplicate graph like any document. An index document is never removed (it is not part of this run)
and always wins its cluster: a document of the run that lands in a cluster with one is removed with reason
``duplicate_of_index`` and ``kept_id = <index name>:<id in that run>``.
"""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np

from data_pipeline.config import ConfigError
from data_pipeline.dedup.records import read_records
from data_pipeline.dedup.work import WorkStep, read_listing, write_listing

INDEX_FLAG = 1 << 63
INDEX_SHIFT = 60
MAX_INDEXES = 8
ORDINAL_LIMIT = 1 << (INDEX_SHIFT - 40)  # input files an indexed run may have (keys are ordinal << 40 | record)
SETTINGS = ("ngram", "bands", "rows", "seed", "exact", "url", "minhash")


def is_index(keys: np.ndarray) -> np.ndarray:
    return (keys >> np.uint64(63)).astype(bool)


def index_key(keys: np.ndarray, number: int) -> np.ndarray:
    return keys | np.uint64(INDEX_FLAG | number << INDEX_SHIFT)


def split_index_key(key: int) -> tuple[int, int]:
    """(index number, the document's key in its own run)."""
    return (key >> INDEX_SHIFT) & (MAX_INDEXES - 1), key & ((1 << INDEX_SHIFT) - 1)


def settings_of(dedup) -> dict:
    return {k: getattr(dedup, k) for k in SETTINGS}


def open_indexes(paths: list[str], dedup, buckets: int) -> list[dict]:
    """Each index's index.json, checked against this run: same MinHash settings, compatible buckets, complete."""
    if len(paths) > MAX_INDEXES:
        raise ConfigError(f"dedup.index.read: {len(paths)} indexes, at most {MAX_INDEXES}. Fix: merge earlier "
                          f"dumps into one index (run the dedup stage over them with dedup.index.write)")
    if paths and dedup.scope != "global":
        raise ConfigError(f"dedup.index.read: needs dedup.scope=global (an index is the documents of other runs; "
                          f"dedup.scope={dedup.scope} keys bands by this run's sources). Fix: dedup.scope=global")
    out = []
    for path in paths:
        meta = read_listing(f"{path}/index.json")
        if meta is None:
            raise ConfigError(f"dedup.index.read: {path}/index.json is missing or unreadable. Fix: name a folder "
                              f"written by a dedup stage run with dedup.index.write=...")
        changed = {k: (meta["settings"].get(k), v) for k, v in settings_of(dedup).items() if meta["settings"].get(k) != v}
        if changed:
            raise ConfigError(f"dedup.index.read: {path} was built with other settings: "
                              + ", ".join(f"dedup.{k}={a} there, {b} here" for k, (a, b) in changed.items())
                              + ". Fix: use the index's settings (the band keys depend on them)")
        p = meta["buckets"]
        if p % buckets and buckets % p:
            raise ConfigError(f"dedup.index.read: {path} has {p} buckets and this run {buckets}; one must divide "
                              f"the other. Fix: dedup.buckets={p}")
        missing = [b for b in range(p) if read_listing(f"{path}/parts/{b:05d}.json") is None]
        if missing:
            raise ConfigError(f"dedup.index.read: {path} is incomplete (bucket {missing[0]} of {p} missing): the run "
                              f"that writes it has not finished. Fix: finish that run (rerun its command)")
        out.append(dict(meta, path=path))
    return out


def load_index_rows(indexes: list[dict], kind: str, bucket: int, buckets: int, dtype) -> np.ndarray:
    """The rows of bucket ``bucket`` (of ``buckets``) from every index, with index keys."""
    parts = []
    for number, meta in enumerate(indexes):
        p = meta["buckets"]
        sources = range(bucket, p, buckets) if p % buckets == 0 else [bucket % p]
        for src in sources:
            for name in read_listing(f"{meta['path']}/parts/{src:05d}.json") or []:
                if not name.startswith(kind + "/"):
                    continue
                rows = read_records(f"{meta['path']}/{name}")
                if p < buckets:
                    rows = rows[(rows["key"] % np.uint64(buckets)).astype(np.int64) == bucket]
                rows = rows.copy()
                rows["doc"] = index_key(rows["doc"], number)
                parts.append(rows)
    return np.concatenate(parts) if parts else np.empty(0, dtype)


class IndexWriter(WorkStep):
    """Bucket ``rank``: the signatures pipeline's band and key rows of this bucket into the index folder."""

    name = "index"

    def __init__(self, work: str, folder: str, meta: dict):
        super().__init__(work)
        self.folder, self.meta = os.path.abspath(folder), meta

    def outputs_ok(self, rank: int) -> bool:
        files = read_listing(f"{self.folder}/parts/{rank:05d}.json")
        return files is not None and all(os.path.exists(f"{self.folder}/{f}") for f in files)

    def run(self, data, rank: int = 0, world_size: int = 1):
        with self.track_time():
            written = []
            for kind in ("bands", "keys"):
                for src in sorted(glob.glob(f"{self.work}/{kind}/{rank:05d}/*.npy")):
                    name = f"{kind}/{rank:05d}/{os.path.basename(src)}"
                    dst = f"{self.folder}/{name}"
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    if os.path.exists(dst):
                        os.remove(dst)
                    try:
                        os.link(src, dst)
                    except OSError:  # another file system
                        shutil.copyfile(src, dst)
                    written.append(name)
            if rank == 0:
                write_listing(f"{self.folder}/index.json", self.meta)
            write_listing(f"{self.folder}/parts/{rank:05d}.json", written)
            self.stat_update("dedup_index_files", value=len(written))
        return
        yield
