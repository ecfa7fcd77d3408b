"""Megatron's indexed dataset format (``.bin`` tokens + ``.idx`` "MMIDIDX" index), written with numpy only.

megatron-core's ``IndexedDatasetBuilder`` writes these files, but importing it imports torch and most of
megatron (about 8 CPU-seconds and 400 MB on a laptop-class core), which dominated stage=tokenize's tasks. This
module writes the same bytes without them; ``tests/data_pipeline/test_mmidx.py`` compares it with
``IndexedDatasetBuilder`` byte for byte and reads the result with megatron-core's ``IndexedDataset``.

The format (megatron-core 0.16, text only: no per-sequence modes), all integers little-endian:

    .idx  b"MMIDIDX\\x00\\x00"        9-byte magic
          <Q version = 1
          <B dtype code                 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16
          <Q sequence count S
          <Q document-index count D     documents + 1
          int32[S]  sequence lengths (tokens)
          int64[S]  sequence pointers (byte offset of each sequence in .bin: the running sum of lengths x itemsize)
          int64[D]  document indices (0, then the sequence count after each document)
    .bin  the tokens of every sequence, back to back, in the dtype

One sequence per document here (a document's tokens + EOD), so the document indices are 0, 1, ..., S.
"""

from __future__ import annotations

import itertools
import os
import shutil
import struct
from pathlib import Path

import numpy as np

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
HEADER_BYTES = len(INDEX_HEADER) + 8 + 1 + 8 + 8
DTYPE_CODES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32,
               8: np.uint16}
_CODE_OF = {(np.dtype(t).kind, np.dtype(t).itemsize): c for c, t in DTYPE_CODES.items()}


def optimal_dtype(vocab_size: int) -> type:
    """megatron's ``DType.optimal_dtype``: uint16 below 65,500 vocabulary entries, else int32."""
    return np.uint16 if vocab_size < 65500 else np.int32


def dtype_from_code(code: int) -> type:
    try:
        return DTYPE_CODES[code]
    except KeyError:
        raise ValueError(f"unknown token dtype code {code}") from None


def code_from_dtype(dtype) -> int:
    dtype = np.dtype(dtype)
    return _CODE_OF[dtype.kind, dtype.itemsize]


def write_index(path: str | Path, dtype, lengths: np.ndarray, document_indices: np.ndarray | None = None) -> None:
    """The .idx for sequences of ``lengths`` tokens; ``document_indices`` defaults to one document per sequence."""
    lengths = np.ascontiguousarray(lengths, dtype="<i4")
    if document_indices is None:
        document_indices = np.arange(len(lengths) + 1, dtype="<i8")
    document_indices = np.ascontiguousarray(document_indices, dtype="<i8")
    pointers = np.zeros(len(lengths), dtype="<i8")
    if len(lengths) > 1:
        np.cumsum(lengths[:-1], dtype="<i8", out=pointers[1:])
    pointers *= np.dtype(dtype).itemsize
    with open(path, "wb") as f:
        f.write(INDEX_HEADER)
        f.write(struct.pack("<QBQQ", INDEX_VERSION, code_from_dtype(dtype), len(lengths), len(document_indices)))
        f.write(lengths.tobytes())
        f.write(pointers.tobytes())
        f.write(document_indices.tobytes())


def read_index(path: str | Path) -> tuple[type, np.ndarray, np.ndarray, np.ndarray]:
    """(dtype, lengths int32, pointers int64, document indices int64) of an .idx; ValueError if the header is
    not Megatron's or the file is shorter than it promises (validate.py checks the rest)."""
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
        if len(head) < HEADER_BYTES or head[:len(INDEX_HEADER)] != INDEX_HEADER:
            raise ValueError(f"{path} is not a Megatron index")
        version, code, n_seq, n_doc = struct.unpack("<QBQQ", head[len(INDEX_HEADER):])
        if version != INDEX_VERSION:
            raise ValueError(f"{path}: index version {version}, expected {INDEX_VERSION}")
        dtype = dtype_from_code(code)
        lengths = np.fromfile(f, dtype="<i4", count=n_seq)
        pointers = np.fromfile(f, dtype="<i8", count=n_seq)
        doc_idx = np.fromfile(f, dtype="<i8", count=n_doc)
    if len(lengths) != n_seq or len(pointers) != n_seq or len(doc_idx) != n_doc:
        raise ValueError(f"{path} is truncated")
    return dtype, lengths, pointers, doc_idx


class TokenShardWriter:
    """Documents (lists of token ids, EOD included) into ``<prefix>.bin/.idx``, written under temporary names
    and renamed by ``finalize``. Memory: 4 bytes per document (its length), whatever the token count."""

    def __init__(self, prefix: str | Path, dtype):
        self.prefix = str(prefix)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        head, name = os.path.split(self.prefix)
        self._tmp = os.path.join(head, f".{name}.tmp{os.getpid()}")
        self._bin = open(f"{self._tmp}.bin", "wb")
        self._lengths = np.empty(1024, dtype="<i4")
        self.documents = 0
        self.tokens = 0

    def add_documents(self, docs: list[list[int]]) -> int:
        """Append documents (each a sequence of ids); return their token count."""
        n = len(docs)
        if not n:
            return 0
        lens = np.fromiter(map(len, docs), dtype="<i4", count=n)
        total = int(lens.sum(dtype=np.int64))
        if self.documents + n > len(self._lengths):
            self._lengths = np.resize(self._lengths, max(2 * len(self._lengths), self.documents + n))
        self._lengths[self.documents:self.documents + n] = lens
        tokens = np.fromiter(itertools.chain.from_iterable(docs), dtype=self.dtype, count=total)
        self._bin.write(memoryview(tokens))
        self.documents += n
        self.tokens += total
        return total

    @property
    def tmp_prefix(self) -> str:
        """Where the files are until ``commit`` (readable as a prefix once ``close`` has written the index)."""
        return self._tmp

    def close(self) -> None:
        """Close the .bin and write the index, both still under the temporary prefix."""
        self._bin.close()
        write_index(f"{self._tmp}.idx", self.dtype, self._lengths[:self.documents])

    def commit(self) -> str:
        """Rename both files to the prefix; returns the prefix."""
        os.replace(f"{self._tmp}.bin", f"{self.prefix}.bin")
        os.replace(f"{self._tmp}.idx", f"{self.prefix}.idx")
        return self.prefix

    def finalize(self) -> str:
        """``close`` then ``commit``; returns the prefix."""
        self.close()
        return self.commit()

    def abort(self) -> None:
        self._bin.close()
        for suffix in (".bin", ".idx"):
            Path(f"{self._tmp}{suffix}").unlink(missing_ok=True)


def merge_shards(prefixes: list[str], out_prefix: str | Path, dtype) -> tuple[int, int]:
    """Concatenate indexed datasets in order into ``out_prefix`` (what megatron's ``IndexedDatasetBuilder``
    gives after ``add_index`` of each, byte for byte): the .bin files copied, the index arrays joined. Written
    under temporary names, then renamed. Returns (documents, tokens)."""
    out_prefix = str(out_prefix)
    head, name = os.path.split(out_prefix)
    tmp = os.path.join(head, f".{name}.tmp{os.getpid()}")
    lengths, doc_idx, offset = [], [np.zeros(1, dtype="<i8")], 0
    try:
        with open(f"{tmp}.bin", "wb") as out:
            for prefix in prefixes:
                part_dtype, part_lengths, _, part_doc_idx = read_index(f"{prefix}.idx")
                if np.dtype(part_dtype) != np.dtype(dtype):
                    raise ValueError(f"{prefix}.idx holds {np.dtype(part_dtype).name} tokens, expected "
                                     f"{np.dtype(dtype).name}")
                lengths.append(part_lengths)
                doc_idx.append(part_doc_idx[1:] + offset)
                offset += len(part_lengths)
                with open(f"{prefix}.bin", "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype="<i4")
        write_index(f"{tmp}.idx", dtype, all_lengths, np.concatenate(doc_idx))
        os.replace(f"{tmp}.bin", f"{out_prefix}.bin")
        os.replace(f"{tmp}.idx", f"{out_prefix}.idx")
    finally:
        for suffix in (".bin", ".idx"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    return int(offset), int(all_lengths.sum(dtype=np.int64))
