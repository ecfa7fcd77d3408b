"""The sample-data kit: small, pinned, checksummed public samples for the quickstart and the tests.

Every sample is a file (or a folder) that ships inside a published wheel or sdist on the Python package
index. We fetch it with the ordinary client, ``pip download --no-deps`` of one exact archive, so the kit
works wherever ``pip install`` works (mirrors, proxies, ``--find-links`` included) and needs no other
network access. The archive's sha256 and the member's sha256 are both checked; the package is never
installed.

    python -m data_pipeline.samples fetch                 # all samples into $SLURMTRAIN_CACHE or .cache/samples
    python -m data_pipeline.samples fetch enwiki --cache-dir /tmp/cache
    python -m data_pipeline.samples list

Adding a sample is one ``SampleSpec`` in ``REGISTRY``. ``member`` is a path inside the archive
(relative to the sdist's top folder ``<name>-<version>/``, or to the wheel root); a member ending in
``/`` is a whole folder, and its ``sha256`` is then ``manifest_sha256`` of the files below it.
"""

from __future__ import annotations

import argparse
import hashlib
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
    """One sample: which archive on the package index, and which member of it."""

    package: str
    version: str
    archive: str  # the exact file name on the index (wheel or sdist)
    archive_sha256: str
    member: str  # file path, or folder path ending in "/", inside the archive
    sha256: str  # of the file, or manifest_sha256 of the folder
    description: str = ""

    @property
    def is_sdist(self) -> bool:
        return not self.archive.endswith(".whl")

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


def fetch(names: list[str] | None = None, cache_dir: Path | None = None) -> dict[str, Path]:
    """Fetch the named samples (all by default) into cache_dir; return name -> path of the file/folder.

    Idempotent: a cached sample whose checksum verifies is returned without touching the network.
    """
    names = list(REGISTRY) if not names else list(names)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise SampleError(f"unknown sample(s) {unknown}; known samples: {sorted(REGISTRY)}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    return {name: _fetch_one(name, REGISTRY[name], cache_dir) for name in names}


def _fetch_one(name: str, spec: SampleSpec, cache_dir: Path) -> Path:
    final = cache_dir / name / spec.cached_name
    if final.exists():
        if member_sha256(final) == spec.sha256:
            return final
        print(f"[samples] cached {final} fails its checksum; fetching it again", file=sys.stderr)
        _remove(final)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=cache_dir) as tmp:
        tmp = Path(tmp)
        archive = _pip_download(spec, tmp / "download")
        got = file_sha256(archive)
        if got != spec.archive_sha256:
            raise SampleError(
                f"sample {name!r}: {archive.name} has sha256 {got}, expected {spec.archive_sha256}. "
                "The package index (or a mirror / --find-links in your pip config) served different bytes "
                "for this pinned file; point pip at the real index (PIP_INDEX_URL=https://pypi.org/simple) "
                "or update REGISTRY in data_pipeline/samples.py if the pin was deliberately changed."
            )
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
    found = 0
    if spec.is_sdist:
        prefix = f"{archive.name.removesuffix('.tar.gz').removesuffix('.zip')}/{spec.member}"
        with tarfile.open(archive) as tar:
            for info in tar:
                rel = _member_relpath(info.name, prefix, spec.is_dir)
                if rel is None or not info.isfile():
                    continue
                target = out / rel if spec.is_dir else out
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                found += 1
    else:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                rel = _member_relpath(info.filename, prefix, spec.is_dir)
                if rel is None or info.is_dir():
                    continue
                target = out / rel if spec.is_dir else out
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                found += 1
    if not found:
        raise SampleError(
            f"{archive.name} has no member {prefix!r}; fix the member path of this sample in "
            "data_pipeline/samples.py (list the archive with `unzip -l` or `tar tzf`)."
        )
    return out


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
    sub.add_parser("list", help="list the registered samples")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, spec in REGISTRY.items():
            print(f"{name:16s} {spec.package}=={spec.version}  {spec.member}  {spec.description}")
        return 0
    try:
        paths = fetch(args.names, args.cache_dir)
    except SampleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
