"""Page -> text: HTML with datatrove's Trafilatura extractor, RSS/Atom feeds item by item, plain text as is."""

from __future__ import annotations

import re

from datatrove.pipeline.extractors import Trafilatura

_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_FEED_ROOTS = {"rss", "feed", "RDF", "channel"}
_FEED_TEXT = {"title", "description", "summary", "content", "encoded", "subtitle", "tagline"}


def feed_text(page: str) -> str | None:
    """Text of an RSS/Atom feed (titles, descriptions, contents; HTML inside them flattened), or None when
    the page is not a feed. Trafilatura finds no article in a feed, so without this a feed yields nothing."""
    head = page.lstrip()[:2048]
    if not head.startswith("<") or not re.search(r"<(rss|feed|rdf:RDF)[\s>]", head):
        return None
    from lxml import etree, html

    parser = etree.XMLParser(recover=True, resolve_entities=False, no_network=True, huge_tree=True)
    try:
        root = etree.fromstring(_XML_DECLARATION.sub("", page, count=1), parser)
    except (etree.XMLSyntaxError, ValueError):
        return None
    if root is None or etree.QName(root).localname not in _FEED_ROOTS:
        return None
    lines = []
    for element in root.iter():
        if not isinstance(element.tag, str) or etree.QName(element).localname not in _FEED_TEXT:
            continue
        text = "".join(element.itertext()).strip()
        if "<" in text:  # escaped HTML in a description
            try:
                text = html.fromstring(text).text_content().strip()
            except (etree.ParserError, ValueError):
                pass
        if text:
            lines.append(" ".join(text.split()))
    return "\n".join(lines)


class HtmlToText(Trafilatura):
    """datatrove's Trafilatura block, for inputs that mix HTML pages, feeds and plain-text files.

    Trafilatura's own ``deduplicate`` (a process-wide cache of seen paragraphs) is off: it makes a page's text
    depend on which pages the same process saw before, so outputs would change with scheduling.
    """

    name = "⛏ Trafilatura (+ feeds, plain text)"

    def __init__(self, timeout: float = 60.0, favour_precision: bool = True):
        super().__init__(favour_precision=favour_precision, timeout=timeout, deduplicate=False)

    def extract(self, text: str) -> str:
        if text.lstrip()[:1] != "<":
            return text.strip()
        feed = feed_text(text)
        if feed is not None:
            return feed
        return super().extract(text)
