"""Read a MediaWiki XML dump (the "enwiki" sample) as plain-prose documents.

``iter_wikipedia_pages(path)`` streams ``<page>`` elements (bz2, gz or plain XML), skips redirects and
non-article namespaces, and turns wikitext into prose the light way: templates ``{{...}}``, tables
``{|...|}``, ``<ref>`` notes, comments, files/images, categories and interlanguage links are dropped;
link text is kept (``[[target|text]]`` -> ``text``); bold/italic quotes, heading ``=`` marks and list
bullets are stripped. It is a regex-and-bracket-counting converter, not a full MediaWiki renderer:
good enough for tokenizer training and smoke-scale pre-training, not for a production corpus (use
WikiExtractor or an HTML dump there).
"""

from __future__ import annotations

import bz2
import gzip
import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path


def iter_wikipedia_pages(path: str | Path, namespaces: tuple[int, ...] = (0,)) -> Iterator[dict]:
    """Yield {"id": str, "title": str, "text": str} per article page; redirects are skipped."""
    path = Path(path)
    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(path.suffix, open)
    with opener(path, "rb") as stream:
        for page, skip in iter_pages(stream, namespaces):
            if skip is None:
                yield page


def iter_pages(stream, namespaces: tuple[int, ...] = (0,)) -> Iterator[tuple[dict, str | None]]:
    """Every ``<page>`` of a binary XML stream as ({"id", "title", "text", "xml_bytes"}, skip reason): None
    for an article, "redirect" or "namespace" otherwise (their text is left empty)."""
    start = 0
    for _event, elem in ET.iterparse(stream, events=("end",)):
        if _local(elem.tag) != "page":
            continue
        fields = {_local(child.tag): child for child in elem}
        ns = int(fields["ns"].text) if "ns" in fields and (fields["ns"].text or "").strip() else 0
        revision = fields.get("revision")
        text_elem = None
        if revision is not None:
            text_elem = next((c for c in revision if _local(c.tag) == "text"), None)
        wikitext = (text_elem.text or "") if text_elem is not None else ""
        is_redirect = "redirect" in fields or wikitext.lstrip()[:9].upper() == "#REDIRECT"
        skip = "redirect" if is_redirect else None if ns in namespaces else "namespace"
        page = {"id": fields["id"].text if "id" in fields else None,
                "title": fields["title"].text if "title" in fields else None,
                "text": wikitext_to_text(wikitext) if skip is None else "",
                "xml_bytes": len(wikitext.encode("utf-8"))}
        yield page, skip
        elem.clear()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_REF = re.compile(r"<ref\b[^>/]*/>|<ref\b[^>]*>.*?(?:</ref\s*>|\Z)", re.S | re.I)
_DROPPED_TAGS = re.compile(
    r"<(math|gallery|timeline|imagemap|score|syntaxhighlight|source|graph|chem|hiero)\b[^>]*>.*?</\1\s*>",
    re.S | re.I,
)
_ANY_TAG = re.compile(r"</?[a-zA-Z][^<>]*?/?>")
_NON_TEXT_LINK = re.compile(r"\[\[\s*:?\s*(?:file|image|media|category|[a-z]{2,3}(?:-[a-z]+)?)\s*:", re.I)
_LINK = re.compile(r"\[\[([^\[\]|]*)(?:\|([^\[\]]*))?\]\]([a-z]*)")
_EXTERNAL = re.compile(r"\[(?:https?:)?//[^\s\]]+(?:\s+([^\]]*))?\]")
_BOLD_ITALIC = re.compile(r"'{2,}")
_HEADING = re.compile(r"^(={1,6})\s*(.*?)\s*\1\s*$", re.M)
_LIST_MARK = re.compile(r"^[*#:;]+\s*", re.M)
_MAGIC = re.compile(r"__[A-Z]+__")
_BLANK_RUNS = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.M)


def wikitext_to_text(wikitext: str) -> str:
    text = _COMMENT.sub("", wikitext)
    text = _REF.sub("", text)
    text = _DROPPED_TAGS.sub("", text)
    text = _drop_balanced(text, "{{", "}}")
    text = _drop_balanced(text, "{|", "|}")
    text = _drop_links(text)
    text = _LINK.sub(lambda m: (m.group(2) if m.group(2) is not None else m.group(1)) + m.group(3), text)
    text = _EXTERNAL.sub(lambda m: m.group(1) or "", text)
    text = _ANY_TAG.sub("", text)
    text = _BOLD_ITALIC.sub("", text)
    text = _HEADING.sub(lambda m: m.group(2), text)
    text = _LIST_MARK.sub("", text)
    text = _MAGIC.sub("", text)
    text = html.unescape(text)
    text = _TRAILING_SPACE.sub("", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


def _drop_balanced(text: str, open_: str, close: str) -> str:
    """Remove every outermost open_ ... close span, counting nesting; an unclosed span runs to the end."""
    out, depth, start, i = [], 0, 0, 0
    while True:
        j_open = text.find(open_, i)
        j_close = text.find(close, i)
        if j_open == -1 and (j_close == -1 or depth == 0):
            break
        if j_open != -1 and (j_close == -1 or j_open < j_close):
            if depth == 0:
                out.append(text[start:j_open])
            depth += 1
            i = j_open + len(open_)
        else:
            if depth > 0:
                depth -= 1
                if depth == 0:
                    start = j_close + len(close)
            i = j_close + len(close)
    if depth == 0:
        out.append(text[start:])
    return "".join(out)


def _drop_links(text: str) -> str:
    """Remove [[File:...]], [[Category:...]], interlanguage links, with links nested in captions."""
    out, pos = [], 0
    for m in _NON_TEXT_LINK.finditer(text):
        if m.start() < pos:
            continue
        out.append(text[pos : m.start()])
        depth, i = 0, m.start()
        while i < len(text):
            if text.startswith("[[", i):
                depth, i = depth + 1, i + 2
            elif text.startswith("]]", i):
                depth, i = depth - 1, i + 2
                if depth == 0:
                    break
            else:
                i += 1
        pos = i
    out.append(text[pos:])
    return "".join(out)
