"""WARC / WET / ARC reader: HTTP responses (HTML) or WET conversion records -> documents, every record counted.

datatrove's WarcReader drops what it cannot read without saying why; this one is a datatrove reader too,
with warcio underneath, but each record that is not a document is counted with its reason, and a corrupt
file (truncated gzip, garbage) ends that file with an error instead of the task.
"""

from __future__ import annotations

import zlib
from typing import Literal

from datatrove.pipeline.readers.base import BaseDiskReader

from data_pipeline.sources.accounting import ReaderAccounting
from data_pipeline.sources.decode import DecodeError, decode_payload

HTML_TYPES = ("text/html", "application/xhtml+xml")


class WarcSource(ReaderAccounting, BaseDiskReader):
    """Read WARC (``response`` records with HTML) or WET (``conversion`` records) files.

    Args:
        data_folder: local path or fsspec URL (s3://, https://) of a folder, datatrove-style.
        kind: "warc" keeps HTTP responses with an HTML payload (text = decoded HTML, for an extractor);
            "wet" keeps conversion records (text as is).
        max_record_bytes: a payload larger than this is an error ("too_large"), never read whole.
    """

    name = "🕷 WARC (accounted)"

    def __init__(self, data_folder, kind: Literal["warc", "wet"] = "warc", max_record_bytes: int = 10 << 20,
                 glob_pattern: str | None = None, paths_file=None, doc_progress: bool = False, limit: int = -1):
        super().__init__(data_folder, paths_file=paths_file, glob_pattern=glob_pattern, doc_progress=doc_progress,
                         limit=limit)
        self.kind = kind
        self.max_record_bytes = max_record_bytes

    def read_file(self, filepath: str):
        from warcio.archiveiterator import ArchiveIterator
        from warcio.exceptions import ArchiveLoadFailed
        from warcio.statusandheaders import StatusAndHeadersParserException

        records = 0
        try:
            with self.data_folder.open(filepath, "rb", compression=None) as f:
                for records, record in enumerate(ArchiveIterator(f), start=1):
                    data = self._record_to_dict(record, f"{filepath}#{records - 1}")
                    if data is None:
                        continue
                    document = self.get_document_from_dict(data, filepath, records - 1)
                    if document is None:  # empty text: counted as removed by _record_to_dict already
                        continue
                    yield document
        except (zlib.error, EOFError, OSError, ValueError, KeyError, IndexError, UnicodeDecodeError,
                ArchiveLoadFailed, StatusAndHeadersParserException) as exc:
            self._count_file_error(records, exc)
        else:
            if records == 0:
                self.count_in(0)
                self.count_error("empty_file")

    def _count_file_error(self, records: int, exc: Exception) -> None:
        from datatrove.utils.logging import logger

        self.count_in(0)
        reason = "empty_file" if records == 0 and "empty" in str(exc).lower() else "corrupt_or_truncated_file"
        self.count_error(reason)
        logger.warning(f"WARC file ended with {type(exc).__name__}: {exc} (after {records} records); counted")

    def _record_to_dict(self, record, position: str) -> dict | None:
        stream = record.content_stream() if record.rec_type in ("response", "conversion") else record.raw_stream
        payload = stream.read(self.max_record_bytes + 1)
        self.count_in(len(payload))
        if len(payload) > self.max_record_bytes:
            self.count_error("too_large")
            return None
        if getattr(record.raw_stream, "limit", 0) > 0:  # fewer bytes than its Content-Length: cut short
            self.count_error("truncated_record")
            return None
        wanted = "conversion" if self.kind == "wet" else "response"
        if record.rec_type != wanted:
            self.count_removed(f"not_{'wet_conversion' if self.kind == 'wet' else 'http_response'}")
            return None
        content_type = None
        if self.kind == "warc":
            if record.http_headers is None:
                self.count_removed("not_http_response")
                return None
            content_type = record.http_headers.get_header("Content-Type") or ""
            mime = content_type.split(";")[0].strip().lower()
            status = record.http_headers.get_statuscode()
            if mime and mime not in HTML_TYPES:
                self.count_removed("not_html")
                return None
            if status and not status.startswith("2"):
                self.count_removed("http_status_not_2xx")
                return None
        try:
            text, charset = decode_payload(payload, content_type)
        except DecodeError as exc:
            self.count_error(exc.reason)
            return None
        if not text.strip():
            self.count_removed("empty_payload")
            return None
        headers = record.rec_headers
        return {
            "text": text,
            # ARC records get a random WARC-Record-ID from warcio's conversion: use the position instead
            "id": position if record.format.startswith("arc") else headers.get_header("WARC-Record-ID") or position,
            "url": headers.get_header("WARC-Target-URI") or headers.get_header("uri"),
            "date": headers.get_header("WARC-Date") or headers.get_header("archive-date"),
            "charset": charset,
        }
