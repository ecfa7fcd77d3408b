"""How readers record what they read, in datatrove's per-step stats, so the manifest can balance the books.

Every record a reader meets is counted once as ``in``; it then leaves as a document (the reader's
``documents`` stat, from datatrove), as ``removed:<reason>`` (a valid record that is not a document for this
stage: an HTTP request, an image) or as ``error:<reason>`` (bad input: a truncated gzip, invalid JSON).
"""

from __future__ import annotations

from datatrove.pipeline.base import PipelineStep

IN = "in"
IN_BYTES = "in_bytes"
REMOVED = "removed:"
ERROR = "error:"


class ReaderAccounting:
    """Mixin for datatrove readers: ``count_in``, ``count_removed``, ``count_error``."""

    def count_in(self: PipelineStep, nbytes: int) -> None:
        self.stat_update(IN)
        self.stat_update(IN_BYTES, value=nbytes, unit="record")

    def count_removed(self: PipelineStep, reason: str) -> None:
        self.stat_update(REMOVED + reason)

    def count_error(self: PipelineStep, reason: str) -> None:
        self.stat_update(ERROR + reason)

    def document_from_row(self, row: dict, source: str, index: int):
        """The document for a record with its text under ``self.text_key``; None (counted) when the field is
        missing or not text (error) or the text is blank (removed)."""
        text = row.get(self.text_key)
        if not isinstance(text, str):
            self.count_error(f"missing_{self.text_key}_field")
            return None
        if not text.strip():
            self.count_removed("empty_text")
            return None
        return self.get_document_from_dict(row, source, index)
