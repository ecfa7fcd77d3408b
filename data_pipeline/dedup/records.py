"""Intermediate files of the dedup stage: a numpy array + a footer (length, blake2b digest), written atomically.

A file that was cut short or changed after it was written fails ``read_records`` with ``BrokenRecordFile``;
``records_ok`` lets the stage find such a file before it runs and redo the task that wrote it.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct

import numpy as np

_MAGIC = b"STDEDUP1"
_FOOTER = struct.Struct("<8sQ16s")


class BrokenRecordFile(RuntimeError):
    pass


def write_records(path: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    payload = buf.getvalue()
    digest = hashlib.blake2b(payload, digest_size=16).digest()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(payload)
        f.write(_FOOTER.pack(_MAGIC, len(payload), digest))
    os.replace(tmp, path)


def read_records(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < _FOOTER.size:
        raise BrokenRecordFile(f"{path}: {len(data)} bytes, shorter than its footer (truncated)")
    magic, length, digest = _FOOTER.unpack(data[-_FOOTER.size:])
    payload = data[:-_FOOTER.size]
    if magic != _MAGIC or length != len(payload):
        raise BrokenRecordFile(f"{path}: footer missing or length mismatch (truncated or not a dedup file)")
    if hashlib.blake2b(payload, digest_size=16).digest() != digest:
        raise BrokenRecordFile(f"{path}: checksum mismatch (corrupted)")
    return np.load(io.BytesIO(payload), allow_pickle=False)


def records_ok(path: str) -> bool:
    try:
        read_records(path)
    except (BrokenRecordFile, OSError, ValueError):
        return False
    return True
