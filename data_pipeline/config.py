"""Typed configuration of a data-pipeline stage, validated before any work.

Hydra composes conf/data_pipeline/config.yaml over StageConfig (registered in Hydra's ConfigStore as
`data_pipeline_schema`), so an unknown key, a wrong type or a value outside an enum fails at composition;
`StageConfig.validate` then checks the values against each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Optional

import conf
from conf import ConfigError, fail

CONF_DIR = conf.CONF_DIR / "data_pipeline"


class Stage(StrEnum):
    filter = "filter"
    dedup = "dedup"
    score = "score"
    mix = "mix"
    tokenize = "tokenize"


class InputFormat(StrEnum):
    warc = "warc"
    wet = "wet"
    pages = "pages"  # one web page per file
    jsonl = "jsonl"
    parquet = "parquet"
    hf = "hf"  # a local Hugging Face dataset folder
    mediawiki = "mediawiki"  # MediaWiki XML dumps (.xml, .xml.bz2, .xml.gz): one document per article


class ExecutorKind(StrEnum):
    local = "local"
    slurm = "slurm"
    mpi = "mpi"


class Compression(StrEnum):
    zstd = "zstd"
    none = "none"  # gzip is not offered: it stamps the time, so reruns differ


# global | source (each input path apart) | snapshot (each value of dedup.scope_key apart); the functional form
# because `global` is a keyword, and Hydra matches a value by member name
Scope = StrEnum("Scope", {"global": "global", "source": "source", "snapshot": "snapshot"}, module=__name__)


class Keep(StrEnum):
    quality = "quality"  # highest quality_key, then longest, then smallest id
    longest = "longest"
    first = "first"  # smallest id


@dataclass
class InputConfig:
    paths: list[str] = field(default_factory=list)  # folders, files or fsspec URLs (s3://, https://)
    format: InputFormat = InputFormat.warc
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
    kind: ExecutorKind = ExecutorKind.local
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
    compression: Compression = Compression.zstd
    exclusions: bool = True  # write each filter's removed documents (with the reason) under removed/


@dataclass
class DedupIndexConfig:
    """A persistent band index (data_pipeline/dedup/index.py): write this run's, read earlier runs'."""

    write: Optional[str] = None  # folder to keep this run's band and key rows in
    name: Optional[str] = None  # how ids of its documents are prefixed when another run reads it; None: folder name
    read: list[str] = field(default_factory=list)  # indexes of earlier runs to dedup against (at most 8)


@dataclass
class DedupConfig:
    """stage=dedup: exact, URL and MinHash near-duplicate removal (presets in conf/data_pipeline/dedup/)."""

    preset: str = "fineweb"
    exact: bool = True  # same normalised text (NFKC, lower case, words only)
    url: bool = True  # same normalised URL (metadata.url)
    minhash: bool = True
    ngram: int = 5  # words per shingle (characters for scripts without spaces)
    bands: int = 14
    rows: int = 8
    threshold: float = 0.72  # a band candidate is a duplicate only if its signatures agree on this share
    seed: int = 1
    scope: Scope = Scope["global"]
    scope_key: str = "dump"  # metadata field naming the snapshot, for scope=snapshot
    keep: Keep = Keep.quality
    quality_key: str = "quality_score"
    buckets: int = 0  # tasks of the pair-finding and clustering pipelines; 0: executor.tasks
    max_rounds: int = 32  # clustering rounds at most (a chain of n near copies needs about 2 log2 n)
    index: DedupIndexConfig = field(default_factory=DedupIndexConfig)


@dataclass
class MixSourceConfig:
    """One source of a mixture: its documents (JSONL / .jsonl.zst files or folders, e.g. a stage's
    documents/), its share of the training tokens and the most epochs it may be repeated."""

    paths: list[str] = field(default_factory=list)
    share: float = 0.0  # shares are normalised over the sources (a published table that does not sum to 1 is fine)
    max_epochs: float = 1.0
    # which documents the source offers before mixing: all, GPT-3's quality sampling (pareto: keep a document
    # when its Pareto(alpha) draw from hash(id, mix.seed) exceeds 1 - metadata.<score_key>; stage=score writes
    # it), or DCLM-style top: exactly round(fraction x n) of its n scored documents, the highest scores (ties
    # broken by hash(id, mix.seed))
    select: str = "all"
    alpha: float = 9.0
    fraction: float = 0.1
    score_key: str = "quality_score"


@dataclass
class MixConfig:
    """stage=mix (data_pipeline/mix/): per-source token shares of a total budget, solved from exact token
    counts, apportioned per document (presets in conf/data_pipeline/mix/)."""

    preset: str = "demo"
    tokenizer: Optional[str] = None  # sentencepiece .model the tokens are counted with (EOD included)
    total_tokens: float = 0.0  # the training tokens the mixture holds
    seed: int = 1  # the fractional epoch's choice of documents: hash(document id, seed)
    # share of each source's documents held out for validation (hash(document id) < holdout), written once
    # under valid/ and never mixed into training, so no copy of a validation document is trained on
    holdout: float = 0.01
    sources: dict[str, MixSourceConfig] = field(default_factory=dict)


@dataclass
class TokenizeConfig:
    """stage=tokenize (data_pipeline/mix/tokenize.py): documents into .bin/.idx shards and a blend file."""

    tokenizer: Optional[str] = None  # sentencepiece .model (the one mix.tokenizer counted with)


@dataclass
class ScoreConfig:
    """stage=score: every document gets metadata.<key> = P(reference) from the quality classifier."""

    model: str | None = None  # PREFIX.model written by `python -m data_pipeline.score train`
    key: str = "quality_score"  # the metadata field (dedup.quality_key reads the same name by default)


class PipelineKind(StrEnum):
    stage = "stage"  # one stage: stage=filter|dedup|score|mix|tokenize
    full = "full"  # every stage, crawl to token shards and a data card (data_pipeline/full.py)


class Quality(StrEnum):
    reference = "reference"  # the quality classifier's positives (Wikipedia, books, WebText-like pages)
    crawl = "crawl"  # its negatives (raw crawl)
    none = "none"


@dataclass
class SourceInput:
    """Files of one format: folders, files or sample names (`python -m data_pipeline.samples list`)."""

    paths: list[str] = field(default_factory=list)
    format: InputFormat = InputFormat.jsonl
    glob: Optional[str] = None
    text_key: str = "text"


@dataclass
class PipelineSource:
    """One source of pipeline=full: its inputs (each filtered apart), then dedup over all of them."""

    inputs: list[SourceInput] = field(default_factory=list)
    filters: str = "none"  # a preset of conf/data_pipeline/filters/ (fineweb, c4, gopher, webtext, none)
    dedup: bool = True
    quality: Quality = Quality.none  # which side of the quality classifier its documents train


@dataclass
class PipelineTokenizer:
    model: Optional[str] = None  # an existing sentencepiece .model to use; None: train a BPE on the sources
    vocab_size: int = 32000
    # UTF-8 bytes sampled, split between the sources by their mix shares; None: 250 MB when pieces span words
    # (split_by_whitespace=false, ~40 bytes of training memory per sampled byte), else 1 GB
    sample_bytes: Optional[int] = None
    seed: int = 1234
    num_threads: int = 8
    character_coverage: float = 0.9995  # the rarest characters left to byte fallback (each needs a vocab id)
    # which pieces the BPE may learn: TokenizerTrainConfig in data_pipeline/tokenizer/train.py (the settings
    # before pieces could span words: split_by_unicode_script=true split_by_whitespace=true)
    split_digits: bool = True
    max_piece_length: int = 16
    split_by_unicode_script: bool = False
    split_by_number: bool = True
    split_by_whitespace: bool = False
    check_memory: bool = True


@dataclass
class PipelineClassifier:
    model: Optional[str] = None  # an existing PREFIX.model; None: train one when a mix source has select=pareto
    chunk_words: int = 0  # > 0: reference documents cut into passages of this many words for training


@dataclass
class PipelineConfig:
    """pipeline=full (conf/data_pipeline/pipeline/full.yaml): per source extract + filter, dedup, then the
    classifier, score, BPE, mix and tokenize over all sources; the mixture's shares are mix.sources.<name>."""

    kind: PipelineKind = PipelineKind.stage
    sources: dict[str, PipelineSource] = field(default_factory=dict)
    tokenizer: PipelineTokenizer = field(default_factory=PipelineTokenizer)
    classifier: PipelineClassifier = field(default_factory=PipelineClassifier)


@dataclass
class StageConfig:
    stage: Stage = Stage.filter
    input: InputConfig = field(default_factory=InputConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    filters: list[dict[str, Any]] = field(default_factory=list)  # [{kind: url}, {kind: language, languages: {en: 0.65}}]
    dedup: DedupConfig = field(default_factory=DedupConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    progress: bool = True  # tqdm documents/s per task

    def _validate_full(self) -> None:
        from data_pipeline.samples import REGISTRY

        p, m = self.pipeline, self.mix
        if not self.output.dir:
            fail("output.dir", "not set", "pass output.dir=DIR (the pipeline's directory: every stage goes below it)")
        if not p.sources:
            fail("pipeline.sources", "no sources", "use pipeline=full or a pipeline preset of your own")
        if set(p.sources) != set(m.sources):
            fail("mix.sources", f"the mixture's sources ({', '.join(sorted(m.sources)) or 'none'}) are not the "
                 f"pipeline's ({', '.join(sorted(p.sources))})",
                 "give every pipeline source a share (mix.sources.<name>.share) and no others: a mix preset with the "
                 "same source names")
        presets = sorted(f.stem for f in (CONF_DIR / "filters").glob("*.yaml"))
        for name, src in p.sources.items():
            key = f"pipeline.sources.{name}"
            if not src.inputs:
                fail(f"{key}.inputs", "empty", f"pass {key}.inputs=[{{paths: [DIR], format: warc}}]")
            for i, inp in enumerate(src.inputs):
                if not inp.paths:
                    fail(f"{key}.inputs[{i}].paths", "empty", "list folders, files or sample names")
                if inp.format not in tuple(InputFormat):
                    fail(f"{key}.inputs[{i}].format", f"unknown value {inp.format!r}",
                         f"use one of {', '.join(InputFormat)}")
                for path in inp.paths:
                    if path.split("/")[0] not in REGISTRY and "://" not in path and not os.path.exists(path):
                        fail(f"{key}.inputs[{i}].paths", f"{path} does not exist",
                             f"give an existing folder or file, or a sample name ({', '.join(sorted(REGISTRY))})")
            if src.filters not in presets:
                fail(f"{key}.filters", f"no preset {src.filters!r}", f"use one of {', '.join(presets)}")
            if src.quality not in tuple(Quality):
                fail(f"{key}.quality", f"unknown value {src.quality!r}", f"use one of {', '.join(Quality)}")
        if any(s.select in ("pareto", "top") for s in m.sources.values()) and not p.classifier.model:
            sides = {s.quality for s in p.sources.values()}
            if not {"reference", "crawl"} <= sides:
                fail("pipeline.sources", "a mix source has select=pareto or top, so a quality classifier is trained, but no "
                     "source is its " + ("reference" if "reference" not in sides else "crawl") + " side",
                     "set pipeline.sources.<name>.quality=reference on a reference source and =crawl on a crawl one, "
                     "or pass pipeline.classifier.model=PREFIX.model")
        for key, path in (("pipeline.tokenizer.model", p.tokenizer.model), ("pipeline.classifier.model",
                                                                             p.classifier.model)):
            if path and not os.path.isfile(path):
                fail(key, f"{path} is not a file", "pass an existing file, or leave it unset to train one")
        if not p.tokenizer.model and p.tokenizer.vocab_size < 300:
            fail("pipeline.tokenizer.vocab_size", f"{p.tokenizer.vocab_size}", "use 300 or more (byte fallback alone "
                 "takes 260 ids)")
        if not p.tokenizer.model and p.tokenizer.sample_bytes is not None and p.tokenizer.sample_bytes < 0:
            fail("pipeline.tokenizer.sample_bytes", f"{p.tokenizer.sample_bytes}", "use 0 (everything) or more")
        if m.tokenizer or self.tokenize.tokenizer:
            fail("mix.tokenizer", "pipeline=full sets mix.tokenizer and tokenize.tokenizer itself",
                 "drop them; pass pipeline.tokenizer.model=PATH to use an existing tokenizer")
        if not m.total_tokens >= 1:
            fail("mix.total_tokens", f"{m.total_tokens}", "set the training tokens the mixture holds, e.g. 3e11")
        if self.executor.kind == "slurm" and not self.executor.partition:
            fail("executor.partition", "executor=slurm needs a partition", "pass executor.partition=NAME (see `sinfo`)")

    def _validate_mix(self) -> None:
        m = self.mix
        if self.input.paths:
            fail("input.paths", "stage=mix reads each source's own paths",
                 "drop input.paths and set mix.sources.<name>.paths=[...]")
        if not m.sources:
            fail("mix.sources", "no sources", "pick a preset (mix=demo | mix=gpt3) or set mix.sources.<name>.*")
        for name, src in m.sources.items():
            if not src.paths:
                fail(f"mix.sources.{name}.paths", "empty", f"pass mix.sources.{name}.paths=[DIR_OR_FILE,...] "
                     "(JSONL documents, e.g. a filter or dedup stage's documents/)")
            if not src.share > 0:
                fail(f"mix.sources.{name}.share", f"{src.share}", "use a positive share (or drop the source)")
            if src.select not in ("all", "pareto", "top"):
                fail(f"mix.sources.{name}.select", f"unknown value {src.select!r}", "use one of all, pareto, top")
            if not 0.0 < src.fraction <= 1.0:
                fail(f"mix.sources.{name}.fraction", f"{src.fraction}",
                     "use the share of the source's scored documents to keep, in (0, 1] (DCLM: 0.1)")
            if not src.alpha > 0:
                fail(f"mix.sources.{name}.alpha", f"{src.alpha}", "use a positive Pareto shape (GPT-3: 9)")
            if not src.max_epochs > 0:
                fail(f"mix.sources.{name}.max_epochs", f"{src.max_epochs}", "use a positive number of epochs")
        if not 0.0 <= m.holdout < 0.5:
            fail("mix.holdout", f"{m.holdout}", "use a share in [0, 0.5), e.g. 0.01 (0: no validation documents)")
        if not m.total_tokens >= 1:
            fail("mix.total_tokens", f"{m.total_tokens}", "set the training tokens the mixture holds, e.g. 3e11")
        if not m.tokenizer:
            fail("mix.tokenizer", "not set", "pass mix.tokenizer=PREFIX.model (the tokens are counted with it)")
        if self.input.format != "jsonl":
            fail("input.format", f"stage=mix reads JSONL documents, not {self.input.format}", "pass input.format=jsonl")
        self.input.paths = [p for src in m.sources.values() for p in src.paths]

    def validate(self) -> "StageConfig":
        for key, value, choices in [("stage", self.stage, Stage), ("input.format", self.input.format, InputFormat),
                                    ("output.compression", self.output.compression, Compression),
                                    ("executor.kind", self.executor.kind, ExecutorKind),
                                    ("dedup.scope", self.dedup.scope, Scope), ("dedup.keep", self.dedup.keep, Keep)]:
            if value not in tuple(choices):
                fail(key, f"unknown value {value!r}", f"use one of {', '.join(choices)}")
        if self.pipeline.kind not in tuple(PipelineKind):
            fail("pipeline.kind", f"unknown value {self.pipeline.kind!r}", f"use one of {', '.join(PipelineKind)}")
        if self.pipeline.kind == "full":
            self._validate_full()
            return self
        if self.stage == "mix":
            self._validate_mix()
        if not self.input.paths:
            fail("input.paths", "empty", "pass input.paths=[DIR_OR_FILE,...] (local paths or s3://, https://)")
        if not self.output.dir:
            fail("output.dir", "not set", "pass output.dir=DIR (a new or half-done stage directory)")
        if self.executor.tasks < 1:
            fail("executor.tasks", f"{self.executor.tasks} tasks", "use 1 or more")
        if self.executor.kind == "slurm" and not self.executor.partition:
            fail("executor.partition", "executor=slurm needs a partition", "pass executor.partition=NAME (see `sinfo`)")
        if self.input.max_record_bytes < 1:
            fail("input.max_record_bytes", f"{self.input.max_record_bytes} is not positive", "use a size in bytes")
        d = self.dedup
        if self.stage == "dedup":
            if min(d.ngram, d.bands, d.rows) < 1:
                fail("dedup.ngram", f"ngram={d.ngram}, bands={d.bands}, rows={d.rows}",
                     "set dedup.ngram, dedup.bands and dedup.rows to 1 or more")
            if not 0.0 < d.threshold <= 1.0:
                fail("dedup.threshold", f"{d.threshold} is not a share", "use a share in (0, 1]")
            if d.max_rounds < 1:
                fail("dedup.max_rounds", f"{d.max_rounds}", "use 1 or more (32 by default)")
            if d.buckets < 0:
                fail("dedup.buckets", f"{d.buckets} buckets", "use 0 (as many as executor.tasks) or more")
            if not (d.exact or d.url or d.minhash):
                fail("dedup", "dedup.exact, dedup.url and dedup.minhash are all false: nothing to do",
                     "turn at least one on")
        if self.stage == "score":
            if not self.score.model:
                fail("score.model", "stage=score needs the classifier",
                     "pass score.model=PREFIX.model (written by `python -m data_pipeline.score train`)")
            if not self.score.key or self.score.key == "quality_model":
                fail("score.key", f"{self.score.key!r} cannot hold the score",
                     "use a metadata field name such as quality_score (quality_model holds the model's sha256)")
        for i, spec in enumerate(self.filters):
            if not isinstance(spec, dict) or "kind" not in spec:
                fail(f"filters[{i}]", f"{spec!r} is not a mapping with a 'kind' key",
                     "write each filter as {kind: NAME, ...} (see conf/data_pipeline/filters/)")
        return self


def load_filters(preset: str) -> list[dict[str, Any]]:
    """The filter list of a preset of conf/data_pipeline/filters/ (what `filters=<preset>` composes)."""
    from omegaconf import OmegaConf

    path = CONF_DIR / "filters" / f"{preset}.yaml"
    if not path.is_file():
        fail("filters", f"no preset {preset!r}", "use one of " + ", ".join(sorted(f.stem for f in path.parent.glob("*.yaml"))))
    return OmegaConf.to_container(OmegaConf.load(path))["filters"]


def register_configs() -> None:
    conf.register("data_pipeline_schema", StageConfig)


def load(overrides: list[str]) -> StageConfig:
    """Compose conf/data_pipeline/config.yaml with Hydra overrides into a validated StageConfig (what
    `python -m data_pipeline` runs; for tests and tools that drive a stage from Python)."""
    register_configs()
    return to_stage_config(conf.compose("data_pipeline", overrides, StageConfig))


def to_stage_config(hcfg) -> StageConfig:
    return conf.to_object(hcfg, StageConfig, "data_pipeline").validate()
