"""Check a Megatron .bin/.idx pair before megatron-core memory-maps it.

megatron-core trusts the .idx header: a missing, truncated or mismatched file otherwise surfaces as an
assertion on the header or a cryptic numpy "buffer is smaller than requested size" deep in the dataset
builder. ``validate_indexed_dataset`` reads the header, checks both file sizes and the document index, and
raises ``IndexedDatasetError`` naming the file and the fix.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from data_pipeline.tokenizer.mmidx import HEADER_BYTES as _HEADER_BYTES  # magic, version, dtype, counts
from data_pipeline.tokenizer.mmidx import INDEX_HEADER as _INDEX_HEADER
from data_pipeline.tokenizer.mmidx import dtype_from_code
_REBUILD = "re-create it with `python -m data_pipeline.tokenizer encode ... output.prefix={prefix}`"


class IndexedDatasetError(ValueError):
    pass


@dataclass(frozen=True)
class IndexedDatasetInfo:
    prefix: str
    dtype: type
    sequences: int
    documents: int
    tokens: int


def validate_indexed_dataset(prefix: str | Path) -> IndexedDatasetInfo:
    prefix = str(prefix)
    fix = _REBUILD.format(prefix=prefix)
    if prefix.endswith((".bin", ".idx")):
        raise IndexedDatasetError(f"{prefix!r} is a file name; pass the prefix without .bin/.idx")
    idx_path, bin_path = Path(prefix + ".idx"), Path(prefix + ".bin")
    for path in (idx_path, bin_path):
        if not path.is_file():
            raise IndexedDatasetError(f"{path} is missing (an indexed dataset is a .bin/.idx pair); {fix}")
    idx_size = idx_path.stat().st_size
    if idx_size < _HEADER_BYTES:
        raise IndexedDatasetError(f"{idx_path} is truncated: {idx_size} bytes, shorter than the header; {fix}")
    with open(idx_path, "rb") as f:
        magic = f.read(len(_INDEX_HEADER))
        version, code, n_seq, n_doc_idx = struct.unpack("<QBQQ", f.read(_HEADER_BYTES - len(_INDEX_HEADER)))
        if magic != _INDEX_HEADER or version != 1:
            raise IndexedDatasetError(f"{idx_path} is not a Megatron index (magic {magic!r}, version {version}); "
                                      f"{fix}")
        try:
            dtype = dtype_from_code(code)
        except ValueError:
            raise IndexedDatasetError(f"{idx_path} has an unknown token dtype code {code}; {fix}") from None
        expected = _HEADER_BYTES + 12 * n_seq + 8 * n_doc_idx
        if idx_size not in (expected, expected + n_seq):  # + one mode byte per sequence if multimodal
            raise IndexedDatasetError(f"{idx_path} is truncated or corrupt: {idx_size} bytes, its header "
                                      f"({n_seq} sequences, {n_doc_idx} document indices) needs {expected}; {fix}")
        lengths = np.fromfile(f, dtype=np.int32, count=n_seq).astype(np.int64)
        pointers = np.fromfile(f, dtype=np.int64, count=n_seq)
        doc_idx = np.fromfile(f, dtype=np.int64, count=n_doc_idx)
    itemsize = np.dtype(dtype).itemsize
    if (lengths < 0).any() or (n_seq and (pointers[0] != 0 or (np.diff(pointers) != lengths[:-1] * itemsize).any())):
        raise IndexedDatasetError(f"{idx_path} is corrupt: sequence lengths and pointers disagree; {fix}")
    if n_doc_idx == 0 or doc_idx[0] != 0 or doc_idx[-1] != n_seq or (np.diff(doc_idx) < 0).any():
        raise IndexedDatasetError(f"{idx_path} is corrupt: its document index does not run from 0 to {n_seq} "
                                  f"sequences; {fix}")
    tokens = int(lengths.sum())
    bin_size, want = bin_path.stat().st_size, tokens * itemsize
    if bin_size != want:
        raise IndexedDatasetError(f"{bin_path} is {'truncated' if bin_size < want else 'too long'}: {bin_size} "
                                  f"bytes, its .idx promises {want} ({tokens} tokens of "
                                  f"{np.dtype(dtype).name}); the pair does not belong together or a write was "
                                  f"cut short; {fix}")
    return IndexedDatasetInfo(prefix, dtype, n_seq, n_doc_idx - 1, tokens)
