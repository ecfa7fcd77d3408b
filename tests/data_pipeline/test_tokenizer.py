"""Lossless BPE training, Megatron .bin/.idx encoding read back with megatron's IndexedDataset, shard checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import zstandard
from stage_helpers import cli as stage_cli
from tokenizers import Tokenizer

from data_pipeline.samples import fetch
from data_pipeline.tokenizer import TokenizerTrainConfig, train_tokenizer
from data_pipeline.tokenizer.__main__ import main as cli
from data_pipeline.tokenizer.documents import ReadStats, iter_documents, iter_records
from data_pipeline.tokenizer.train import draw_sample, training_units
from data_pipeline.wikipedia import iter_wikipedia_pages

# Byte-exact round trips need text that sentencepiece can keep: everything but U+2581, its space symbol.
TRICKY = ("  two leading spaces\t\ttabs\r\nCRLF\n\n\n   three blank lines, trailing   \n"
          "NFKC would change these: \uff21 \u2460 \ufb01 e\u0301 \u00e9 | CJK \u6f22\u5b57 | emoji \U0001f600\U0001f3fd "
          "| digits 3.14159 2024-11-23 | zero\u200bwidth | nbsp\u00a0| control \x07\x00 |    indented code\n")
# odd but valid code points: noncharacters, private use, replacement char, BOM mid-text, unassigned, RTL marks
ODD = ("\ufffd\uffff\ufffe \ue000\U000f0000 \ufeffmid-BOM \U000e0001\u0378 \u202eRTL\u202c \x1b[0m "
       "\x7f "
       "\r\r\n\n\t \u3000ideographic\u3000space \u0928\u092e\u0938\u094d\u0924\u0947 \U0001f469\u200d\U0001f4bb "
       "</s> <s> <pad> <unk> <0x41> literal specials\n")


@pytest.fixture(scope="session")
def sample_paths():
    return fetch(["enwiki", "botchan"])


@pytest.fixture(scope="session")
def wiki_docs(sample_paths):
    return [p["text"] for p in iter_wikipedia_pages(sample_paths["enwiki"])]


@pytest.fixture(scope="session")
def botchan_model(sample_paths, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "botchan"
    return train_tokenizer([sample_paths["botchan"]], 1000, out, TokenizerTrainConfig(num_threads=1))


@pytest.fixture(scope="session")
def wiki_model(wiki_docs, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "wiki"
    return train_tokenizer(wiki_docs, 4096, out, TokenizerTrainConfig(num_threads=2))


# the settings before pieces could span words and scripts (still a config choice)
WORD_SETTINGS = dict(split_by_whitespace=True, split_by_unicode_script=True)


@pytest.fixture(scope="session")
def wiki_model_words(wiki_docs, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "wiki_words"
    return train_tokenizer(wiki_docs, 4096, out, TokenizerTrainConfig(num_threads=2, **WORD_SETTINGS))


def _roundtrip(sp, text: str) -> None:
    decoded = sp.decode(sp.encode(text))
    assert decoded.encode("utf-8") == text.encode("utf-8")


def test_botchan_lossless_and_bytes_per_token(sample_paths, botchan_model):
    raw = sample_paths["botchan"].read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw  # BOM and CRLF must survive
    text = raw.decode("utf-8")
    sp = spm.SentencePieceProcessor(model_file=str(botchan_model))
    assert sp.vocab_size() == 1000
    ids = sp.encode(text)
    assert sp.decode(ids).encode("utf-8") == raw
    bytes_per_token = len(raw) / len(ids)
    print(f"\nbotchan, vocab 1000, lossless BPE: {bytes_per_token:.3f} bytes/token")
    assert 2.3 < bytes_per_token < 2.9  # 2.66 with newlines kept in training units (lossy defaults: about 3.0)
    manifest = json.loads(botchan_model.with_suffix(".json").read_text())
    assert manifest["special_ids"] == {"unk": 0, "bos": 1, "eos": 2, "pad": 3, "eod": 2}
    assert sp.eos_id() == 2 and sp.id_to_piece(2) == "</s>" and sp.pad_id() == 3


def test_wiki_lossless(wiki_docs, wiki_model):
    sp = spm.SentencePieceProcessor(model_file=str(wiki_model))
    for doc in wiki_docs:
        _roundtrip(sp, doc)
    _roundtrip(sp, "\n\n".join(wiki_docs))


@pytest.mark.parametrize("model", ["botchan_model", "wiki_model", "wiki_model_words"])
def test_whitespace_unicode_digits_lossless(model, request):
    sp = spm.SentencePieceProcessor(model_file=str(request.getfixturevalue(model)))
    _roundtrip(sp, TRICKY)
    _roundtrip(sp, ODD)
    assert sp.unk_id() not in sp.encode(TRICKY + ODD)  # byte fallback, never <unk>
    ids = sp.encode("year 20241123")
    assert [sp.decode([i]) for i in ids[-8:]] == list("20241123")  # digits split (as pieces or byte pieces)


def test_training_is_reproducible(sample_paths, botchan_model, tmp_path):
    again = train_tokenizer([sample_paths["botchan"]], 1000, tmp_path / "again", TokenizerTrainConfig(num_threads=1))
    assert again.read_bytes() == botchan_model.read_bytes()


def test_train_rejects_tiny_vocab(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        train_tokenizer(["some text"], 100, tmp_path / "t")
    with pytest.raises(ValueError, match=r"vocab_size=1000 is more than 9 bytes.*lower train.vocab_size"):
        train_tokenizer(["some text"], 1000, tmp_path / "t")


@pytest.fixture(scope="session")
def wiki_shard(wiki_docs, wiki_model, tmp_path_factory):
    from data_pipeline.tokenizer import encode_documents

    prefix = tmp_path_factory.mktemp("shards") / "enwiki_text_document"
    docs = wiki_docs[:40] + [""] + wiki_docs[40:]  # an empty document is counted and skipped
    stats = encode_documents(docs, wiki_model, prefix)
    return prefix, stats


def test_encoded_shard_reads_back_with_megatron(wiki_docs, wiki_model, wiki_shard):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    prefix, stats = wiki_shard
    sp = spm.SentencePieceProcessor(model_file=str(wiki_model))
    expected = [sp.encode(d) + [sp.eos_id()] for d in wiki_docs]
    assert stats["documents"] == 106 and stats["empty_skipped"] == 1
    assert stats["tokens"] == sum(map(len, expected)) and stats["dtype"] == "uint16"
    assert 3.0 < stats["bytes_per_token"] < 4.0
    ds = IndexedDataset(str(prefix))
    assert len(ds) == 106 and list(ds.document_indices) == list(range(107))
    for i, ids in enumerate(expected):
        got = ds[i]
        assert got.dtype == np.uint16 and got.tolist() == ids
        assert got[-1] == 2 and 2 not in got[:-1].tolist()  # exactly one EOD, at the end
    assert sp.decode(ds[0][:-1].tolist()) == wiki_docs[0]


def test_truncated_or_mismatched_shards_are_detected(wiki_shard, tmp_path):
    from data_pipeline.tokenizer import IndexedDatasetError, validate_indexed_dataset

    prefix, stats = wiki_shard
    info = validate_indexed_dataset(prefix)
    assert (info.documents, info.tokens) == (106, stats["tokens"])

    def copy(name):
        for ext in (".bin", ".idx"):
            shutil.copy(f"{prefix}{ext}", tmp_path / f"{name}{ext}")
        return tmp_path / name

    bad = copy("short_bin")
    with open(f"{bad}.bin", "r+b") as f:
        f.truncate(f.seek(0, 2) - 2)
    with pytest.raises(IndexedDatasetError, match=r"short_bin\.bin is truncated.*python -m data_pipeline.tokenizer"):
        validate_indexed_dataset(bad)

    bad = copy("short_idx")
    with open(f"{bad}.idx", "r+b") as f:
        f.truncate(f.seek(0, 2) - 8)
    with pytest.raises(IndexedDatasetError, match=r"short_idx\.idx is truncated or corrupt"):
        validate_indexed_dataset(bad)

    bad = copy("header_only")
    with open(f"{bad}.idx", "r+b") as f:
        f.truncate(20)
    with pytest.raises(IndexedDatasetError, match=r"header_only\.idx is truncated"):
        validate_indexed_dataset(bad)

    bad = copy("mismatch")
    with open(f"{bad}.bin", "ab") as f:
        f.write(b"\0" * 64)
    with pytest.raises(IndexedDatasetError, match=r"mismatch\.bin is too long"):
        validate_indexed_dataset(bad)

    bad = copy("no_bin")
    (tmp_path / "no_bin.bin").unlink()
    with pytest.raises(IndexedDatasetError, match=r"no_bin\.bin is missing"):
        validate_indexed_dataset(bad)

    with pytest.raises(IndexedDatasetError, match="without .bin/.idx"):
        validate_indexed_dataset(f"{prefix}.bin")


def test_cli_train_and_encode_jsonl_with_corrupt_records(tmp_path, sample_paths, capsys):
    jsonl = tmp_path / "docs.jsonl"
    botchan = sample_paths["botchan"].read_bytes().decode("utf-8")
    botchan_lines = botchan.split("\r\n")
    paragraphs = ["\r\n".join(botchan_lines[i:i + 10]) for i in range(0, 3000, 10)]
    lines = [json.dumps({"text": p}) for p in paragraphs]
    lines[5] = '{"text": "broken'  # not JSON
    lines[9] = json.dumps({"content": "no text field"})
    lines[11] = json.dumps({"text": 42})
    jsonl.write_text("\n".join(lines) + "\n")

    assert cli(["train", f"input.paths=[{jsonl}]", "train.vocab_size=600", f"output.prefix={tmp_path / 'tok'}",
                "train.num_threads=1"]) == 0
    out = capsys.readouterr().out
    assert "297 docs" in out and "skipped corrupt records: 3" in out

    assert cli(["encode", f"tokenizer={tmp_path / 'tok.model'}", f"input.paths=[{jsonl},{sample_paths['botchan']}]",
                f"output.prefix={tmp_path / 'mix'}"]) == 0
    out = capsys.readouterr().out
    assert "298 docs" in out and "3 corrupt records" in out and "bytes/token" in out

    assert cli(["check", str(tmp_path / "mix")]) == 0
    assert "ok " in capsys.readouterr().out
    assert cli(["check", str(tmp_path / "missing")]) == 1
    assert "missing.idx is missing" in capsys.readouterr().err
    # a wrong key or a missing output fails before any work, naming the key and the fix
    assert cli(["train", f"input.paths=[{jsonl}]", "train.vocab_sise=600", f"output.prefix={tmp_path / 't2'}"]) == 2
    err = capsys.readouterr().err
    assert "train.vocab_sise" in err and "Fix:" in err and "vocab_size" in err
    assert cli(["encode", f"tokenizer={tmp_path / 'tok.model'}", f"input.paths=[{jsonl}]"]) == 2
    assert "output.prefix: not set. Fix: pass output.prefix=PREFIX" in capsys.readouterr().err
    assert not (tmp_path / "t2.model").exists()


def test_sample_names_are_inputs(sample_paths):
    assert list(iter_documents(["botchan"])) == [sample_paths["botchan"].read_bytes().decode("utf-8")]
    titles_docs = list(iter_documents(["enwiki"]))
    assert len(titles_docs) == 106 and titles_docs[0].startswith("Anarchism is")


def test_txt_document_modes(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"first para\r\nline two\r\n\r\n\r\nsecond para\n \nthird\n")
    assert list(iter_documents([path])) == ["first para\r\nline two\r\n\r\n\r\nsecond para\n \nthird\n"]
    assert list(iter_documents([path], "paragraph")) == ["first para\r\nline two", "second para", "third\n"]
    stats = ReadStats()
    assert list(iter_documents([path], "line", stats=stats)) == [
        "first para\r", "line two\r", "\r", "\r", "second para", " ", "third"]
    assert stats.empty == 1
    path.write_bytes(b"caf\xe9")
    with pytest.raises(ValueError, match="not UTF-8.*iconv"):
        list(iter_documents([path]))
    with pytest.raises(FileNotFoundError, match="neither a file, a directory nor a sample name"):
        list(iter_documents([tmp_path / "nope.txt"]))


def _zst_lines(path) -> list[dict]:
    with zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True) as f:
        return [json.loads(line) for line in f.read().decode().splitlines()]


def test_reads_filter_stage_documents_dir_and_counts_a_truncated_shard(tmp_path, wiki_docs):
    """The filter stage's own output (documents/*.jsonl.zst) trains and encodes as is."""
    inp = tmp_path / "in"
    inp.mkdir()
    docs = wiki_docs[:60] + [TRICKY, ODD]
    for f in range(3):
        (inp / f"{f}.jsonl").write_text("".join(json.dumps({"id": f"{f}-{i}", "text": d}) + "\n"
                                                for i, d in enumerate(docs[f::3])))
    out = tmp_path / "stage"
    stage_cli("stage=filter", f"input.paths=[{inp}]", "input.format=jsonl", "filters=none", "executor.tasks=2",
              f"output.dir={out}", "progress=false")
    shards = sorted((out / "documents").glob("*.jsonl.zst"))
    assert len(shards) == 2
    kept = [r["text"] for p in shards for r in _zst_lines(p)]
    assert sorted(kept) == sorted(docs)  # filters=none keeps every document unchanged

    assert list(iter_documents([out / "documents"])) == kept  # files in sorted order, lines in order
    with pytest.raises(FileNotFoundError, match=r"a stage's output directory.*pass .*/documents"):
        list(iter_documents([out]))  # would mix in removed/
    tok = tmp_path / "tok"
    assert cli(["train", f"input.paths=[{out / 'documents'}]", "train.vocab_size=2000", f"output.prefix={tok}",
                "train.num_threads=1"]) == 0
    assert cli(["encode", f"tokenizer={tok}.model", f"input.paths=[{out / 'documents'}]",
                f"output.prefix={tmp_path / 'shard'}"]) == 0
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    sp = spm.SentencePieceProcessor(model_file=f"{tok}.model")
    ds = IndexedDataset(str(tmp_path / "shard"))
    assert len(ds) == len(kept)
    for i, text in enumerate(kept):
        assert sp.decode(ds[i][:-1].tolist()).encode() == text.encode()

    # a truncated .jsonl.zst: the records before the damage are read, the damage is counted, nothing crashes
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jsonl.zst").write_bytes(shards[0].read_bytes()[:-200])
    (broken / "b.jsonl.gz").write_bytes(__import__("gzip").compress(b'{"text": "gz doc"}\nnot json\n'))
    (broken / "c.jsonl").write_text('{"text": "plain doc"}\n')
    (broken / "notes.txt").write_text("not a shard: ignored in a directory")
    stats = ReadStats()
    got = list(iter_documents([broken], stats=stats))
    first = [r["text"] for r in _zst_lines(shards[0])]
    assert got[-2:] == ["gz doc", "plain doc"] and 0 < len(got) - 2 < len(first)
    assert got[:-2] == first[:len(got) - 2]
    assert stats.skipped == 2  # the truncated file and the line that is not JSON
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds no \.jsonl"):
        list(iter_documents([empty]))


def test_sample_is_uniform_over_shards_and_deterministic(tmp_path):
    """10 shards: the first 5 in one vocabulary, the last 5 in another; the sample draws from both in
    proportion, whatever the order of the inputs."""
    rng = np.random.default_rng(0)
    letters = {"a": list("abcdefghijklm"), "b": list("nopqrstuvwxyz")}  # two alphabets: two "languages"
    words = {k: ["".join(rng.choice(v, 6)) for _ in range(60)] for k, v in letters.items()}
    paths = []
    for s in range(10):
        lang = "a" if s < 5 else "b"
        path = tmp_path / f"shard{s}.jsonl"
        path.write_text("".join(json.dumps({"text": " ".join(rng.choice(words[lang], 30))}) + "\n"
                                for _ in range(200)))
        paths.append(path)
    records = list(iter_records(paths))
    total = sum(len(t.encode()) for _, _, t in records)
    sample = draw_sample(iter(records), total // 10, seed=7)
    assert sum(len(t.encode()) for t in sample) <= total // 10
    share_a = sum(t[0] in letters["a"] for t in sample) / len(sample)
    assert 180 <= len(sample) <= 200 and 0.4 < share_a < 0.6  # the first shards alone would give 1.0
    per_shard = {}
    for source, position, text in records:
        if text in sample:
            per_shard[source] = per_shard.get(source, 0) + 1
    assert len(per_shard) == 10 and min(per_shard.values()) >= 8  # every shard contributes (about 20 each)
    assert draw_sample(reversed(records), total // 10, seed=7) == sample  # order of the inputs does not matter
    assert draw_sample(iter(records), total // 10, seed=8) != sample
    assert len(draw_sample(iter(records), 0, seed=7)) == len(records)

    # end to end: a vocabulary learned from a tenth of the data knows both languages
    model = train_tokenizer(paths, 1000, tmp_path / "tok",
                            TokenizerTrainConfig(num_threads=1, sample_bytes=total // 10, seed=7))
    manifest = json.loads(model.with_suffix(".json").read_text())
    assert manifest["input_documents"] == 2000 and manifest["training_documents"] == len(sample)
    pieces = [p.split("\t")[0].lstrip("\u2581") for p in (tmp_path / "tok.vocab").read_text().splitlines()]
    words_learned = {k: sum(p in v for p in pieces) for k, v in words.items()}
    assert min(words_learned.values()) >= 20, words_learned  # whole words of both languages became pieces


def test_training_units_keep_newlines():
    doc = "line one\nline two is longer\n\n" + "x" * 50 + "\n\u6f22\u5b57\u6f22\u5b57\u6f22\u5b57"
    units = list(training_units(doc, 24))
    assert "".join(units) == doc and all(len(u.encode()) <= 24 for u in units)
    assert units[0] == "line one\n" and units[1] == "line two is longer\n\n"
    assert list(training_units(doc, 1000)) == [doc]
    assert list(training_units("\u6f22" * 20, 25)) == ["\u6f22" * 8, "\u6f22" * 8, "\u6f22" * 4]  # whole characters


def test_newline_is_learned_not_byte_fallback(wiki_model):
    sp = spm.SentencePieceProcessor(model_file=str(wiki_model))
    assert sp.encode("\n", out_type=str) == ["\n"]  # a piece, not <0x0A>
    assert any("\n" in sp.id_to_piece(i) and sp.id_to_piece(i) != "\n" for i in range(sp.vocab_size()))
    assert len(sp.encode("a.\n\nb")) < 5  # ".\n\n" or "\n\n" was learned
    for special, piece in ((sp.eos_id(), "</s>"), (sp.pad_id(), "<pad>")):
        assert sp.id_to_piece(special) == piece and sp.is_control(special)
    assert sp.eos_id() not in sp.encode("text </s> text")  # a literal "</s>" is text


@pytest.mark.parametrize("model", ["botchan_model", "wiki_model", "wiki_model_words"])
def test_hf_tokenizer_json_encodes_identically(model, request, sample_paths, wiki_docs):
    model = request.getfixturevalue(model)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    hf = Tokenizer.from_file(str(model.with_suffix(".tokenizer.json")))
    assert hf.get_vocab_size() == sp.vocab_size()
    # held out: wiki_model saw every enwiki article but none of botchan; botchan_model the reverse
    botchan = sample_paths["botchan"].read_bytes().decode()
    lines = botchan.split("\r\n")
    chunks = ["\r\n".join(lines[i:i + 5]) for i in range(0, len(lines), 5)]
    code = [Path(json.__file__).read_text(), Path(shutil.__file__).read_text()]  # Python: indentation runs, "(self", "):\n"
    texts = chunks + wiki_docs + code + [TRICKY, ODD, "", " ", "\n", "\r\n", "  \t ", "x" * 3000,
                                         "\U0001f600" * 5, "of the of the  of  the", "a \u2581 b\u2581\u2581c"]
    assert len(chunks) > 700
    for text in texts:
        ids = sp.encode(text)
        assert hf.encode(text, add_special_tokens=False).ids == ids, repr(text[:80])
        assert hf.decode(ids, skip_special_tokens=False) == sp.decode(ids)
    assert hf.encode("</s>", add_special_tokens=False).ids == sp.encode("</s>")
    assert hf.id_to_token(2) == "</s>" and hf.id_to_token(3) == "<pad>"


def test_documents_longer_than_a_file_name_are_text_not_paths(tmp_path):
    """train_tokenizer guesses whether its items are inputs or texts: a one-line document of 500 characters
    is text (os.stat on it fails with ENAMETOOLONG, which must not escape)."""
    rng = np.random.default_rng(1)
    docs = [" ".join("".join(rng.choice(list("abcdefghij"), 5)) for _ in range(100)) for _ in range(200)]
    model = train_tokenizer(docs, 400, tmp_path / "tok", TokenizerTrainConfig(num_threads=1))
    assert model.is_file()


def test_too_many_characters_for_the_vocabulary_names_the_fix(tmp_path):
    from data_pipeline.tokenizer.train import train_tokenizer

    text = "".join(chr(0x4E00 + i) for i in range(2000)) * 3  # 2,000 CJK characters, each frequent enough
    with pytest.raises(ValueError, match="raise vocab_size or lower character_coverage"):
        train_tokenizer([text, text[::-1]], 300, tmp_path / "tok")


def test_pieces_span_words_and_scripts_by_default(wiki_model, wiki_model_words, sample_paths):
    """The default (split_by_whitespace=False, split_by_unicode_script=False) learns pieces across spaces and
    between letters and punctuation; the word-bounded settings do not. Digits stay one per piece in both."""
    def pieces(model):
        sp = spm.SentencePieceProcessor(model_file=str(model))
        return sp, [sp.id_to_piece(i) for i in range(sp.vocab_size()) if sp.is_unused(i) is False]

    sp, span = pieces(wiki_model)
    sp_words, words = pieces(wiki_model_words)
    assert any("\u2581" in p.strip("\u2581") for p in span)  # e.g. "▁of▁the"
    assert not any("\u2581" in p[1:] and p.strip("\u2581") for p in words)  # a space only starts a piece
    assert any(p[0] in "(,." and p[-1].isalpha() for p in span if len(p) > 1)
    for model_sp in (sp, sp_words):
        assert all(len(model_sp.decode([i])) == 1 for i in model_sp.encode("20241123"))
    lines = sample_paths["botchan"].read_bytes().decode().split("\r\n")
    held = ["\r\n".join(lines[i:i + 5]) for i in range(0, len(lines), 5)]
    tokens = {name: sum(map(len, m.encode(held))) for name, m in (("span", sp), ("words", sp_words))}
    assert tokens["span"] < 0.98 * tokens["words"], tokens  # held out: 2.94 vs 2.82 bytes/token on the bench
    manifest = json.loads(wiki_model.with_suffix(".json").read_text())
    assert manifest["config"]["split_by_whitespace"] is False and manifest["config"]["sample_bytes"] == 250_000_000
    manifest = json.loads(wiki_model_words.with_suffix(".json").read_text())
    assert manifest["config"]["sample_bytes"] == 1_000_000_000


def test_sample_bytes_default_depends_on_the_mode():
    assert TokenizerTrainConfig().resolved_sample_bytes() == 250_000_000
    assert TokenizerTrainConfig(split_by_whitespace=True).resolved_sample_bytes() == 1_000_000_000
    assert TokenizerTrainConfig(sample_bytes=0).resolved_sample_bytes() == 0
    assert TokenizerTrainConfig(sample_bytes=123, split_by_whitespace=True).resolved_sample_bytes() == 123
    with pytest.raises(ValueError, match="max_piece_length=0"):
        TokenizerTrainConfig(max_piece_length=0).validate()


def test_memory_check_names_sample_bytes_and_the_fix(tmp_path, monkeypatch, capsys):
    """Pieces spanning words need ~40 bytes per sampled byte: training that cannot fit fails before
    sentencepiece starts, naming train.sample_bytes (with a size that fits) and the other ways out."""
    from data_pipeline.tokenizer import train as train_mod

    real_available = train_mod.available_memory
    rng = np.random.default_rng(1)
    docs = [" ".join("".join(rng.choice(list("abcdefghij"), 5)) for _ in range(100)) for _ in range(200)]  # 120 KB
    monkeypatch.setattr(train_mod, "available_memory", lambda: 2_000_000)  # 2 MB free
    with pytest.raises(ValueError, match=r"sample is 0\.1 MB .* \(4\.8 MB\), but 2\.0 MB is available; lower "
                                         r"train\.sample_bytes to 50000 or less.*train\.split_by_whitespace=true"):
        train_tokenizer(docs, 400, tmp_path / "a", TokenizerTrainConfig(num_threads=1))
    assert not (tmp_path / "a.model").exists()
    monkeypatch.setattr(train_mod, "available_memory", lambda: 40_000_000)  # 40 MB: a 1 MB sample fits
    with pytest.raises(ValueError, match=r"\(6\.2 GB\), but 40\.0 MB is available; lower train\.sample_bytes to 1000000 "):
        train_mod.check_training_memory(154_000_000, TokenizerTrainConfig(), available=40_000_000)
    train_tokenizer(docs, 400, tmp_path / "b", TokenizerTrainConfig(num_threads=1))  # 120 KB x 40 = 4.8 MB fits
    monkeypatch.setattr(train_mod, "available_memory", lambda: 2_000_000)
    train_tokenizer(docs, 400, tmp_path / "c", TokenizerTrainConfig(num_threads=1, check_memory=False))
    train_tokenizer(docs, 400, tmp_path / "d", TokenizerTrainConfig(num_threads=1, **WORD_SETTINGS))  # not checked
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    assert cli(["train", f"input.paths=[{jsonl}]", "train.vocab_size=400", f"output.prefix={tmp_path / 'e'}"]) == 1
    assert "lower train.sample_bytes" in capsys.readouterr().err
    assert real_available() is None or real_available() > 0
    with pytest.raises(ValueError, match=r"is available; or set train\.split_by_whitespace=true"):  # nothing fits
        train_mod.check_training_memory(1000, TokenizerTrainConfig(), available=10)
