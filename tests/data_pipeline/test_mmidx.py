"""Our numpy writer of Megatron's .bin/.idx (data_pipeline/tokenizer/mmidx.py) against megatron-core's own
IndexedDatasetBuilder, byte for byte (uint16 and int32 tokens, empty datasets, merges with empty parts), and
stage=tokenize's encode and merge steps against the megatron builder path they replaced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from datatrove.data import Document

from data_pipeline.samples import fetch
from data_pipeline.tokenizer import TokenizerTrainConfig, train_tokenizer
from data_pipeline.tokenizer import mmidx

megatron_ds = pytest.importorskip("megatron.core.datasets.indexed_dataset")


def _docs(rng, n: int, vocab: int, eod: int = 2) -> list[list[int]]:
    return [rng.integers(3, vocab, size=int(rng.integers(0, 300))).tolist() + [eod] for _ in range(n)]


def _megatron_write(prefix: Path, docs: list[list[int]], dtype) -> None:
    builder = megatron_ds.IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    for ids in docs:
        builder.add_document(np.asarray(ids, dtype=dtype), [len(ids)])
    builder.finalize(f"{prefix}.idx")


def _same_files(a: Path, b: Path) -> None:
    for suffix in (".bin", ".idx"):
        assert Path(f"{a}{suffix}").read_bytes() == Path(f"{b}{suffix}").read_bytes(), suffix


@pytest.mark.parametrize("vocab", [4096, 65499, 65500, 70000, 250_000])
def test_dtype_and_codes_are_megatrons(vocab):
    DType = megatron_ds.DType
    assert mmidx.optimal_dtype(vocab) is DType.optimal_dtype(vocab)
    for code, dtype in mmidx.DTYPE_CODES.items():
        assert DType.code_from_dtype(dtype) == code == mmidx.code_from_dtype(dtype)
        assert DType.dtype_from_code(code) is dtype is mmidx.dtype_from_code(code)
    assert mmidx.INDEX_HEADER == megatron_ds._INDEX_HEADER


@pytest.mark.parametrize("vocab,n", [(4096, 300), (70_000, 200), (4096, 0)])
def test_writer_is_byte_identical_to_indexed_dataset_builder(tmp_path, vocab, n):
    """uint16 (vocab < 65,500), int32 (above, with ids past 65,535) and a dataset of no documents (a (split,
    source) that only met empty ones), written in uneven batches."""
    rng = np.random.default_rng(vocab + n)
    docs = _docs(rng, n, vocab)
    if n:
        docs[5] = [2]  # an empty text: just the EOD
    dtype = mmidx.optimal_dtype(vocab)
    _megatron_write(tmp_path / "megatron", docs, dtype)
    writer = mmidx.TokenShardWriter(tmp_path / "ours", dtype)
    cuts = [0, 1, 2, 50, 51, 180, n]
    for a, b in zip(cuts, cuts[1:]):
        writer.add_documents(docs[a:b])
    assert writer.finalize() == str(tmp_path / "ours")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["megatron.bin", "megatron.idx", "ours.bin", "ours.idx"]
    _same_files(tmp_path / "ours", tmp_path / "megatron")
    if n:  # megatron cannot memory-map an empty .bin, its own builder's or ours (the stage writes none)
        ds = megatron_ds.IndexedDataset(str(tmp_path / "ours"))
        assert len(ds) == n and ds.index.dtype is dtype
        for i in (0, 5, n - 1):
            assert ds[i].tolist() == docs[i]
    if vocab > 65535 and n:
        assert max(max(d) for d in docs) > 65535
    from data_pipeline.tokenizer import validate_indexed_dataset

    info = validate_indexed_dataset(tmp_path / "ours")
    assert (info.documents, info.tokens, info.dtype) == (n, sum(map(len, docs)), dtype)


@pytest.mark.parametrize("vocab", [4096, 70_000])
def test_merge_is_byte_identical_to_add_index(tmp_path, vocab):
    rng = np.random.default_rng(7)
    dtype = mmidx.optimal_dtype(vocab)
    parts = []
    for i, n in enumerate([40, 0, 1, 25, 0]):  # empty parts among them (a task that met no such document)
        prefix = tmp_path / f"part-{i}"
        _megatron_write(prefix, _docs(rng, n, vocab), dtype)
        parts.append(str(prefix))
    builder = megatron_ds.IndexedDatasetBuilder(f"{tmp_path / 'megatron'}.bin", dtype=dtype)
    for prefix in parts:
        builder.add_index(prefix)
    builder.finalize(f"{tmp_path / 'megatron'}.idx")
    documents, tokens = mmidx.merge_shards(parts, tmp_path / "ours", dtype)
    _same_files(tmp_path / "ours", tmp_path / "megatron")
    ds = megatron_ds.IndexedDataset(str(tmp_path / "ours"))
    assert (documents, tokens) == (len(ds), int(ds.sequence_lengths.sum())) == (66, tokens)
    mmidx.merge_shards([], tmp_path / "none", dtype)
    _megatron_write(tmp_path / "none-megatron", [], dtype)
    _same_files(tmp_path / "none", tmp_path / "none-megatron")
    with pytest.raises(ValueError, match="holds"):
        mmidx.merge_shards(parts, tmp_path / "wrong", np.int32 if dtype is np.uint16 else np.uint16)
    assert not list(tmp_path.glob(".wrong*"))  # no temporary files left behind


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    words = fetch(["botchan"])["botchan"].read_text().split()
    docs = [" ".join(words[i:i + 300]) for i in range(0, len(words), 300)]
    return train_tokenizer(docs, 600, tmp_path_factory.mktemp("tok") / "small", TokenizerTrainConfig(num_threads=1),
                           files=False), docs


def _documents(texts: list[str]) -> list[Document]:
    keys = [("train", "books"), ("train", "wiki"), ("valid", "books"), ("train", "books")]
    out = []
    for i, text in enumerate(texts):
        split, source = keys[i % len(keys)]
        meta = {"mix": {"split": split, "source": source}} if i % 7 else {}  # no metadata.mix: train/documents
        out.append(Document(text="" if i % 11 == 3 else text, id=str(i), metadata=meta))
    return out


@pytest.mark.parametrize("vocab_over_65500", [False, True])
def test_encode_and_merge_steps_equal_the_megatron_builder_path(small_model, tmp_path, monkeypatch,
                                                                vocab_over_65500):
    """Two encode tasks (small batches, so many batch boundaries; interleaved (split, source) keys; empty
    texts; documents without metadata.mix), then the merge: byte for byte what per-document ``sp.encode`` +
    megatron's IndexedDatasetBuilder (add_document, then add_index per task) gives. With the dtype forced to
    int32, as a vocabulary over 65,500 gives."""
    from data_pipeline.mix.tokenize import Encode, Merge

    model, texts = small_model
    dtype = np.int32 if vocab_over_65500 else np.uint16
    if vocab_over_65500:
        monkeypatch.setattr(mmidx, "optimal_dtype", lambda vocab: np.int32)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    docs = _documents(texts)
    work, out = tmp_path / "work", tmp_path / "out"
    shards = [docs[0::2], docs[1::2]]
    stats = []
    for rank, shard in enumerate(shards):
        step = Encode(str(work), str(model), batch_bytes=3000, batch_documents=5)
        list(step.run(iter(shard), rank, 2))
        assert step.outputs_ok(rank)
        stats.append(step.stats.stats)
    merge = Merge(str(work), str(out), str(model), 2)
    list(merge.run(None, 0, 1))

    expected: dict[tuple[str, str], list[list[list[int]]]] = {}
    for rank, shard in enumerate(shards):
        for doc in shard:
            if not doc.text:
                continue
            mix = doc.metadata.get("mix", {})
            key = (mix.get("split", "train"), mix.get("source", "documents"))
            per_task = expected.setdefault(key, [[], []])
            per_task[rank].append(sp.encode(doc.text) + [sp.eos_id()])
    assert len(expected) == 4
    blend = json.loads((out / "blend.json").read_text())
    for (split, source), per_task in expected.items():
        ref = tmp_path / "ref" / split / source
        ref.parent.mkdir(parents=True, exist_ok=True)
        task_prefixes = []
        for rank, docs_of_task in enumerate(per_task):
            if docs_of_task:
                _megatron_write(Path(f"{ref}-{rank}"), docs_of_task, dtype)
                task_prefixes.append(f"{ref}-{rank}")
                _same_files(work / split / f"{source}-{rank:05d}", Path(f"{ref}-{rank}"))
        builder = megatron_ds.IndexedDatasetBuilder(f"{ref}.bin", dtype=dtype)
        for prefix in task_prefixes:
            builder.add_index(prefix)
        builder.finalize(f"{ref}.idx")
        final = out / split / f"{source}_text_document"
        _same_files(final, ref)
        meta = json.loads(Path(f"{final}.json").read_text())
        tokens = sum(len(d) for task in per_task for d in task)
        assert meta["documents"] == sum(map(len, per_task)) and meta["tokens"] == tokens
        assert meta["dtype"] == np.dtype(dtype).name and len(meta["tokenizer_sha256"]) == 64
        assert blend[split][blend[split].index(str(final)) - 1] == tokens
        encoded = sum(s[f"tokenize_tokens.{split}.{source}"].total for s in stats if
                      f"tokenize_tokens.{split}.{source}" in s)
        assert encoded == tokens
    empty = sum(1 for d in docs if not d.text)
    assert sum(s["dropped_empty"].total for s in stats) == empty
    assert sum(s["tokenize_kept"].total for s in stats) == len(docs) - empty
    assert sum(s["tokenize_documents"].total for s in stats) == len(docs)


def test_a_failed_encode_task_leaves_no_files_and_is_redone(small_model, tmp_path):
    from data_pipeline.mix.tokenize import Encode

    model, texts = small_model

    def broken():
        yield from _documents(texts[:20])
        raise OSError("disk gone")

    step = Encode(str(tmp_path / "work"), str(model), batch_bytes=2000)
    with pytest.raises(OSError, match="disk gone"):
        list(step.run(broken(), 0, 1))
    assert not [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
    assert not step.outputs_ok(0)


def test_encode_tasks_import_neither_torch_nor_megatron(small_model, tmp_path):
    """The start-up cost that dominated the stage: an encode task and the merge must not import them."""
    model, _ = small_model
    code = f"""
import sys
from datatrove.data import Document
from data_pipeline.mix.tokenize import Encode, Merge
docs = [Document(text="some text " * 50, id=str(i), metadata={{"mix": {{"split": "train", "source": "s"}}}})
        for i in range(10)]
list(Encode({str(tmp_path / 'w')!r}, {str(model)!r}).run(iter(docs), 0, 1))
list(Merge({str(tmp_path / 'w')!r}, {str(tmp_path / 'o')!r}, {str(model)!r}, 1).run(None, 0, 1))
from data_pipeline.tokenizer import validate_indexed_dataset
validate_indexed_dataset({str(tmp_path / 'o' / 'train' / 's_text_document')!r})
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "megatron"))
assert not bad, bad
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
