"""What the dedup stage's pipelines share: record dtypes, partitioned record files, listings, peak RSS."""

from __future__ import annotations

import json
import os
import resource

import numpy as np
from datatrove.pipeline.base import PipelineStep

from data_pipeline.dedup.minhash import _fmix64
from data_pipeline.dedup.records import records_ok, write_records

NODE_SALT = 0xC1A55


def node_dtype():
    return np.dtype([("doc", "u8"), ("exact", "u8"), ("url", "u8"), ("scope", "u8"), ("length", "i8"),
                     ("quality", "f8")])


EDGE_DTYPE = np.dtype([("a", "u8"), ("b", "u8")])
DECISION_DTYPE = np.dtype([("doc", "u8"), ("kept", "u8"), ("cluster", "u8"), ("size", "u4"), ("reason", "u1")])


def mix(values: np.ndarray, salt: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _fmix64(values.astype(np.uint64) ^ np.uint64(salt))


def node_part(nodes: np.ndarray, parts: int) -> np.ndarray:
    """The clustering partition of each document key (a hash, so partitions are balanced)."""
    return (mix(nodes, NODE_SALT) % np.uint64(parts)).astype(np.int64)


def record_peak_rss(work: str, pipeline: str, rank: int) -> None:
    """This task's peak RSS, the largest over the pipelines of the same name (the clustering rounds)."""
    os.makedirs(f"{work}/rss", exist_ok=True)
    path = f"{work}/rss/{pipeline}_{rank:05d}.json"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        with open(path) as f:
            peak = max(peak, json.load(f)["peak_rss_mb"])
    except (OSError, ValueError, KeyError):
        pass
    with open(f"{path}.tmp", "w") as f:
        json.dump({"peak_rss_mb": peak}, f)
    os.replace(f"{path}.tmp", path)


def read_listing(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_listing(path: str, data) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(f"{path}.tmp", "w") as f:
        json.dump(data, f)
    os.replace(f"{path}.tmp", path)


def listed_outputs_ok(work: str, listing: str) -> bool:
    """A finished task's listing exists and every file it names is whole."""
    files = read_listing(f"{work}/{listing}")
    return files is not None and all(records_ok(f"{work}/{name}") for name in files)


def remove_listed(work: str, listing: str) -> None:
    """A task that is redone starts from nothing: the files its last attempt listed go."""
    for name in read_listing(f"{work}/{listing}") or []:
        if os.path.exists(f"{work}/{name}"):
            os.remove(f"{work}/{name}")


def write_partitioned(work: str, folder: str, name: str, rows: np.ndarray, parts: np.ndarray,
                      count: int) -> list[str]:
    """rows[i] goes to partition parts[i]: one file per non-empty partition, ``<folder>/<dst>/<name>.npy``."""
    order = np.argsort(parts, kind="stable")
    rows, parts = rows[order], parts[order]
    bounds = np.searchsorted(parts, np.arange(count + 1))
    written = []
    for dst in range(count):
        if bounds[dst] < bounds[dst + 1]:
            path = f"{folder}/{dst:05d}/{name}.npy"
            write_records(f"{work}/{path}", rows[bounds[dst]:bounds[dst + 1]])
            written.append(path)
    return written


class WorkStep(PipelineStep):
    type = "🫂 - DEDUP"

    def __init__(self, work: str):
        super().__init__()
        self.work = work
