"""Input documents for tokenizer training and encoding: text files, JSONL, Wikipedia dumps, named samples.

One input, one rule:
  - a sample name ("enwiki", "botchan"): fetched with data_pipeline.samples, then read as below;
  - ``*.xml``, ``*.xml.bz2``, ``*.bz2``: a MediaWiki dump, one document per article (redirects skipped);
  - a folder: every file below it, in sorted order, read as below (the filter stage's ``documents/``);
  - ``*.jsonl``, ``*.jsonl.gz``, ``*.jsonl.zst``: one JSON object per line, the document is its ``text`` field; a line that
    is not JSON or has no string ``text`` is counted in ``ReadStats.skipped`` and skipped;
  - ``*.txt`` (any other suffix too): the whole file is one document (``txt_mode="file"``, the default:
    nothing is cut, so nothing is lost), or one document per blank-line-separated block
    (``txt_mode="paragraph"``), or one per line (``txt_mode="line"``). Text is read byte-exact
    (``\\r\\n`` stays ``\\r\\n``, a BOM stays), and must be UTF-8.
Empty documents are counted in ``ReadStats.empty`` and skipped.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

TXT_MODES = ("file", "paragraph", "line")
_PARAGRAPH_BREAK = re.compile(r"(?:\r?\n)(?:[ \t]*\r?\n)+")


@dataclass
class ReadStats:
    documents: int = 0
    empty: int = 0
    skipped: int = 0  # corrupt JSONL records


def resolve_input(name: str | Path) -> Path:
    """A sample name becomes its fetched path; anything else must be an existing file or folder."""
    from data_pipeline.samples import REGISTRY, fetch

    if isinstance(name, str) and name in REGISTRY and not Path(name).exists():
        return fetch([name])[name]
    path = Path(name)
    if not (path.is_file() or path.is_dir()):
        raise FileNotFoundError(
            f"input {str(name)!r} is neither a file, a folder nor a sample name; give a .txt/.jsonl/.xml.bz2 path "
            f"or one of the samples {sorted(REGISTRY)}"
        )
    return path


def iter_documents(
    inputs: Iterable[str | Path],
    txt_mode: str = "file",
    text_key: str = "text",
    stats: ReadStats | None = None,
) -> Iterator[str]:
    if txt_mode not in TXT_MODES:
        raise ValueError(f"txt_mode={txt_mode!r} is not one of {TXT_MODES}")
    stats = stats if stats is not None else ReadStats()
    for name in inputs:
        path = resolve_input(name)
        for doc in _read(path, txt_mode, text_key, stats):
            if doc:
                stats.documents += 1
                yield doc
            else:
                stats.empty += 1


def _read(path: Path, txt_mode: str, text_key: str, stats: ReadStats) -> Iterator[str]:
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            yield from _read(child, txt_mode, text_key, stats)
        return
    name = path.name.lower()
    if name.endswith((".xml", ".xml.bz2", ".bz2", ".xml.gz")):
        from data_pipeline.wikipedia import iter_wikipedia_pages

        yield from (page["text"] for page in iter_wikipedia_pages(path))
    elif name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson")):
        yield from _read_jsonl(path, text_key, stats)
    else:
        text = _decode(path, path.read_bytes())
        if txt_mode == "file":
            yield text
        elif txt_mode == "paragraph":
            yield from _PARAGRAPH_BREAK.split(text)
        else:
            yield from text.split("\n")


def _read_jsonl(path: Path, text_key: str, stats: ReadStats) -> Iterator[str]:
    if path.name.endswith(".zst"):
        import zstandard

        def opener(p, mode):  # zstandard's reader has no readline: buffer it
            return io.BufferedReader(zstandard.open(p, mode))
    else:
        opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                text = json.loads(raw)[text_key]
                if not isinstance(text, str):
                    raise TypeError(f"{text_key!r} is {type(text).__name__}, not a string")
            except (ValueError, KeyError, TypeError) as exc:
                stats.skipped += 1
                if stats.skipped <= 5:
                    print(f"[documents] {path}:{lineno}: skipped a corrupt record ({type(exc).__name__}: {exc})")
                continue
            yield text


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path} is not UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 4]!r}); convert it first, "
            f"e.g. `iconv -f latin1 -t utf-8 {path} > {path.stem}.utf8{path.suffix}`"
        ) from None
