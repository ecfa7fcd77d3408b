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

    source_index: int | None = None  # set by the stage: documents then carry metadata.dedup_pos

    def get_document_from_dict(self, data: dict, source_file: str, id_in_file):
        document = super().get_document_from_dict(data, source_file, id_in_file)
        if document is not None and self.source_index is not None:
            document.metadata["dedup_pos"] = [self.source_index, self.position_file(source_file), int(id_in_file)]
        return document

    def position_file(self, source_file: str) -> str:
        return source_file

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
        media = row.get("media")
        if media is not None and not (isinstance(media, list) and all(isinstance(m, dict) for m in media)):
            self.count_error("invalid_media_field")
            return None
        try:
            return self.get_document_from_dict(row, source, index)
        except (TypeError, ValueError):  # e.g. a media entry with keys datatrove's Media does not have
            self.count_error("invalid_media_field")
            return None
