"""Benchmark: the fineweb filter preset vs the same datatrove blocks chained bare, side by side, one core.

    python -m tools.bench.filters [--repeats 3] [--scales 1,4,16]

Input (--input): the sample crawl (pywb WARCs, default) or chardet's multilingual pages, read and extracted by
the stage's own readers and extraction step (not timed). Each measurement runs both chains on the same documents in this one
process, alternating, best of ``--repeats``; MB/s counts the UTF-8 bytes of the text entering the chain.
Baseline: datatrove's blocks as they are (each splits words with its own spaCy call); ours: the same blocks
sharing one fast splitter (filters/words.py) and the faster Gopher repetition counts (filters/repetition.py).
URL and language filters are the same objects in both (datatrove's language block needs a download).
Reports: the four quality filters (Gopher repetition, Gopher quality, C4, FineWeb) chained, the full preset
(URL, language, the four), agreement of keep/remove decisions, and the time at 1x, 4x and 16x input.
"""

from __future__ import annotations

import argparse
import copy
import time

from datatrove.data import Document

from data_pipeline.extract import HtmlToText
from data_pipeline.filters.registry import build_filters
from data_pipeline.samples import fetch
from data_pipeline.sources.files import PageFilesSource
from data_pipeline.sources.warc import WarcSource

FINEWEB = [{"kind": "url"}, {"kind": "language", "languages": {"en": 0.65}}, {"kind": "gopher_repetition"},
           {"kind": "gopher_quality"}, {"kind": "c4_quality", "filter_no_terminal_punct": False},
           {"kind": "fineweb_quality"}]
QUALITY = FINEWEB[2:]
WARMUP = Document(text="Warm up. " * 60, id="warmup", metadata={"url": "https://example.org/"})


def sample_documents(which: str = "crawl") -> list[Document]:
    """crawl: the pywb sample WARCs (the sample crawl); pages: the chardet pages (multilingual); both."""
    paths = fetch(["pywb_warcs", "chardet_tests"])
    readers = []
    if which in ("crawl", "both"):
        readers.append(WarcSource(str(paths["pywb_warcs"])))
    if which in ("pages", "both"):
        readers.append(PageFilesSource(str(paths["chardet_tests"])))
    docs = []
    for reader in readers:
        docs += list(HtmlToText().run(reader.run()))
    return docs


def warmup_documents() -> list[Document]:
    """Other text than the timed crawl (English Wikipedia articles from the sample kit): the state of a task
    that has already processed some documents, as every task of a real crawl has after its first minutes."""
    from data_pipeline.wikipedia import iter_wikipedia_pages, wikitext_to_text

    pages = iter_wikipedia_pages(fetch(["enwiki"])["enwiki"])
    return [Document(text=wikitext_to_text(p["text"]), id=str(i), metadata={"url": "https://en.wikipedia.org/"})
            for i, p in enumerate(pages) if p.get("text")]


def run_chain(filters, docs) -> tuple[float, list]:
    """Time the chain over fresh copies of docs; return (seconds, per-doc decision: reason or 'kept')."""
    docs = [Document(text=d.text, id=d.id, metadata=dict(d.metadata)) for d in docs]
    decisions = []
    start = time.perf_counter()
    for doc in docs:
        outcome = "kept"
        for position, f in enumerate(filters):
            result = f.filter(doc)
            keep, reason = (result if isinstance(result, tuple) else (result, None))
            if not keep:
                outcome = f"filter {position}: {reason}"
                break
        decisions.append(outcome)
    return time.perf_counter() - start, decisions


def compare(specs, docs, repeats: int, label: str, warm: list[Document] | None = None) -> dict:
    mb = sum(len(d.text.encode()) for d in docs) / 1e6
    best = {"datatrove": float("inf"), "ours": float("inf")}
    decisions = {}
    for _ in range(repeats):
        for name, shared in (("datatrove", False), ("ours", True)):
            filters = build_filters(copy.deepcopy(specs), shared_words=shared)  # fresh: cold spaCy vocab
            run_chain(filters, [WARMUP])  # one-time loads (block lists, fastText model, spaCy) are not timed
            if warm:
                run_chain(filters, warm)  # steady state: the splitter has seen other English text
            seconds, decisions[name] = run_chain(filters, docs)
            best[name] = min(best[name], seconds)
    same = sum(a == b for a, b in zip(decisions["datatrove"], decisions["ours"])) / len(docs)
    row = {"label": label, "docs": len(docs), "MB": mb, "datatrove_MBps": mb / best["datatrove"],
           "ours_MBps": mb / best["ours"], "speedup": best["datatrove"] / best["ours"], "same_decisions": same,
           "datatrove_s": best["datatrove"], "ours_s": best["ours"]}
    print(f"{label:28s} {len(docs):6d} docs {mb:7.2f} MB | datatrove {row['datatrove_MBps']:6.2f} MB/s "
          f"({best['datatrove']:6.2f} s) | ours {row['ours_MBps']:6.2f} MB/s ({best['ours']:6.2f} s) | "
          f"x{row['speedup']:.2f} | identical decisions {100 * same:.2f}%", flush=True)
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scales", default="1,4,16")
    parser.add_argument("--input", choices=["crawl", "pages", "both"], default="crawl",
                        help="crawl: pywb sample WARCs (default); pages: chardet's multilingual pages")
    parser.add_argument("--warm", action="store_true", help="also time after 106 Wikipedia articles (slow)")
    args = parser.parse_args(argv)
    docs = sample_documents(args.input)
    print(f"{args.input} after extraction: {len(docs)} documents, "
          f"{sum(len(d.text.encode()) for d in docs) / 1e6:.2f} MB of text", flush=True)
    print("cold: fresh filters, nothing seen before the timed documents", flush=True)
    compare(QUALITY, docs, args.repeats, "4 quality filters, 1x")
    compare(FINEWEB, docs, args.repeats, "fineweb preset, 1x")
    if args.warm:
        warm = warmup_documents()
        print(f"warm: each chain first runs on {len(warm)} Wikipedia articles (untimed)", flush=True)
        compare(QUALITY, docs, args.repeats, "4 quality filters, 1x", warm)
        compare(FINEWEB, docs, args.repeats, "fineweb preset, 1x", warm)
    print("scaling (cold start, input repeated)", flush=True)
    for scale in (int(s) for s in args.scales.split(",")):
        compare(FINEWEB, docs * scale, 1, f"fineweb preset, {scale}x")


if __name__ == "__main__":
    main()
