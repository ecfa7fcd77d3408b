"""Readers on real and on broken input: every record is a document, removed with a reason, or an error."""

from __future__ import annotations

import gzip
import json

import pytest

from data_pipeline.sources.files import PageFilesSource
from data_pipeline.sources.hf_local import LocalHFDatasetSource
from data_pipeline.sources.jsonl import JsonlSource
from data_pipeline.sources.parquet import ParquetSource
from data_pipeline.sources.warc import WarcSource


def counts(reader) -> dict:
    stats = reader.stats.stats
    total = lambda v: v.total if hasattr(v, "total") else v  # noqa: E731
    return {k: total(v) for k, v in stats.items()}


def balanced(reader, docs) -> bool:
    c = counts(reader)
    out = sum(v for k, v in c.items() if k.startswith(("removed:", "error:")))
    return c["in"] == len(docs) + out


def test_iana_warc_keeps_html_responses(pywb_warcs):
    reader = WarcSource(str(pywb_warcs), glob_pattern="iana.warc.gz")
    docs = list(reader.run())
    c = counts(reader)
    assert c["in"] == 343  # every record of the 2014 iana.org crawl
    # 48 responses: 20 text/html (16 with status 200, 4 redirects), 28 scripts, styles, images
    assert len(docs) == 16
    assert c["removed:not_html"] == 28 and c["removed:http_status_not_2xx"] == 4
    assert c["removed:not_http_response"] == 343 - 48
    assert all(d.metadata["url"].startswith("http") and d.text.lstrip().startswith("<") for d in docs)
    assert balanced(reader, docs)


def test_all_pywb_warcs_including_malformed(pywb_warcs):
    reader = WarcSource(str(pywb_warcs))
    docs = list(reader.run())
    c = counts(reader)
    assert c["error:corrupt_record"] == 1  # example-bad.warc.gz.bad: one gzip member for all records
    assert balanced(reader, docs)
    # ARC records have no WARC-Record-ID: their id is the file and record position, stable across runs
    assert sorted(d.id for d in docs if ".arc" in d.id) == ["example.arc.gz@171", "example.arc@151"]


def test_truncated_gzip_keeps_records_before_the_cut(pywb_warcs, tmp_path):
    data = (pywb_warcs / "iana.warc.gz").read_bytes()
    (tmp_path / "cut.warc.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.warc.gz").write_bytes(b"")
    reader = WarcSource(str(tmp_path))
    docs = list(reader.run())
    c = counts(reader)
    assert 0 < len(docs) < 16
    assert c["error:truncated_record"] + c.get("error:corrupt_or_truncated_file", 0) == 1
    assert c["error:empty_file"] == 1
    assert balanced(reader, docs)


def test_jsonl_bad_lines_and_compression(tmp_path):
    good = [{"text": f"document {i}", "id": str(i)} for i in range(5)]
    lines = [json.dumps(good[0]), "{not json", json.dumps(good[1]), "[1, 2]", json.dumps({"id": "x"}),
             json.dumps({"text": "   "}), json.dumps(good[2])]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(d) for d in good[3:]) + "\n")
    import zstandard

    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(json.dumps(good[0]).encode() + b"\n"))
    full = gzip.compress(("\n".join(json.dumps(d) for d in good) + "\n").encode())
    (tmp_path / "d.jsonl.gz").write_bytes(full[: len(full) - 12])  # truncated gzip
    (tmp_path / "e.jsonl").write_bytes(b"")
    reader = JsonlSource(str(tmp_path))
    docs = list(reader.run())
    c = counts(reader)
    assert c["error:invalid_json"] == 1 and c["error:json_not_an_object"] == 1
    assert c["error:missing_text_field"] == 1 and c["removed:empty_text"] == 1
    assert c["error:corrupt_or_truncated_file"] == 1 and c["error:empty_file"] == 1
    assert [d.id for d in docs][:6] == ["0", "1", "2", "3", "4", "0"]
    assert balanced(reader, docs)


def test_parquet_and_unreadable_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["one doc", "two doc", None], "id": ["a", "b", "c"]}), tmp_path / "x.parquet")
    (tmp_path / "y.parquet").write_bytes(b"PAR1 this is not parquet")
    reader = ParquetSource(str(tmp_path))
    docs = list(reader.run())
    assert [d.text for d in docs] == ["one doc", "two doc"]
    c = counts(reader)
    assert c["error:missing_text_field"] == 1 and c["error:unreadable_parquet_file"] == 1
    assert balanced(reader, docs)


def test_local_hf_dataset_is_sharded_by_rank(tmp_path, monkeypatch):
    import datasets

    datasets.Dataset.from_dict({"text": [f"row {i}" for i in range(10)]}).save_to_disk(str(tmp_path / "ds"))
    shards = [[d.text for d in LocalHFDatasetSource(str(tmp_path / "ds")).run(rank=r, world_size=3)] for r in range(3)]
    assert sum(shards, []) == [f"row {i}" for i in range(10)]
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "part-0.jsonl").write_text("\n".join(json.dumps({"text": f"line {i}"}) for i in range(4)))
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert [d.text for d in LocalHFDatasetSource(str(tmp_path / "files")).run()] == [f"line {i}" for i in range(4)]
    with pytest.raises(FileNotFoundError, match="nothing is downloaded from the hub"):
        LocalHFDatasetSource(str(tmp_path / "missing"))


def test_page_files_reader_on_chardet_corpus(chardet_pages):
    reader = PageFilesSource(str(chardet_pages))
    docs = list(reader.run())
    c = counts(reader)
    assert c["in"] == 426 and len(docs) == 425 and c["error:binary_payload"] == 1
    hungarian = [d for d in docs if "hungarian" in d.id]
    assert len(hungarian) == 23 and all("ő" in d.text or "ű" in d.text or "á" in d.text for d in hungarian)
