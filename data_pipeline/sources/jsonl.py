"""JSONL reader (.jsonl, .jsonl.gz, .jsonl.zst; local or fsspec URL) that counts bad lines instead of dying.

An invalid JSON line, a line without the text field, or a truncated compressed file is counted as an error
with its reason; every good line before and after it is read.
"""

from __future__ import annotations

import zlib

import orjson
from datatrove.pipeline.readers.jsonl import JsonlReader

from data_pipeline.sources.accounting import ReaderAccounting


def _lines(f, chunk_bytes: int = 1 << 20):
    """Lines of a binary stream (compressed streams need not implement readline)."""
    pending = b""
    while chunk := f.read(chunk_bytes):
        *lines, pending = (pending + chunk).split(b"\n")
        yield from lines
    if pending:
        yield pending


class JsonlSource(ReaderAccounting, JsonlReader):
    name = "🐿 JSONL (accounted)"

    def read_file(self, filepath: str):
        line_no = -1
        try:
            with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
                for line_no, line in enumerate(_lines(f)):
                    if not line.strip():
                        continue
                    self.count_in(len(line))
                    try:
                        data = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        self.count_error("invalid_json")
                        continue
                    if not isinstance(data, dict):
                        self.count_error("json_not_an_object")
                        continue
                    document = self.document_from_row(data, filepath, line_no)
                    if document is not None:
                        yield document
            if line_no < 0:
                self.count_in(0)
                self.count_error("empty_file")
        except (EOFError, OSError, zlib.error, UnicodeDecodeError, ValueError) as exc:
            from datatrove.utils.logging import logger

            self.count_in(0)
            self.count_error("empty_file" if line_no < 0 and "empty" in str(exc).lower()
                             else "corrupt_or_truncated_file")
            logger.warning(f"{filepath}: {type(exc).__name__}: {exc} after line {line_no + 1}; counted as an error")
