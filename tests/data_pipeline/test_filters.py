"""Filters: offline language ID (accuracy on real multilingual pages), URL blocklist without network, link list,
local bad words, the shared word splitter (identical to datatrove's), feed extraction, config errors."""

from __future__ import annotations

import socket

import pytest
from datatrove.data import Document
from datatrove.utils.word_tokenizers import SpaCyTokenizer

from data_pipeline.config import ConfigError
from data_pipeline.extract import HtmlToText, feed_text
from data_pipeline.filters.badwords import LocalC4BadWordsFilter
from data_pipeline.filters.language import FastTextLanguageFilter
from data_pipeline.filters.links import LinkListFilter, normalize_url
from data_pipeline.filters.registry import build_filters
from data_pipeline.filters.url import OfflineURLFilter
from data_pipeline.filters.words import SharedSpacyWordTokenizer
from data_pipeline.sources.decode import DecodeError, decode_payload
from data_pipeline.sources.warc import WarcSource


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_language_id_accuracy_on_chardet_pages(chardet_pages, no_network):
    from tools.bench.langid_chardet import evaluate

    result = evaluate(chardet_pages)
    assert result["pages"] == 378
    assert result["accuracy"] >= 0.95, result["confusions"]
    assert result["per_language"]["hu"]["correct"] == 23 and result["per_language"]["ru"]["correct"] >= 105


def test_language_filter_thresholds_and_metadata(no_network):
    f = FastTextLanguageFilter({"en": 0.65, "fr": 0.9})
    en = Document(text="The quick brown fox jumps over the lazy dog near the river bank.", id="1")
    fr = Document(text="Le renard brun saute par-dessus le chien paresseux au bord de la rivière.", id="2")
    de = Document(text="Der schnelle braune Fuchs springt über den faulen Hund am Flussufer.", id="3")
    assert f.filter(en) is True and en.metadata["language"] == "en" and en.metadata["language_score"] > 0.65
    assert f.filter(de) == (False, "language_not_wanted") and de.metadata["language"] == "de"
    strict = FastTextLanguageFilter({"fr": 0.9999})
    assert strict.filter(fr) == (False, "language_score_below_threshold")
    with pytest.raises(ValueError, match="threshold"):
        FastTextLanguageFilter({"en": 1.5})


def test_url_filter_is_offline(no_network):
    f = OfflineURLFilter()
    assert f.filter(Document(text="x", id="1", metadata={"url": "https://www.iana.org/domains/example"})) is True
    assert f.filter(Document(text="x", id="2", metadata={"url": "http://pornhub.com/video"})) == (False, "domain")
    assert f.filter(Document(text="x", id="3")) is True  # no URL: kept and counted


def test_link_list_filter(tmp_path):
    links = tmp_path / "links.tsv"
    links.write_text("url\tscore\nhttps://www.Example.com/a/\t5\nhttp://example.com/b\t2\nhttp://example.com/b\t1\n")
    f = LinkListFilter(str(links), min_score=3)
    assert normalize_url("HTTPS://WWW.example.com:443/a/#frag") == "//example.com/a"
    assert f.filter(Document(text="x", id="1", metadata={"url": "http://example.com/a"})) is True
    assert f.filter(Document(text="x", id="2", metadata={"url": "http://example.com/b"})) == (False, "score_below_min")
    assert f.filter(Document(text="x", id="3", metadata={"url": "http://other.org/"})) == (False, "url_not_in_list")
    links.write_text("https://example.com/a\tfive\n")
    with pytest.raises(ValueError, match="line 1"):
        LinkListFilter(str(links))


def test_c4_badwords_needs_a_local_list(tmp_path):
    with pytest.raises(ValueError, match="local word list"):
        LocalC4BadWordsFilter()
    words = tmp_path / "words.txt"
    words.write_text("darn\nheck\n")
    f = LocalC4BadWordsFilter(words_file=str(words))
    assert f.filter(Document(text="Well, darn it.", id="1"))[0] is False
    assert f.filter(Document(text="A harmless darning needle.", id="2")) is True


def _sample_texts(pywb_warcs, chardet_pages) -> list[str]:
    extractor = HtmlToText()
    texts = [extractor.extract(d.text) for d in WarcSource(str(pywb_warcs)).run()]
    for path in sorted(p for p in chardet_pages.rglob("*") if p.is_file())[::6]:
        try:
            texts.append(extractor.extract(decode_payload(path.read_bytes())[0]))
        except DecodeError:
            pass
    return [t for t in texts if t]


def test_shared_splitter_equals_datatrove_spacy(pywb_warcs, chardet_pages):
    ours, reference = SharedSpacyWordTokenizer("en"), SpaCyTokenizer("en")
    texts = _sample_texts(pywb_warcs, chardet_pages)
    assert len(texts) > 80
    for text in texts:
        assert ours.word_tokenize(text) == reference.word_tokenize(text)
        assert ours.span_tokenize(text) == reference.span_tokenize(text)
        for line in text.splitlines()[:20]:
            assert ours.span_tokenize(line) == reference.span_tokenize(line)
            assert ours.sent_tokenize(line) == reference.sent_tokenize(line)


def test_fast_gopher_repetition_decides_like_datatrove(pywb_warcs, chardet_pages):
    import random

    from datatrove.pipeline.filters import GopherRepetitionFilter

    from data_pipeline.filters.repetition import FastGopherRepetitionFilter

    splitter = SharedSpacyWordTokenizer("en")
    reference, fast = GopherRepetitionFilter(language=splitter), FastGopherRepetitionFilter(language=splitter)
    rng = random.Random(0)
    vocab = "the a of river bank blue sky run jump ab c abc".split()
    texts = _sample_texts(pywb_warcs, chardet_pages) + [
        " ".join(rng.choice(vocab) for _ in range(rng.randrange(1, 300))) + "\n" * rng.randrange(3)
        for _ in range(400)]
    reasons = set()
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        assert fast.filter(doc) == reference.filter(doc), text[:200]
        reasons.add(str(reference.filter(doc)))
    assert len(reasons) >= 5  # kept, and several different removal reasons were exercised


def test_feed_text():
    rss = ('<?xml version="1.0" encoding="koi8-r"?><rss version="2.0"><channel><title>Новости</title>'
           '<item><title>Первая</title><description>&lt;p&gt;Текст &lt;b&gt;новости&lt;/b&gt;&lt;/p&gt;'
           '</description></item></channel></rss>')
    assert feed_text(rss) == "Новости\nПервая\nТекст новости"
    assert feed_text("<html><body>not a feed</body></html>") is None


@pytest.mark.parametrize("specs, message", [
    ([{"kind": "nope"}], "choose one of"),
    ([{"kind": "gopher_quality", "min_doc_word": 3}], "unknown parameter"),
    ([{"kind": "c4_badwords"}], "local word list"),
])
def test_filter_config_errors(specs, message):
    with pytest.raises(ConfigError, match=message):
        build_filters(specs)
