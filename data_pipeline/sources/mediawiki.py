"""MediaWiki XML dumps (``.xml``, ``.xml.bz2``, ``.xml.gz``) as documents: one per article.

Every ``<page>`` is counted as read; a redirect or a page outside the article namespace is removed with that
reason, and a dump that is cut short or not XML is an error (``corrupt_or_truncated_dump``) after the pages
before the damage. The wikitext becomes prose with ``data_pipeline.wikipedia.wikitext_to_text``.
"""

from __future__ import annotations

import bz2
import gzip
import xml.etree.ElementTree as ET
import zlib

from datatrove.pipeline.readers.base import BaseDiskReader

from data_pipeline.sources.accounting import ReaderAccounting
from data_pipeline.wikipedia import iter_pages


class MediaWikiSource(ReaderAccounting, BaseDiskReader):
    name = "📚 MediaWiki dump (accounted)"

    def read_file(self, filepath: str):
        from datatrove.utils.logging import logger

        pages = 0
        try:
            with self.data_folder.open(filepath, "rb") as raw:
                stream = (bz2.BZ2File(raw) if filepath.endswith(".bz2")
                          else gzip.GzipFile(fileobj=raw) if filepath.endswith(".gz") else raw)
                for page, skip in iter_pages(stream):
                    pages += 1
                    self.count_in(page["xml_bytes"])
                    if skip is not None:
                        self.count_removed(skip)
                        continue
                    document = self.document_from_row({"text": page["text"], "id": f"{filepath}#{page['id']}",
                                                       "title": page["title"]}, filepath, pages - 1)
                    if document is not None:
                        yield document
        except (ET.ParseError, EOFError, OSError, zlib.error, ValueError) as exc:
            self.count_in(0)
            self.count_error("corrupt_or_truncated_dump")
            logger.warning(f"{filepath}: {type(exc).__name__}: {exc} after {pages} pages; counted as an error")
