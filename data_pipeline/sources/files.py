"""A folder of raw web pages or text files (one document per file), decoded with charset detection.

This is how a saved page set like the chardet test corpus (pages and feeds in legacy encodings) enters the
pipeline: HTML goes on to the extractor, plain text passes through it unchanged.
"""

from __future__ import annotations

from datatrove.pipeline.readers.base import BaseDiskReader

from data_pipeline.sources.accounting import ReaderAccounting
from data_pipeline.sources.decode import DecodeError, decode_payload


class PageFilesSource(ReaderAccounting, BaseDiskReader):
    name = "📄 Page files (accounted)"

    def __init__(self, data_folder, max_record_bytes: int = 10 << 20, glob_pattern: str | None = None,
                 paths_file=None, doc_progress: bool = False, limit: int = -1):
        super().__init__(data_folder, paths_file=paths_file, glob_pattern=glob_pattern, doc_progress=doc_progress,
                         limit=limit)
        self.max_record_bytes = max_record_bytes

    def read_file(self, filepath: str):
        try:
            with self.data_folder.open(filepath, "rb") as f:
                payload = f.read(self.max_record_bytes + 1)
        except OSError as exc:
            self.count_in(0)
            self.count_error("unreadable_file")
            from datatrove.utils.logging import logger

            logger.warning(f"cannot read {filepath}: {exc}; counted as an error")
            return
        self.count_in(len(payload))
        if not payload:
            self.count_error("empty_file")
            return
        if len(payload) > self.max_record_bytes:
            self.count_error("too_large")
            return
        try:
            text, charset = decode_payload(payload)
        except DecodeError as exc:
            self.count_error(exc.reason)
            return
        if not text.strip():
            self.count_removed("empty_payload")
            return
        document = self.get_document_from_dict({"text": text, "id": filepath, "charset": charset}, filepath, 0)
        if document is not None:
            yield document
