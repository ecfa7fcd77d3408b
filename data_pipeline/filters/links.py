"""Curated link list (the GPT-2 WebText recipe): keep documents whose URL is listed with a high enough score.

WebText kept pages linked from Reddit posts with at least 3 karma. The list is a TSV file, one ``URL<TAB>score``
per line (a header line ``url<TAB>score`` is allowed); a URL listed twice keeps its highest score. URLs are
compared after normalisation: scheme and host lower-cased, ``www.`` and default ports dropped, the fragment
and a trailing slash removed.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from datatrove.data import Document
from datatrove.io import get_datafolder
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter


def normalize_url(url: str) -> str:
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower().removeprefix("www.")
    if parts.port and parts.port not in (80, 443):
        host = f"{host}:{parts.port}"
    path = parts.path.rstrip("/")
    return urlunsplit(("", host, path, parts.query, ""))


def load_link_list(path: str) -> dict[str, float]:
    """Parse the TSV; a malformed line is a config error naming the file and line (checked before any work)."""
    folder, name = path.rsplit("/", 1) if "/" in path else (".", path)
    scores: dict[str, float] = {}
    with get_datafolder(folder).open(name, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\n\r")
            if not line.strip() or (line_no == 1 and line.lower().startswith("url\t")):
                continue
            fields = line.split("\t")
            try:
                url, score = fields[0], float(fields[1])
            except (IndexError, ValueError):
                raise ValueError(
                    f"link list {path}, line {line_no}: expected 'URL<TAB>score', got {line[:120]!r}. "
                    "Fix or delete that line."
                ) from None
            key = normalize_url(url)
            scores[key] = max(score, scores.get(key, float("-inf")))
    if not scores:
        raise ValueError(f"link list {path} has no 'URL<TAB>score' lines")
    return scores


class LinkListFilter(BaseFilter):
    """Keep a document iff its ``metadata["url"]`` is in the list with score >= ``min_score`` (WebText: 3)."""

    name = "🔗 Curated link list"

    def __init__(self, links_file: str, min_score: float = 3.0, exclusion_writer: DiskWriter = None):
        super().__init__(exclusion_writer)
        self.links_file = links_file
        self.min_score = min_score
        self.scores = load_link_list(links_file)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        url = doc.metadata.get("url")
        score = self.scores.get(normalize_url(url)) if url else None
        if score is None:
            return False, "url_not_in_list"
        doc.metadata["link_score"] = score
        if score < self.min_score:
            return False, "score_below_min"
        return True
