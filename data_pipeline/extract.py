"""HTML -> text with datatrove's Trafilatura extractor; text that is not markup passes through unchanged."""

from __future__ import annotations

from datatrove.pipeline.extractors import Trafilatura


class HtmlToText(Trafilatura):
    """datatrove's Trafilatura block, for inputs that mix HTML pages and plain-text files (format=pages).

    Trafilatura's own ``deduplicate`` (a process-wide cache of seen paragraphs) is off: it makes a page's text
    depend on which pages the same process saw before, so outputs would change with scheduling.
    """

    name = "⛏ Trafilatura (HTML only)"

    def __init__(self, timeout: float = 60.0, favour_precision: bool = True):
        super().__init__(favour_precision=favour_precision, timeout=timeout, deduplicate=False)

    def extract(self, text: str) -> str:
        if not text.lstrip()[:1] == "<":
            return text.strip()
        return super().extract(text)
