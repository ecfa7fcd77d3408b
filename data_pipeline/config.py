"""Typed configuration of a data-pipeline stage (Hydra fills it from conf/data.yaml), validated before any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FORMATS = ("warc", "wet", "pages", "jsonl", "parquet", "hf")
EXECUTORS = ("local", "slurm", "mpi")
STAGES = ("filter", "dedup")
SCOPES = ("global", "source", "snapshot")
KEEP = ("quality", "longest", "first")


class ConfigError(ValueError):
    """A wrong configuration value; the message names the key and the fix."""


@dataclass
class InputConfig:
    paths: list[str] = field(default_factory=list)  # folders, files or fsspec URLs (s3://, https://)
    format: str = "warc"  # warc | wet | pages (one web page per file) | jsonl | parquet | hf (local dataset)
    glob: str | None = None  # e.g. "*.warc.gz"; default: every file under the folder
    text_key: str = "text"
    id_key: str = "id"
    max_record_bytes: int = 10 << 20  # a larger record is counted as an error ("too_large") and skipped
    hf_split: str = "train"


@dataclass
class ExtractConfig:
    timeout_s: float = 60.0  # per page; a page taking longer is an error ("extraction_timeout")
    favour_precision: bool = True


@dataclass
class ExecutorConfig:
    kind: str = "local"
    tasks: int = 1
    workers: int = -1  # local: processes at once (-1: one per task); slurm: array tasks at once
    # slurm only
    partition: str | None = None
    time: str = "04:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    job_name: str = "data_pipeline"
    qos: str | None = None
    sbatch_args: dict[str, Any] = field(default_factory=dict)
    wait: bool = True  # slurm: block until the job array and the manifest job are done


@dataclass
class OutputConfig:
    dir: str | None = None
    compression: str = "zstd"  # zstd | none (gzip is not offered: it stamps the time, so reruns differ)
    exclusions: bool = True  # write each filter's removed documents (with the reason) under removed/


@dataclass
class DedupConfig:
    """stage=dedup: exact, URL and MinHash near-duplicate removal (presets in conf/data/dedup/)."""

    preset: str = "fineweb"
    exact: bool = True  # same normalised text (NFKC, lower case, words only)
    url: bool = True  # same normalised URL (metadata.url)
    minhash: bool = True
    ngram: int = 5  # words per shingle (characters for scripts without spaces)
    bands: int = 14
    rows: int = 8
    threshold: float = 0.72  # a band candidate is a duplicate only if its signatures agree on this share
    seed: int = 1
    scope: str = "global"  # global | source (each input path apart) | snapshot (each value of scope_key apart)
    scope_key: str = "dump"  # metadata field naming the snapshot, for scope=snapshot
    keep: str = "quality"  # quality (highest quality_key, then longest, then smallest id) | longest | first
    quality_key: str = "quality_score"
    buckets: int = 0  # tasks of the pair-finding pipeline; 0: executor.tasks


@dataclass
class StageConfig:
    stage: str = "filter"
    input: InputConfig = field(default_factory=InputConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    filters: list[dict[str, Any]] = field(default_factory=list)  # [{kind: url}, {kind: language, languages: {en: 0.65}}]
    dedup: DedupConfig = field(default_factory=DedupConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    progress: bool = True  # tqdm documents/s per task

    def validate(self) -> "StageConfig":
        if self.stage not in STAGES:
            raise ConfigError(f"stage={self.stage!r}: choose one of {STAGES}")
        if not self.input.paths:
            raise ConfigError("input.paths is empty: pass input.paths=[DIR_OR_FILE,...] (local paths or s3://, https://)")
        if self.input.format not in FORMATS:
            raise ConfigError(f"input.format={self.input.format!r}: choose one of {FORMATS}")
        if not self.output.dir:
            raise ConfigError("output.dir is not set: pass output.dir=DIR (a new or half-done stage directory)")
        if self.output.compression not in ("zstd", "none"):
            raise ConfigError(f"output.compression={self.output.compression!r}: choose zstd or none")
        if self.executor.kind not in EXECUTORS:
            raise ConfigError(f"executor={self.executor.kind!r}: choose one of {EXECUTORS}")
        if self.executor.tasks < 1:
            raise ConfigError(f"executor.tasks={self.executor.tasks}: use 1 or more")
        if self.executor.kind == "slurm" and not self.executor.partition:
            raise ConfigError("executor=slurm needs executor.partition=NAME (see `sinfo`)")
        if self.input.max_record_bytes < 1:
            raise ConfigError("input.max_record_bytes must be positive")
        d = self.dedup
        if self.stage == "dedup":
            if d.scope not in SCOPES:
                raise ConfigError(f"dedup.scope={d.scope!r}: choose one of {SCOPES}")
            if d.keep not in KEEP:
                raise ConfigError(f"dedup.keep={d.keep!r}: choose one of {KEEP}")
            if min(d.ngram, d.bands, d.rows) < 1:
                raise ConfigError("dedup.ngram, dedup.bands and dedup.rows must be 1 or more")
            if not 0.0 < d.threshold <= 1.0:
                raise ConfigError(f"dedup.threshold={d.threshold}: use a share in (0, 1]")
            if d.buckets < 0:
                raise ConfigError(f"dedup.buckets={d.buckets}: use 0 (as many as executor.tasks) or more")
            if not (d.exact or d.url or d.minhash):
                raise ConfigError("dedup.exact, dedup.url and dedup.minhash are all false: nothing to do")
        for i, spec in enumerate(self.filters):
            if not isinstance(spec, dict) or "kind" not in spec:
                raise ConfigError(f"filters[{i}]={spec!r}: each filter is a mapping with a 'kind' key")
        return self


def stage_config_from_dict(data: dict) -> StageConfig:
    """Build the typed config from a plain dict (Hydra's resolved config), naming any unknown key."""
    sections = {"input": InputConfig, "dedup": DedupConfig, "extract": ExtractConfig, "executor": ExecutorConfig, "output": OutputConfig}
    top = {k: v for k, v in data.items() if k not in ("hydra",)}
    known = set(StageConfig.__dataclass_fields__)
    unknown = sorted(set(top) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; known top-level keys: {sorted(known)}")
    kwargs = {}
    for key, value in top.items():
        if key in sections:
            cls = sections[key]
            bad = sorted(set(value or {}) - set(cls.__dataclass_fields__))
            if bad:
                raise ConfigError(f"unknown key(s) {[f'{key}.{b}' for b in bad]}; known: "
                                  f"{sorted(f'{key}.{f}' for f in cls.__dataclass_fields__)}")
            kwargs[key] = cls(**(value or {}))
        elif key == "filters":
            kwargs[key] = list(value or [])
        else:
            kwargs[key] = value
    return StageConfig(**kwargs).validate()
