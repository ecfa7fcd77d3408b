"""Input documents for tokenizer training and encoding: JSONL shards, directories of them, text files,
Wikipedia dumps, named samples.

One input, one rule:
  - a sample name ("enwiki", "botchan"): fetched with data_pipeline.samples, then read as below;
  - a directory: every ``*.jsonl``, ``*.jsonl.gz``, ``*.jsonl.zst`` file under it (recursively), in sorted
    order of their paths; so the filter and dedup stages' ``<output.dir>/documents/`` is an input as it is
    (``<output.dir>`` itself is refused: its ``removed/`` holds the removed documents);
  - ``*.jsonl``, ``*.jsonl.gz``, ``*.jsonl.zst`` (and ``.ndjson``): one JSON object per line, the document is its
    ``text`` field; a line that is not JSON or has no string ``text`` is counted in ``ReadStats.skipped`` and
    skipped, and so is a truncated or corrupt compressed file (the lines before the damage are kept); the
    first few are printed with their file and line;
  - ``*.xml``, ``*.xml.bz2``, ``*.bz2``: a MediaWiki dump, one document per article (redirects skipped);
  - ``*.txt`` (any other suffix too): the whole file is one document (``txt_mode="file"``, the default:
    nothing is cut, so nothing is lost), or one document per blank-line-separated block
    (``txt_mode="paragraph"``), or one per line (``txt_mode="line"``). Text is read byte-exact
    (``\\r\\n`` stays ``\\r\\n``, a BOM stays), and must be UTF-8.
Empty documents are counted in ``ReadStats.empty`` and skipped.

``iter_records`` also says where each document came from, ``(source, position)``: the file's path relative
to the input as given (its name for a file input) and the record's index in that file. The training sample
(train.py) hashes it, so the sample does not depend on where the data lies or on the order of the inputs.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

TXT_MODES = ("file", "paragraph", "line")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson")
_PARAGRAPH_BREAK = re.compile(r"(?:\r?\n)(?:[ \t]*\r?\n)+")
_REPORTED = 5  # corrupt records printed; the rest are only counted


@dataclass
class ReadStats:
    documents: int = 0
    empty: int = 0
    skipped: int = 0  # corrupt JSONL records and truncated/corrupt compressed files


def resolve_input(name: str | Path) -> list[tuple[Path, str]]:
    """The files of one input, each with its source name: a sample name becomes its fetched path, a directory
    its JSONL files (sorted), a file itself."""
    from data_pipeline.samples import REGISTRY, fetch

    if isinstance(name, str) and name in REGISTRY and not Path(name).exists():
        path = fetch([name])[name]
        return [(path, path.name)]
    path = Path(name)
    if path.is_dir():
        if (path / "documents").is_dir() and (path / "manifest.json").is_file():
            raise FileNotFoundError(f"input {path} is a stage's output directory (its removed/ holds the removed "
                                    f"documents); pass {path / 'documents'}")
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(JSONL_SUFFIXES))
        if not files:
            raise FileNotFoundError(f"input directory {path} holds no {'/'.join(JSONL_SUFFIXES)} files; pass a "
                                    "stage's documents/ directory or the files themselves")
        return [(p, str(p.relative_to(path))) for p in files]
    if not path.is_file():
        raise FileNotFoundError(
            f"input {str(name)!r} is neither a file, a directory nor a sample name; give a .txt/.jsonl[.gz|.zst]/"
            f".xml.bz2 path, a directory of .jsonl[.gz|.zst] files, or one of the samples {sorted(REGISTRY)}"
        )
    return [(path, path.name)]


def iter_records(
    inputs: Iterable[str | Path],
    txt_mode: str = "file",
    text_key: str = "text",
    stats: ReadStats | None = None,
) -> Iterator[tuple[str, int, str]]:
    """(source, position, text) of every non-empty document, inputs in the order given."""
    if txt_mode not in TXT_MODES:
        raise ValueError(f"txt_mode={txt_mode!r} is not one of {TXT_MODES}")
    stats = stats if stats is not None else ReadStats()
    for name in inputs:
        for path, source in resolve_input(name):
            for position, doc in _read(path, txt_mode, text_key, stats):
                if doc:
                    stats.documents += 1
                    yield source, position, doc
                else:
                    stats.empty += 1


def iter_documents(
    inputs: Iterable[str | Path],
    txt_mode: str = "file",
    text_key: str = "text",
    stats: ReadStats | None = None,
) -> Iterator[str]:
    return (doc for _, _, doc in iter_records(inputs, txt_mode, text_key, stats))


def _read(path: Path, txt_mode: str, text_key: str, stats: ReadStats) -> Iterator[tuple[int, str]]:
    name = path.name.lower()
    if name.endswith((".xml", ".xml.bz2", ".bz2", ".xml.gz")):
        from data_pipeline.wikipedia import iter_wikipedia_pages

        yield from enumerate(page["text"] for page in iter_wikipedia_pages(path))
    elif name.endswith(JSONL_SUFFIXES):
        yield from _read_jsonl(path, text_key, stats)
    else:
        text = _decode(path, path.read_bytes())
        if txt_mode == "file":
            yield 0, text
        elif txt_mode == "paragraph":
            yield from enumerate(_PARAGRAPH_BREAK.split(text))
        else:
            yield from enumerate(text.split("\n"))


def _open(path: Path):
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")
        # read_across_frames: a file of several zstd frames (concatenated writers) is read to its end
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True,
                                                                           closefd=True))
    return open(path, "rb")


def _skip(stats: ReadStats, where: str, why: str) -> None:
    stats.skipped += 1
    if stats.skipped <= _REPORTED:
        print(f"[documents] {where}: skipped {why}")


def _read_jsonl(path: Path, text_key: str, stats: ReadStats) -> Iterator[tuple[int, str]]:
    import zstandard

    lineno = 0
    try:
        with _open(path) as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    record = orjson.loads(raw)
                    text = record[text_key]
                    if not isinstance(text, str):
                        raise TypeError(f"{text_key!r} is {type(text).__name__}, not a string")
                except (ValueError, KeyError, TypeError, IndexError) as exc:
                    _skip(stats, f"{path}:{lineno}", f"a corrupt record ({type(exc).__name__}: {exc})")
                    continue
                yield lineno - 1, text
    except (EOFError, OSError, zlib.error, zstandard.ZstdError) as exc:
        _skip(stats, f"{path}", f"the rest of a truncated or corrupt file after line {lineno} "
                                f"({type(exc).__name__}: {exc}); re-create it with the stage that wrote it")


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path} is not UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 4]!r}); convert it first, "
            f"e.g. `iconv -f latin1 -t utf-8 {path} > {path.stem}.utf8{path.suffix}`"
        ) from None
