"""Checks a Megatron .bin/.idx token shard before megatron-core memory-maps it.

megatron-core reads the .idx header and trusts it: a truncated .idx or .bin surfaces later as a numpy error
deep inside the dataset builder (or as garbage tokens). This reads the header and checks both file sizes.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_MAGIC = b"MMIDIDX\x00\x00"
# megatron.core.datasets.indexed_dataset.DType codes
_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32,
           8: np.uint16}


def check_token_shard(prefix: str | Path) -> int:
    """Validate the pair prefix.bin/prefix.idx; return the number of documents. Raises a clear error."""
    prefix = str(prefix)
    if prefix.endswith((".bin", ".idx")):
        raise ValueError(f"data path {prefix!r} must be the shard prefix, without the .bin/.idx extension")
    idx, binf = Path(prefix + ".idx"), Path(prefix + ".bin")
    for f in (idx, binf):
        if not f.is_file():
            raise FileNotFoundError(f"token shard file {f} does not exist")
    size = idx.stat().st_size
    header = 9 + 8 + 1 + 8 + 8
    if size < header:
        raise ValueError(f"{idx} is truncated ({size} bytes, shorter than the {header}-byte header)")
    with open(idx, "rb") as fh:
        magic = fh.read(9)
        if magic != _MAGIC:
            raise ValueError(f"{idx} is not a Megatron index file (bad magic {magic!r})")
        (_version,) = struct.unpack("<Q", fh.read(8))
        (code,) = struct.unpack("<B", fh.read(1))
        (n_seq,) = struct.unpack("<Q", fh.read(8))
        (n_doc_idx,) = struct.unpack("<Q", fh.read(8))
        if code not in _DTYPES:
            raise ValueError(f"{idx} has an unknown dtype code {code}")
        expected = header + 4 * n_seq + 8 * n_seq + 8 * n_doc_idx
        if size != expected:
            raise ValueError(f"{idx} is truncated or corrupt: {size} bytes, the header promises {expected}")
        sizes = np.fromfile(fh, dtype=np.int32, count=n_seq)
    itemsize = np.dtype(_DTYPES[code]).itemsize
    want = int(sizes.astype(np.int64).sum()) * itemsize
    got = binf.stat().st_size
    if got != want:
        raise ValueError(f"{binf} is truncated or corrupt: {got} bytes, its .idx promises {want}")
    docs = max(n_doc_idx - 1, 0)
    if docs == 0 or want == 0:
        raise ValueError(f"token shard {prefix} is empty (no documents)")
    return docs
