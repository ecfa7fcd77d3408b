"""Stable document ids: (input path, file, record in the file) -> a 64-bit key and an id string.

The key is ``ordinal << 40 | record`` where ``ordinal`` is the file's place in the sorted input listing and
``record`` its line/row number or byte offset. Keys never depend on the task count or the read order, so every
dedup decision is keyed on them, never on a document's position in a task's stream.
"""

from __future__ import annotations

import numpy as np

RECORD_BITS = 40


class Positions:
    def __init__(self, listing: list[list], tasks: int, indexes: list[dict] | None = None):
        self.files = [(int(i), str(name)) for i, name, _ in listing]
        # dedup.index.read: (name, Positions of the run that wrote it), for the ids of index documents
        self.indexes = [(m["name"], Positions(m["listing"], 1)) for m in indexes or []]
        self.ordinal = {f: n for n, f in enumerate(self.files)}
        self.paths = sorted({i for i, _ in self.files})
        self.tasks = tasks
        # the write pipeline's task that reads each file: datatrove gives task r files[r::tasks] of each path
        owner, seen = [], {}
        for i, _ in self.files:
            owner.append(seen.get(i, 0) % tasks)
            seen[i] = seen.get(i, 0) + 1
        self.owner_by_ordinal = np.array(owner, dtype=np.int64)

    def key(self, pos: list) -> int:
        index, name, record = int(pos[0]), str(pos[1]), int(pos[2])
        ordinal = self.ordinal.get((index, name))
        if ordinal is None:  # a local HF dataset: one "file" per input path, after the listed files
            ordinal = len(self.files) + index
        if not 0 <= record < 1 << RECORD_BITS:
            raise ValueError(f"record {record} of {name} does not fit the {RECORD_BITS}-bit record field")
        return ordinal << RECORD_BITS | record

    def id_of(self, key: int) -> str:
        if key >> 63:  # a document of an index (dedup/index.py): "<index name>:<its id there>"
            number, inner = (key >> 60) & 7, key & ((1 << 60) - 1)
            name, positions = self.indexes[number]
            return f"{name}:{positions.id_of(inner)}"
        ordinal, record = key >> RECORD_BITS, key & ((1 << RECORD_BITS) - 1)
        if ordinal < len(self.files):
            index, name = self.files[ordinal]
            return f"{index}/{name}#{record}"
        return f"{ordinal - len(self.files)}/#{record}"

    def shard_name(self, key: int, rank: int) -> str:
        """The output file of a document: its input file's ordinal (same for any task count)."""
        ordinal = key >> RECORD_BITS
        return f"{ordinal:05d}" if ordinal < len(self.files) else f"hf{rank:05d}"

    def owners(self, keys: np.ndarray) -> np.ndarray:
        """Write-pipeline task of each key; -1 for local HF datasets (every task looks those up)."""
        ordinals = (keys >> np.uint64(RECORD_BITS)).astype(np.int64)
        out = np.full(len(keys), -1, dtype=np.int64)
        listed = ordinals < len(self.files)
        out[listed] = self.owner_by_ordinal[ordinals[listed]]
        return out
