"""Fuzz: a crawl with a few hundred corrupted records among good ones. Every bad record is counted with its
reason, the stage never crashes, and every good document comes out."""

from __future__ import annotations

import gzip
import io
import json
import random

import pytest
import zstandard
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from stage_helpers import cli, manifest

WORDS = ("river mountain library window garden letter morning market harbour teacher bridge village "
         "summer winter station doctor kitchen silver forest castle island museum painter sailor").split()
RUSSIAN = "Съешь же ещё этих мягких французских булок, да выпей же чаю. "


def _page(rng: random.Random, n: int) -> str:
    paragraphs = []
    for p in range(5):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(4)]
        paragraphs.append(f"<p>Page {n} paragraph {p}. " + " ".join(sentences) + "</p>")
    return f"<html><head><title>Page {n}</title></head><body><article>{''.join(paragraphs)}</article></body></html>"


def _member(writer_records) -> bytes:
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    for rec in writer_records(writer):
        writer.write_record(rec)
    return buf.getvalue()


def _response(writer, n: int, payload: bytes, content_type: str, status: str = "200 OK"):
    headers = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.1")
    return writer.create_warc_record(f"http://fuzz.example/{n}", "response", payload=io.BytesIO(payload),
                                     http_headers=headers, warc_headers_dict=_fixed(n))


def _fixed(n: int) -> dict:
    """Fixed id and date, so the crawl (and where each cut falls) is the same bytes on every run."""
    return {"WARC-Record-ID": f"<urn:fuzz:{n}>", "WARC-Date": "2024-01-01T00:00:00Z"}


def build_fuzz_crawl(folder, seed: int = 0) -> tuple[set[str], dict[str, int]]:
    """Write fuzz.warc.gz and empty.warc.gz; return (ids of good pages, expected errors by reason)."""
    rng = random.Random(seed)
    good, errors, removed = set(), {}, {}
    members = []
    kinds = ["good"] * 150 + ["binary"] * 40 + ["request"] * 30 + ["image"] * 30 + ["garbage"] * 30 + \
            ["truncated"] * 30 + ["too_large"] * 10 + ["legacy_charset"] * 20 + ["wrong_charset"] * 20
    rng.shuffle(kinds)
    for n, kind in enumerate(kinds):
        if kind in ("good", "legacy_charset", "wrong_charset"):
            html = _page(rng, n)
            if kind == "good":
                payload, ctype = html.encode(), "text/html; charset=utf-8"
            elif kind == "legacy_charset":  # undeclared KOI8-R: must be detected, not mangled
                html = html.replace("</article>", f"<p>{RUSSIAN * 6}</p></article>")
                payload, ctype = html.encode("koi8-r"), "text/html"
            else:  # declared ISO-8859-1, really UTF-8 with Cyrillic
                html = html.replace("</article>", f"<p>{RUSSIAN * 6}</p></article>")
                payload, ctype = html.encode(), "text/html; charset=iso-8859-1"
            members.append(_member(lambda w: [_response(w, n, payload, ctype)]))
            good.add(f"<urn:fuzz:{n}>")
        elif kind == "binary":
            blob = bytes(rng.randrange(256) for _ in range(3000))
            members.append(_member(lambda w: [_response(w, n, blob, "text/html")]))
            errors["binary_payload"] = errors.get("binary_payload", 0) + 1
        elif kind == "request":
            members.append(_member(lambda w: [w.create_warc_record(
                f"http://fuzz.example/{n}", "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n"), warc_headers_dict=_fixed(n))]))
            removed["not_http_response"] = removed.get("not_http_response", 0) + 1
        elif kind == "image":
            members.append(_member(lambda w: [_response(w, n, b"\x89PNG\r\n\x1a\n" + bytes(200), "image/png")]))
            removed["not_html"] = removed.get("not_html", 0) + 1
        elif kind == "too_large":
            big = ("<html><body>" + "<p>large page</p>" * 20000 + "</body></html>").encode()  # 340 kB
            members.append(_member(lambda w: [_response(w, n, big, "text/html")]))
            errors["too_large"] = errors.get("too_large", 0) + 1
        elif kind == "garbage":
            members.append(bytes(rng.randrange(32, 127) for _ in range(rng.randrange(10, 400))))
        elif kind == "truncated":
            whole = _member(lambda w: [_response(w, n, _page(rng, n).encode(), "text/html")])
            members.append(whole[: rng.randrange(20, len(whole) - 20)])
    # Broken framing (garbage, a cut gzip member) is one error per stretch: the reader cannot tell where
    # one broken record ends and an adjacent one begins, and resynchronises at the next good record.
    # A restart point inside a cut member can fail on its own, so a stretch may count more than once: never
    # more than the broken records it holds.
    broken = [k in ("garbage", "truncated") for k in kinds]
    stretches = sum(1 for i, b in enumerate(broken) if b and (i == 0 or not broken[i - 1]))
    errors["corrupt_record"] = (stretches, sum(broken))
    (folder / "fuzz.warc.gz").write_bytes(b"".join(members))
    (folder / "empty.warc.gz").write_bytes(b"")
    errors["empty_file"] = 1
    return good, errors, removed


def read_documents(out) -> list[dict]:
    docs = []
    for path in sorted((out / "documents").glob("*.jsonl.zst")):
        text = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes()).decode()
        docs += [json.loads(line) for line in text.splitlines()]
    return docs


def test_fuzzed_crawl_counts_every_bad_record_and_keeps_every_good_one(tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    good, errors, removed = build_fuzz_crawl(crawl)
    out = tmp_path / "out"
    cli(f"input.paths=[{crawl}]", "filters=none", "executor.tasks=2", "input.max_record_bytes=200000",
        f"output.dir={out}")
    m = manifest(out)
    assert m["balanced"]
    docs = read_documents(out)
    assert {d["id"] for d in docs} == good and len(docs) == len(good)
    low, high = errors.pop("corrupt_record")
    got = dict(m["errors"]["reader"])
    assert low <= got.pop("corrupt_record") <= high
    assert got == errors
    assert m["removed"] == {"reader": dict(sorted(removed.items()))}
    cyrillic = [d for d in docs if "булок" in d["text"]]
    assert len(cyrillic) == 40  # undeclared KOI8-R and mislabelled UTF-8 both decoded correctly


def test_a_100_mb_page_is_an_error_not_a_crash(tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    with open(crawl / "big.warc", "wb") as f:
        writer = WARCWriter(f, gzip=False)
        huge = b"<html><body>" + b"<p>x</p>" * (100 * 1024 * 1024 // 8) + b"</body></html>"
        writer.write_record(_response(writer, 0, huge, "text/html"))
        del huge
        writer.write_record(_response(writer, 1, _page(random.Random(1), 1).encode(), "text/html"))
    out = tmp_path / "out"
    cli(f"input.paths=[{crawl}]", "filters=none", f"output.dir={out}")
    m = manifest(out)
    assert m["errors"] == {"reader": {"too_large": 1}} and m["kept"]["documents"] == 1 and m["balanced"]
