"""The sample-data kit: small, pinned, checksummed public samples for the quickstart and the tests.

Every sample is a file (or a folder) that ships inside a published package: a wheel or sdist on the Python
package index, or a Debian binary package (.deb). We fetch it with the ordinary client, ``pip download
--no-deps`` of one exact archive or ``apt-get download NAME=VERSION``, so the kit works wherever ``pip
install`` / ``apt-get install`` work (mirrors and proxies included) and needs no other network access. The
archive's sha256 and the member's sha256 are both checked; the package is never installed. A .deb is
unpacked in Python (ar archive, then its data.tar.*), so dpkg is not needed; off Debian, a .deb obtained
by hand is supplied with ``--deb FILE`` (or placed in ``<cache>/debs/``).

    python -m data_pipeline.samples fetch                 # all samples into $SLURMTRAIN_CACHE or .cache/samples
    python -m data_pipeline.samples fetch enwiki --cache-dir /tmp/cache
    python -m data_pipeline.samples fetch python_docs --deb python3.11-doc_3.11.2-6+deb12u9_all.deb
    python -m data_pipeline.samples list

Adding a sample is one ``SampleSpec`` in ``REGISTRY``. ``member`` is a path inside the archive
(relative to the sdist's top folder ``<name>-<version>/``, to the wheel root, or to the root of the
.deb's file system); a member ending in ``/`` is a whole folder, and its ``sha256`` is then
``manifest_sha256`` of the files below it (only those ending in one of ``suffixes``, when given).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SampleSpec:
    """One sample: which archive (on the package index, or a Debian package), and which member of it."""

    package: str
    version: str
    archive: str  # the exact file name: wheel, sdist, or .deb (<package>_<version without epoch>_<arch>.deb)
    archive_sha256: str
    member: str  # file path, or folder path ending in "/", inside the archive
    sha256: str  # of the file, or manifest_sha256 of the folder
    description: str = ""
    suffixes: tuple[str, ...] = ()  # a folder member: keep only files whose names end so (empty: all)

    @property
    def is_deb(self) -> bool:
        return self.archive.endswith(".deb")

    @property
    def is_sdist(self) -> bool:
        return not self.archive.endswith((".whl", ".deb"))

    @property
    def is_dir(self) -> bool:
        return self.member.endswith("/")

    @property
    def cached_name(self) -> str:
        return Path(self.member.rstrip("/")).name


# Wheels are platform-specific; we pin one file and ask pip for exactly that platform so every
# machine (x86, ARM, macOS) downloads the same bytes.
_GENSIM_WHEEL = "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"

REGISTRY: dict[str, SampleSpec] = {
    "enwiki": SampleSpec(
        package="gensim",
        version="4.4.0",
        archive=_GENSIM_WHEEL,
        archive_sha256="91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
        member="gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
        sha256="a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d",
        description="English Wikipedia XML dump excerpt (206 pages, 106 articles + 100 redirects, 6.1 MB XML)",
    ),
    "botchan": SampleSpec(
        package="sentencepiece",
        version="0.2.3",
        archive="sentencepiece-0.2.3.tar.gz",
        archive_sha256="21618ad31f0453a1ebf5ec58defed99758d54af0b670546ecac639ddd8b86fbd",
        member="test/botchan.txt",
        sha256="464bd5300c24fce16fcc4555d4231a57632caae4d0090ad6aa92854a3b227ba7",
        description="Natsume Soseki's Botchan, English translation (Project Gutenberg), 279 kB, CRLF lines",
    ),
    "pywb_warcs": SampleSpec(
        package="pywb",
        version="2.10.0",
        archive="pywb-2.10.0.tar.gz",
        archive_sha256="5ae43c9b2a5321e39b9c8e16538bfbc0146eeb6fe26713232e45378b774a1a96",
        member="sample_archive/warcs/",
        sha256="edfa99edd4cd1c70ee0745c151efe69f4b05eed86bac2b99933e626e7d9a6e83",
        description="real web crawl: iana.org 2014 (343 WARC records) plus small WARC/ARC variants, one malformed",
    ),
    "chardet_tests": SampleSpec(
        package="chardet",
        version="5.2.0",
        archive="chardet-5.2.0.tar.gz",
        archive_sha256="1b3b6ff479a8c414bc3fa2c0852995695c4a026dcd6d0633b2dd092ca39c1cf7",
        member="tests/",
        sha256="12937c129961eaf4b5363687f13e2aae97db00ac64819874972a6a3575f6c9b3",
        description="426 real web pages and feeds in about 30 languages and legacy encodings, one folder per encoding",
    ),
    # English HTML pages (2,465 together) from Debian 12 "bookworm" documentation packages: architecture "all", so
    # the same bytes on every machine. Only the .html pages are kept (no stylesheets, scripts, images, sources).
    "python_docs": SampleSpec(
        package="python3.11-doc",
        version="3.11.2-6+deb12u9",
        archive="python3.11-doc_3.11.2-6+deb12u9_all.deb",
        archive_sha256="5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be",
        member="usr/share/doc/python3.11/html/",
        sha256="0a83a79482d49f0c5a80da43c5efd5a631003204855e1cf72b373a26640b4c89",
        suffixes=(".html",),
        description="Python 3.11 documentation (Sphinx): 530 English HTML pages, 50.7 MB; .deb 12.6 MB",
    ),
    "postgres_docs": SampleSpec(
        package="postgresql-doc-15",
        version="15.20-0+deb12u1",
        archive="postgresql-doc-15_15.20-0+deb12u1_all.deb",
        archive_sha256="4c44bf2c599f208b3f46454a6cf7a72e25ec46ff74d37b59dd31ad76b00eebb7",
        member="usr/share/doc/postgresql-doc-15/html/",
        sha256="cfe38586806ad63b7642b11cfcfaacd2518b318a2e43fc7f488770abf62eaf70",
        suffixes=(".html",),
        description="PostgreSQL 15 manual (DocBook): 1,169 English HTML pages, 16.1 MB; .deb 2.1 MB",
    ),
    "sqlite_docs": SampleSpec(
        package="sqlite3-doc",
        version="3.40.1-2+deb12u2",
        archive="sqlite3-doc_3.40.1-2+deb12u2_all.deb",
        archive_sha256="466e30d7066e2641fa13e56bc662a2ad521b8cc9c17dde9c9dac3d4f105e32f2",
        member="usr/share/doc/sqlite3/",
        sha256="c912fb54a9889c67648835a7d398a65c6810032fccb495c04e2462f52a56bf4a",
        suffixes=(".html",),
        description="SQLite 3.40 documentation (its web site pages): 766 English HTML pages, 21.6 MB; .deb 7.5 MB",
    ),
}


class SampleError(RuntimeError):
    """A sample could not be fetched or failed verification; the message says what to do."""


def default_cache_dir() -> Path:
    env = os.environ.get("SLURMTRAIN_CACHE")
    return Path(env) / "samples" if env else REPO_ROOT / ".cache" / "samples"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_sha256(folder: Path) -> str:
    """sha256 over the sorted lines "<sha256 of file>  <path relative to folder, '/'-separated>\\n"."""
    lines = sorted(
        f"{file_sha256(p)}  {p.relative_to(folder).as_posix()}\n"
        for p in folder.rglob("*")
        if p.is_file()
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def member_sha256(path: Path) -> str:
    return manifest_sha256(path) if path.is_dir() else file_sha256(path)


def fetch(names: list[str] | None = None, cache_dir: Path | None = None, debs: list[Path] = ()) -> dict[str, Path]:
    """Fetch the named samples (all by default) into cache_dir; return name -> path of the file/folder.

    Idempotent: a cached sample whose checksum verifies is returned without touching the network.
    ``debs``: .deb files obtained by hand (each must be the pinned file of a Debian sample; it is copied to
    ``<cache_dir>/debs/`` and used instead of ``apt-get download``).
    """
    names = list(REGISTRY) if not names else list(names)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise SampleError(f"unknown sample(s) {unknown}; known samples: {sorted(REGISTRY)}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        _supply_deb(Path(deb), cache_dir)
    return {name: _fetch_one(name, REGISTRY[name], cache_dir) for name in names}


def _supply_deb(deb: Path, cache_dir: Path) -> None:
    """Copy a hand-supplied .deb to <cache_dir>/debs/<pinned archive name> if its sha256 is a pinned one."""
    if not deb.is_file():
        raise SampleError(f"--deb {deb}: no such file")
    got = file_sha256(deb)
    specs = [s for s in REGISTRY.values() if s.is_deb and s.archive_sha256 == got]
    if not specs:
        pinned = "; ".join(f"{n}: {s.package}={s.version} ({s.archive}, sha256 {s.archive_sha256})"
                           for n, s in REGISTRY.items() if s.is_deb)
        raise SampleError(f"--deb {deb} (sha256 {got}) is not the pinned .deb of any sample; the pinned ones "
                          f"are: {pinned}. Get exactly that version (Debian's snapshot archive keeps them all).")
    target = cache_dir / "debs" / specs[0].archive
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and file_sha256(target) == got:
        return
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copyfile(deb, partial)
    os.replace(partial, target)


def _fetch_one(name: str, spec: SampleSpec, cache_dir: Path) -> Path:
    final = cache_dir / name / spec.cached_name
    if final.exists():
        if member_sha256(final) == spec.sha256:
            return final
        print(f"[samples] cached {final} fails its checksum; fetching it again", file=sys.stderr)
        _remove(final)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=cache_dir) as tmp:
        tmp = Path(tmp)
        supplied = cache_dir / "debs" / spec.archive
        if spec.is_deb and supplied.exists():
            archive = supplied
        elif spec.is_deb:
            archive = _apt_download(name, spec, tmp / "download", cache_dir)
        else:
            archive = _pip_download(spec, tmp / "download")
        got = file_sha256(archive)
        if got != spec.archive_sha256:
            if archive == supplied:
                fix = (f"This .deb in the cache is not the pinned build: delete it, or replace it with the pinned "
                       f"{spec.package}={spec.version}.")
            elif spec.is_deb:
                fix = ("apt (a mirror or another repository in your sources) served different bytes for this pinned "
                       f"package; point apt at a Debian source, supply the pinned .deb by hand ({_by_hand(name, spec, cache_dir)}), "
                       "or update REGISTRY in data_pipeline/samples.py if the pin was deliberately changed.")
            else:
                fix = ("The package index (or a mirror / --find-links in your pip config) served different bytes "
                       "for this pinned file; point pip at the Python package index itself (drop the PIP_INDEX_URL / "
                       "--find-links override) or update REGISTRY in data_pipeline/samples.py if the pin was deliberately changed.")
            raise SampleError(f"sample {name!r}: {archive.name} has sha256 {got}, expected {spec.archive_sha256}. {fix}")
        extracted = _extract(spec, archive, tmp / "member")
        got = member_sha256(extracted)
        if got != spec.sha256:
            raise SampleError(
                f"sample {name!r}: member {spec.member} of {spec.archive} has sha256 {got}, expected "
                f"{spec.sha256}. Fix the REGISTRY entry in data_pipeline/samples.py (member path or sha256)."
            )
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(extracted, final)  # atomic: same filesystem, readers see all or nothing
        except OSError:
            # a concurrent fetch placed the same folder first (a file would just have been replaced)
            if not (final.exists() and member_sha256(final) == spec.sha256):
                raise
    return final


def _pip_download(spec: SampleSpec, dest: Path) -> Path:
    dest.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--dest", str(dest)]
    if spec.is_sdist:
        # pip prepares the sdist's metadata; reuse this environment's setuptools first (seconds), and
        # fall back to an isolated build environment (about a minute) if the sdist needs another backend.
        attempts = [cmd + ["--no-binary", ":all:", "--no-build-isolation"], cmd + ["--no-binary", ":all:"]]
    else:
        attempts = [cmd + ["--only-binary", ":all:", *_wheel_target(spec.archive)]]
    requirement = f"{spec.package}=={spec.version}"
    errors = []
    for attempt in attempts:
        proc = subprocess.run(attempt + [requirement], capture_output=True, text=True)
        path = dest / spec.archive
        if proc.returncode == 0 and path.exists():
            return path
        errors.append((proc.returncode, (proc.stdout + proc.stderr).strip()[-2000:]))
    rc, tail = errors[-1]
    got = sorted(p.name for p in dest.iterdir())
    raise SampleError(
        f"could not download {spec.archive} ({requirement}) with pip (exit {rc}; got {got}). "
        "Check that pip can reach the package index from this machine (proxy, PIP_INDEX_URL, "
        "--find-links), e.g. `python -m pip download --no-deps "
        f"{requirement}`.\npip said:\n{tail}"
    )


_apt_updated = False  # `apt-get update` is run at most once per process, and only as root


def _apt_download(name: str, spec: SampleSpec, dest: Path, cache_dir: Path) -> Path:
    """``apt-get download <package>=<version>`` into dest; return the .deb. Errors say what to do."""
    global _apt_updated
    requirement = f"{spec.package}={spec.version}"
    by_hand = _by_hand(name, spec, cache_dir)
    if shutil.which("apt-get") is None:
        raise SampleError(f"sample {name!r} is the Debian package {requirement} and apt-get is not on this "
                          f"machine (not Debian-based?). Supply the .deb by hand: {by_hand}.")
    dest.mkdir(parents=True)
    while True:
        proc = subprocess.run(["apt-get", "download", "-q", requirement], cwd=dest, capture_output=True, text=True)
        debs = sorted(dest.glob("*.deb"))
        if proc.returncode == 0 and len(debs) == 1:
            return debs[0]
        said = (proc.stdout + proc.stderr).strip()[-2000:]
        has_lists = _apt_has_lists()
        # lists older than the pin (an image built before the pinned security update) are refreshed the same way
        stale = has_lists and spec.version not in _apt_versions(spec.package)
        if has_lists and not stale:
            break
        if os.geteuid() == 0 and not _apt_updated:
            _apt_updated = True
            why = "lists do not serve the pinned version" if stale else "has no package lists"
            print(f"[samples] apt {why}; running `apt-get update` once (we are root)", file=sys.stderr)
            update = subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True)
            if update.returncode == 0 and _apt_has_lists():
                continue
            if stale:
                break
            said = (update.stdout + update.stderr).strip()[-2000:]
            raise SampleError(f"sample {name!r}: apt has no package lists, even after `apt-get update` (run here "
                              f"as root, exit {update.returncode}). Check that the apt sources (/etc/apt/sources.list, "
                              f"/etc/apt/sources.list.d/) name a Debian source this machine can reach, or supply the "
                              f".deb by hand: {by_hand}.\napt-get update said:\n{said}")
        if stale:
            break
        raise SampleError(f"sample {name!r}: apt has no package lists, so `apt-get download {requirement}` cannot "
                          f"work. Run `sudo apt-get update` (or supply the .deb by hand: {by_hand}).")
    served = _apt_versions(spec.package)
    if spec.version in served:
        problem = (f"`apt-get download {requirement}` failed (exit {proc.returncode}) although apt lists that "
                   "version: check that this machine can reach its apt sources (proxy?)")
    elif served:
        problem = (f"the pinned version {requirement} is no longer served by your apt sources (they serve "
                   f"{', '.join(served)}; if the lists are old, `sudo apt-get update` may bring it); supply the "
                   f"pinned .deb by hand: {by_hand}; or, to move the pin, set version, archive and both sha256 of "
                   "this sample in data_pipeline/samples.py")
    else:
        problem = (f"apt's package lists know no package {spec.package!r} (this sample is pinned to Debian 12 "
                   f"\"bookworm\"); if the lists are old, run `sudo apt-get update`; otherwise supply the .deb by "
                   f"hand: {by_hand}")
    raise SampleError(f"sample {name!r}: {problem}.\napt-get said:\n{said}")


def _apt_has_lists() -> bool:
    proc = subprocess.run(["apt-get", "indextargets", "--format", "$(FILENAME)", "Created-By: Packages"],
                          capture_output=True, text=True)
    return proc.returncode == 0 and any(Path(line).exists() for line in proc.stdout.split())


def _apt_versions(package: str) -> list[str]:
    proc = subprocess.run(["apt-cache", "madison", package], capture_output=True, text=True)
    rows = [line.split("|") for line in proc.stdout.splitlines()]
    return list(dict.fromkeys(row[1].strip() for row in rows if len(row) >= 3 and row[0].strip() == package))


def _by_hand(name: str, spec: SampleSpec, cache_dir: Path) -> str:
    return (f"get {spec.archive} (Debian package {spec.package} version {spec.version}, sha256 "
            f"{spec.archive_sha256}; Debian's snapshot archive keeps every published version) and run "
            f"`python -m data_pipeline.samples fetch {name} --deb FILE`, or put it at "
            f"{cache_dir / 'debs' / spec.archive}")


def _wheel_target(archive: str) -> list[str]:
    """pip options that select exactly this wheel file on any machine."""
    _name, _ver, python, abi, platforms = archive[: -len(".whl")].split("-")
    opts = ["--python-version", python.removeprefix("cp").removeprefix("py"), "--abi", abi]
    opts += ["--implementation", python[:2]]
    for platform in platforms.split("."):
        opts += ["--platform", platform]
    return opts


def _extract(spec: SampleSpec, archive: Path, dest: Path) -> Path:
    """Extract the member (file or folder) to dest/<basename>; return that path."""
    dest.mkdir(parents=True)
    out = dest / spec.cached_name
    prefix = spec.member
    if spec.is_sdist:
        prefix = f"{archive.name.removesuffix('.tar.gz').removesuffix('.zip')}/{spec.member}"
    found = 0
    for name, open_member in _archive_files(spec, archive):
        rel = _member_relpath(name, prefix, spec.is_dir)
        if rel is None or (spec.is_dir and spec.suffixes and not rel.endswith(spec.suffixes)):
            continue
        target = out / rel if spec.is_dir else out
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member() as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        found += 1
    if not found:
        how = "`dpkg-deb -c`" if spec.is_deb else "`unzip -l` or `tar tzf`"
        raise SampleError(
            f"{archive.name} has no member {prefix!r}{f' with a name ending in {spec.suffixes}' if spec.suffixes else ''}; "
            f"fix the member path of this sample in data_pipeline/samples.py (list the archive with {how})."
        )
    return out


def _archive_files(spec: SampleSpec, archive: Path):
    """Yield (name, opener) for every regular file of the archive, in archive order (read each before the next)."""
    if spec.is_deb:
        with _deb_data_tar(archive) as tar:
            for info in tar:
                if info.isfile():
                    yield info.name.removeprefix("./"), lambda info=info: tar.extractfile(info)
    elif spec.is_sdist:
        with tarfile.open(archive) as tar:
            for info in tar:
                if info.isfile():
                    yield info.name, lambda info=info: tar.extractfile(info)
    else:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, lambda info=info: zf.open(info)


def _deb_data_tar(deb: Path) -> tarfile.TarFile:
    """The file-system tar of a .deb: an ar archive whose member data.tar.xz (or .gz, .zst) we open as a stream."""
    bad = f"{deb} is not a readable Debian package ({{}}); delete it and fetch again"
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise SampleError(bad.format("no ar archive header"))
        while True:
            header = f.read(60)
            if len(header) < 60 or header[58:60] != b"`\n":
                raise SampleError(bad.format("no data.tar member"))
            member, size = header[:16].decode("ascii", "replace").strip().rstrip("/"), int(header[48:58])
            if member.startswith("data.tar"):
                data = f.read(size)
                break
            f.seek(size + size % 2, os.SEEK_CUR)
    if member.endswith(".zst"):
        import zstandard

        return tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)), mode="r|")
    return tarfile.open(fileobj=io.BytesIO(data), mode="r|*")


def _member_relpath(name: str, prefix: str, is_dir: bool) -> str | None:
    if is_dir:
        if not name.startswith(prefix) or ".." in Path(name).parts:
            return None
        return name[len(prefix):] or None
    return "" if name == prefix else None


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_pipeline.samples", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download and verify samples (all by default)")
    p_fetch.add_argument("names", nargs="*", help=f"sample names, from: {', '.join(REGISTRY)}")
    p_fetch.add_argument("--cache-dir", type=Path, default=None,
                         help="default: $SLURMTRAIN_CACHE/samples or <repo>/.cache/samples")
    p_fetch.add_argument("--deb", type=Path, action="append", default=[], metavar="FILE",
                         help="a Debian sample's pinned .deb, obtained by hand (repeatable): used instead of apt-get")
    sub.add_parser("list", help="list the registered samples")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, spec in REGISTRY.items():
            pin = f"{spec.package}{'=' if spec.is_deb else '=='}{spec.version}"
            print(f"{name:16s} {pin}  {spec.member}  {spec.description}")
        return 0
    try:
        paths = fetch(args.names, args.cache_dir, debs=args.deb)
    except SampleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
