"""WARC / WET / ARC reader: HTTP responses (HTML) or WET conversion records -> documents, every record counted.

datatrove's WarcReader drops what it cannot read without saying why; this one is a datatrove reader too,
with warcio underneath, but each record that is not a document is counted with its reason, and a corrupt
file (truncated gzip, garbage) ends that file with an error instead of the task.
"""

from __future__ import annotations

import re
import zlib
from typing import Literal

from datatrove.pipeline.readers.base import BaseDiskReader

from data_pipeline.sources.accounting import ReaderAccounting
from data_pipeline.sources.decode import DecodeError, decode_payload

HTML_TYPES = ("text/html", "application/xhtml+xml")
_PRINTABLE_URL = re.compile(r"^[\x21-\x7e]+$")


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
        """Read records in order; after a corrupt one, resynchronise at the next record start and go on.

        Gzipped WARCs are one gzip member per record, so the next member header (1f 8b 08) is a candidate
        restart point; uncompressed WARCs restart at the next line beginning with ``WARC/1.``. A candidate that
        does not parse is skipped too. Each corrupt stretch counts as one error, and no good record after it
        is lost.
        """
        from warcio.archiveiterator import ArchiveIterator
        from warcio.exceptions import ArchiveLoadFailed
        from warcio.statusandheaders import StatusAndHeadersParserException

        errors = (zlib.error, EOFError, OSError, ValueError, KeyError, IndexError, UnicodeDecodeError,
                  ArchiveLoadFailed, StatusAndHeadersParserException)
        name = filepath.rsplit("/", 1)[-1]
        with self.data_folder.open(filepath, "rb", compression=None) as f:
            head = f.read(2)
            if not head:
                self.count_in(0)
                self.count_error("empty_file")
                return
            magic = b"\x1f\x8b\x08" if head == b"\x1f\x8b" else b"WARC/1."
            start, counted, file_format = 0, False, None
            while start is not None:
                f.seek(start)
                records = ArchiveIterator(f)
                last = None
                try:
                    for record in records:
                        # warcio falls back to ARC parsing on bytes it cannot read as WARC: in a WARC file, or
                        # with a URL that is not printable ASCII, that "record" is corruption.
                        if record.format != (file_format or record.format) or (
                                record.format == "arc" and not _PRINTABLE_URL.match(record.rec_headers.get_header("uri") or "")):
                            raise ValueError(f"not a {file_format or 'valid ARC'} record")
                        file_format = record.format
                        data = self._record_to_dict(record)
                        last = records.get_record_offset()
                        counted = False
                        if data is None:
                            continue
                        data["id"] = data["id"] or f"{name}@{last}"
                        document = self.get_document_from_dict(data, filepath, last)
                        if document is not None:
                            yield document
                    start = None
                except errors as exc:
                    if not counted:  # one error per corrupt stretch, not per failed restart inside it
                        self.count_in(0)
                        self.count_error("corrupt_or_truncated_file" if last is None and start == 0
                                         else "corrupt_record")
                        from datatrove.utils.logging import logger

                        logger.warning(f"{filepath}: {type(exc).__name__} after offset {last or start}: "
                                       f"{str(exc).strip()[:200]}; counted, resynchronising")
                        counted = True
                    start = self._next_record_start(f, (start if last is None else last) + 1, magic)

    @staticmethod
    def _next_record_start(f, position: int, magic: bytes, chunk: int = 1 << 20) -> int | None:
        f.seek(position)
        carry = b""
        base = position
        while block := f.read(chunk):
            data = carry + block
            at = data.find(magic)
            while at != -1:
                absolute = base - len(carry) + at
                if magic != b"WARC/1." or absolute == 0 or (at > 0 and data[at - 1:at] == b"\n"):
                    return absolute
                at = data.find(magic, at + 1)
            carry = data[-(len(magic) + 1):]
            base += len(block)
        return None

    def _record_to_dict(self, record) -> dict | None:
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
            # ARC records have no record id: read_file uses the file name and the record's offset
            "id": headers.get_header("WARC-Record-ID") if record.format == "warc" else None,
            "url": headers.get_header("WARC-Target-URI") or headers.get_header("uri"),
            "date": headers.get_header("WARC-Date") or headers.get_header("archive-date"),
            "charset": charset,
        }
