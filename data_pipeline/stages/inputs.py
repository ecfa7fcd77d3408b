"""The readers and writers of a stage, built from its config, and the input listing its fingerprint holds."""

from __future__ import annotations

import glob
from pathlib import PurePosixPath

from datatrove.io import get_datafolder
from datatrove.pipeline.writers.jsonl import JsonlWriter

from data_pipeline.config import ConfigError, StageConfig
from data_pipeline.sources.hf_local import LocalHFDatasetSource
from data_pipeline.sources.files import PageFilesSource
from data_pipeline.sources.jsonl import JsonlSource
from data_pipeline.sources.mediawiki import MediaWikiSource
from data_pipeline.sources.parquet import ParquetSource
from data_pipeline.sources.warc import WarcSource


def exact_name_glob(name: str) -> str:
    """A glob that matches exactly ``name``. datatrove prefixes a pattern without magic characters with ``*``
    (so ``00.warc.gz`` would also match ``100.warc.gz``): escape the name and make its first character a class."""
    escaped = glob.escape(name)
    if glob.has_magic(escaped):
        return escaped
    return f"[{escaped[0]}]{escaped[1:]}"


def split_path(path: str, pattern: str | None) -> tuple[str, str | None]:
    """A folder stays a folder (with the configured glob); a file becomes (its folder, a glob of its name)."""
    folder = get_datafolder(path)
    if folder.isdir(""):
        return path, pattern
    parent, name = str(PurePosixPath(path).parent), PurePosixPath(path).name
    if "://" in path:
        parent = path.rsplit("/", 1)[0]
    if not get_datafolder(parent).exists(name):
        raise ConfigError(f"input.paths: {path} does not exist (neither a folder nor a file)")
    return parent, exact_name_glob(name)


def build_readers(cfg: StageConfig, positions: bool = False) -> list:
    """One reader per input path. ``positions``: documents carry their (path index, file, record) position."""
    inp, readers = cfg.input, []
    for index, path in enumerate(inp.paths):
        if inp.format == "hf":
            reader = LocalHFDatasetSource(path, split=inp.hf_split, text_key=inp.text_key, id_key=inp.id_key)
        else:
            folder, pattern = split_path(path, inp.glob)
            common = dict(glob_pattern=pattern, doc_progress=cfg.progress)
            if inp.format in ("warc", "wet"):
                reader = WarcSource(folder, kind=inp.format, max_record_bytes=inp.max_record_bytes, **common)
            elif inp.format == "pages":
                reader = PageFilesSource(folder, max_record_bytes=inp.max_record_bytes, **common)
            elif inp.format == "mediawiki":
                reader = MediaWikiSource(folder, **common)
            elif inp.format == "jsonl":
                reader = JsonlSource(folder, text_key=inp.text_key, id_key=inp.id_key, **common)
            else:
                reader = ParquetSource(folder, text_key=inp.text_key, id_key=inp.id_key, **common)
        reader.source_index = index if positions else None
        readers.append(reader)
    return readers


def build_read_steps(cfg: StageConfig, positions: bool = False) -> tuple[list, list]:
    """The readers, then HTML extraction for WARC/page input, with their roles (filter and score stages)."""
    from data_pipeline.extract import HtmlToText
    from data_pipeline.stages.base import ExtractorRole, ReaderRole

    steps = build_readers(cfg, positions)
    roles = [ReaderRole() for _ in steps]
    if cfg.input.format in ("warc", "pages"):
        steps.append(HtmlToText(timeout=cfg.extract.timeout_s, favour_precision=cfg.extract.favour_precision))
        roles.append(ExtractorRole())
    return steps, roles


def input_listing(cfg: StageConfig) -> list[list]:
    """[path index, file relative to its folder, size in bytes] of every input file, in reading order."""
    listing = []
    for index, path in enumerate(cfg.input.paths):
        if cfg.input.format == "hf":
            folder, pattern = path, None
        else:
            folder, pattern = split_path(path, cfg.input.glob)
        df = get_datafolder(folder)
        if cfg.input.format == "hf" and not df.isdir(""):
            files = [""] if df.exists("") else []
        else:
            files = df.list_files(glob_pattern=pattern) if df.isdir("") else []
        for name in files:
            listing.append([index, name, int(df.size(name)) if name else int(df.size(""))])
    return listing


def jsonl_writer(cfg: StageConfig, folder: str, filename: str = "${rank}") -> JsonlWriter:
    compression = None if cfg.output.compression == "none" else "zstd"
    suffix = ".jsonl" + (".zst" if compression else "")
    return JsonlWriter(folder, output_filename=filename + suffix, compression=compression)
