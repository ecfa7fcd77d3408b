"""Reader defects found in review, one case each: non-text codec labels, Parquet streaming, malformed media,
compressed files in local HF folders, HF ids across tasks, exact single-file paths, the resume fingerprint."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from data_pipeline.config import ConfigError, StageConfig, InputConfig, OutputConfig
from data_pipeline.sources.decode import decode_payload
from data_pipeline.sources.hf_local import LocalHFDatasetSource
from data_pipeline.sources.jsonl import JsonlSource
from data_pipeline.sources.parquet import ParquetSource
from data_pipeline.stages.base import check_or_record_state
from data_pipeline.stages.filter import FilterStage
from data_pipeline.stages.inputs import build_readers, input_listing
from test_sources import balanced, counts

LATIN1 = "Café crème, naïve façade: déjà vu à Zürich. ".encode("latin-1") * 20


@pytest.mark.parametrize("label", ["base64", "hex", "rot13", "zlib", "bz2", "uu", "quopri"])
def test_charset_label_naming_a_non_text_codec_does_not_crash(label):
    text, charset = decode_payload(LATIN1, f"text/html; charset={label}")
    assert "Café crème" in text and charset not in (label, f"{label}_codec")
    meta = f'<meta charset="{label}">'.encode() + LATIN1
    assert "déjà vu" in decode_payload(meta)[0]


def _rows(n, start=0):
    return [{"text": f"parquet row {i} " * 3, "id": f"r{i}"} for i in range(start, start + n)]


def test_parquet_streams_record_batches(tmp_path, monkeypatch):
    pq.write_table(pa.Table.from_pylist(_rows(3000)), tmp_path / "a.parquet", row_group_size=500)
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: (_ for _ in ()).throw(AssertionError("whole table read")))
    reader = ParquetSource(str(tmp_path))
    docs = list(reader.run())
    assert [d.id for d in docs] == [f"r{i}" for i in range(3000)]
    assert balanced(reader, docs)


BAD_MEDIA = ["a string", [1, 2], [{"no_such_field": 1}], {"id": "x"}]


def _media_rows():
    good = [{"text": "a good document", "id": "g0"},
            {"text": "with media", "id": "g1", "media": [{"id": "m", "type": 0, "url": "http://x/y.png"}]}]
    return good, [{"text": f"bad media {i}", "id": f"b{i}", "media": m} for i, m in enumerate(BAD_MEDIA)]


def test_media_of_the_wrong_shape_is_counted_in_jsonl(tmp_path):
    good, bad = _media_rows()
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in good + bad) + "\n")
    reader = JsonlSource(str(tmp_path))
    docs = list(reader.run())
    assert sorted(d.id for d in docs) == ["g0", "g1"]
    assert counts(reader)["error:invalid_media_field"] == len(BAD_MEDIA) and balanced(reader, docs)


def test_media_of_the_wrong_shape_is_counted_in_hf(tmp_path):
    # an Arrow column has one type: media given as strings (a common export mistake) in every bad row
    rows = [{"text": "a good document", "id": "g0", "media": None}] + \
           [{"text": f"bad media {i}", "id": f"b{i}", "media": json.dumps(m)} for i, m in enumerate(BAD_MEDIA)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    reader = LocalHFDatasetSource(str(tmp_path))
    docs = list(reader.run())
    assert [d.id for d in docs] == ["g0"]
    assert counts(reader)["error:invalid_media_field"] == len(BAD_MEDIA) and balanced(reader, docs)


def test_media_of_the_wrong_shape_is_counted_in_parquet(tmp_path):
    rows = [{"text": "a good document", "id": "g0", "media": None}] + \
           [{"text": f"bad media {i}", "id": f"b{i}", "media": [i, i + 1]} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    reader = ParquetSource(str(tmp_path))
    docs = list(reader.run())
    assert [d.id for d in docs] == ["g0"]
    assert counts(reader)["error:invalid_media_field"] == 3 and balanced(reader, docs)


def test_local_hf_folder_reads_compressed_data_files(tmp_path):
    rows = _rows(30)
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows[:10]) + "\n")
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        ("\n".join(json.dumps(r) for r in rows[10:20]) + "\n").encode()))
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows[20:]) + "\n")
    docs = list(LocalHFDatasetSource(str(tmp_path)).run())
    assert sorted(d.id for d in docs) == sorted(r["id"] for r in rows)


def test_hf_default_ids_are_unique_across_tasks(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": f"row {i}"}) for i in range(10)) + "\n")
    ids = [d.id for rank in range(3) for d in LocalHFDatasetSource(str(tmp_path)).run(rank=rank, world_size=3)]
    assert len(ids) == 10 and len(set(ids)) == 10


def _cfg(paths, out, fmt="jsonl"):
    return StageConfig(input=InputConfig(paths=[str(p) for p in paths], format=fmt),
                       output=OutputConfig(dir=str(out))).validate()


def test_a_file_path_reads_that_file_only(tmp_path):
    for name in ("00.jsonl", "100.jsonl", "x00.jsonl"):
        (tmp_path / name).write_text(json.dumps({"text": f"from {name}", "id": name}) + "\n")
    cfg = _cfg([tmp_path / "00.jsonl"], tmp_path / "out")
    (reader,) = build_readers(cfg)
    assert [d.id for d in reader.run()] == ["00.jsonl"]
    assert [name for _, name, _ in input_listing(cfg)] == ["00.jsonl"]


def test_resume_over_changed_input_is_refused(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    (data / "a.jsonl").write_text(json.dumps({"text": "one"}) + "\n")
    cfg = _cfg([data], tmp_path / "out")
    pipelines = FilterStage().pipelines(cfg)
    check_or_record_state(cfg, pipelines, input_listing(cfg))
    check_or_record_state(cfg, pipelines, input_listing(cfg))  # same input: resumes
    (data / "a.jsonl").write_text(json.dumps({"text": "one, edited"}) + "\n")
    with pytest.raises(ConfigError, match="input files"):
        check_or_record_state(cfg, pipelines, input_listing(cfg))
    (data / "a.jsonl").write_text(json.dumps({"text": "one"}) + "\n")
    (data / "b.jsonl").write_text(json.dumps({"text": "two"}) + "\n")
    with pytest.raises(ConfigError, match="input files"):
        check_or_record_state(cfg, pipelines, input_listing(cfg))
