"""A stage = a datatrove pipeline built from StageConfig, plus its directory layout and resume rules.

    <output.dir>/documents/00000.jsonl.zst        kept documents, one file per task
    <output.dir>/removed/<NN_filter>/00000.jsonl.zst  removed documents with metadata.filter_reason
    <output.dir>/logs/                            datatrove's logs, per-task stats, completions/ markers
    <output.dir>/logs/stage.json                  task count, step roles and a fingerprint of the config
    <output.dir>/manifest.json                    the accounting (written when every task is done)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import PurePosixPath

from datatrove.io import get_datafolder
from datatrove.pipeline.writers.jsonl import JsonlWriter

from data_pipeline.config import ConfigError, StageConfig
from data_pipeline.extract import HtmlToText
from data_pipeline.filters.registry import build_filters
from data_pipeline.sources.files import PageFilesSource
from data_pipeline.sources.hf_local import LocalHFDatasetSource
from data_pipeline.sources.jsonl import JsonlSource
from data_pipeline.sources.parquet import ParquetSource
from data_pipeline.sources.warc import WarcSource

STATE_FILE = "stage.json"


def logs_dir(cfg: StageConfig) -> str:
    return cfg.output.dir.rstrip("/") + "/logs"


def _split_path(path: str, glob: str | None) -> tuple[str, str | None]:
    """A folder stays a folder (with the configured glob); a file becomes (its folder, its name)."""
    folder = get_datafolder(path)
    if folder.isdir(""):
        return path, glob
    parent, name = str(PurePosixPath(path).parent), PurePosixPath(path).name
    if "://" in path:
        parent = path.rsplit("/", 1)[0]
    if not get_datafolder(parent).exists(name):
        raise ConfigError(f"input.paths: {path} does not exist (neither a folder nor a file)")
    return parent, name


def build_readers(cfg: StageConfig) -> list:
    inp, readers = cfg.input, []
    for path in inp.paths:
        if inp.format == "hf":
            readers.append(LocalHFDatasetSource(path, split=inp.hf_split, text_key=inp.text_key, id_key=inp.id_key))
            continue
        folder, glob = _split_path(path, inp.glob)
        common = dict(glob_pattern=glob, doc_progress=cfg.progress)
        if inp.format in ("warc", "wet"):
            readers.append(WarcSource(folder, kind=inp.format, max_record_bytes=inp.max_record_bytes, **common))
        elif inp.format == "pages":
            readers.append(PageFilesSource(folder, max_record_bytes=inp.max_record_bytes, **common))
        elif inp.format == "jsonl":
            readers.append(JsonlSource(folder, text_key=inp.text_key, id_key=inp.id_key, **common))
        elif inp.format == "parquet":
            readers.append(ParquetSource(folder, text_key=inp.text_key, id_key=inp.id_key, **common))
    return readers


def _writer(cfg: StageConfig, folder: str) -> JsonlWriter:
    compression = None if cfg.output.compression == "none" else "zstd"
    suffix = ".jsonl" + (".zst" if compression else "")
    return JsonlWriter(folder, output_filename="${rank}" + suffix, compression=compression)


def build_pipeline(cfg: StageConfig, shared_words: bool = True) -> tuple[list, list[str]]:
    """Return (datatrove steps, role of each step: reader | extractor | filter:<NN_kind> | writer)."""
    out = cfg.output.dir.rstrip("/")
    steps, roles = [], []
    for reader in build_readers(cfg):
        steps.append(reader)
        roles.append("reader")
    if cfg.input.format in ("warc", "pages"):
        steps.append(HtmlToText(timeout=cfg.extract.timeout_s, favour_precision=cfg.extract.favour_precision))
        roles.append("extractor")
    names = [f"{i:02d}_{spec['kind']}" for i, spec in enumerate(cfg.filters)]

    def exclusion_writer_for(i, kind):
        return _writer(cfg, f"{out}/removed/{names[i]}") if cfg.output.exclusions else None

    filters = build_filters(cfg.filters, exclusion_writer_for, shared_words=shared_words)
    steps += filters
    roles += [f"filter:{name}" for name in names]
    steps.append(_writer(cfg, f"{out}/documents"))
    roles.append("writer")
    return steps, roles


def fingerprint(cfg: StageConfig) -> str:
    """What must not change while a stage is half done: inputs, extraction, filters, output format."""
    data = {k: v for k, v in asdict(cfg).items() if k not in ("executor", "progress")}
    data["tasks"] = cfg.executor.tasks
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_or_record_state(cfg: StageConfig, roles: list[str]) -> dict:
    """Refuse to resume a stage with another task count or config; record the state of a new stage."""
    logs = get_datafolder(logs_dir(cfg))
    state = {"stage": cfg.stage, "tasks": cfg.executor.tasks, "roles": roles, "fingerprint": fingerprint(cfg)}
    if logs.exists(STATE_FILE):
        with logs.open(STATE_FILE, "rt") as f:
            old = json.load(f)
        done = len(logs.list_files("completions")) if logs.exists("completions") else 0
        if old["tasks"] != state["tasks"]:
            raise ConfigError(
                f"{cfg.output.dir} holds a stage started with executor.tasks={old['tasks']} ({done} of "
                f"{old['tasks']} tasks done); you asked for executor.tasks={state['tasks']}. Each task owns a fixed "
                f"share of the input, so the count cannot change half way: rerun with executor.tasks={old['tasks']} "
                f"to resume, or delete {cfg.output.dir} to start over with {state['tasks']} tasks."
            )
        if old["fingerprint"] != state["fingerprint"]:
            raise ConfigError(
                f"{cfg.output.dir} holds a stage started with a different input/filters/output config "
                f"({done} of {old['tasks']} tasks done). Rerun with the same settings to resume (see "
                f"{logs_dir(cfg)}/{STATE_FILE} and the saved config), or use a new output.dir."
            )
        return old
    logs.makedirs("", exist_ok=True)
    tmp = f"{STATE_FILE}.tmp.{os.getpid()}"
    with logs.open(tmp, "wt") as f:
        json.dump(state | {"config": asdict(cfg)}, f, indent=2, default=str)
    logs.mv(tmp, STATE_FILE)
    return state
