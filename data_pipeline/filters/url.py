"""datatrove's URL blocklist filter, made offline: tldextract uses its bundled public-suffix snapshot."""

from __future__ import annotations

from datatrove.data import Document
from datatrove.pipeline.filters.url_filter import URLFilter


class OfflineURLFilter(URLFilter):
    """datatrove's URLFilter (its bundled block lists), with two changes.

    * tldextract is built with ``suffix_list_urls=()``: it never fetches the public suffix list (a run
      without network would otherwise wait on timeouts) and uses the snapshot shipped in the wheel.
    * a document without a URL (a JSONL corpus, a page file) is kept and counted as ``no_url``, not a crash.
    """

    name = "😈 URL blocklist (offline)"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        from tldextract import TLDExtract

        self.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)

    def filter(self, document: Document) -> bool | tuple[bool, str]:
        if not document.metadata.get("url"):
            self.stat_update("no_url")
            return True
        return super().filter(document)
