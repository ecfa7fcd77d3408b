"""stage=mix: sources mixed by token share, solved from exact token counts, apportioned per document.

    python -m data_pipeline stage=mix mix=gpt3 mix.tokenizer=tok.model mix.sources.common_crawl.paths=[cc] ...

Three pipelines (N = executor.tasks):

    count (N)  each document's tokens under mix.tokenizer (EOD included, as the tokenize step writes them),
               per source, and per bin of its uniform u = hash(source, file, record, seed) in [0, 1). For a
               source with select=top, one record per scored document instead: (score, tie hash, tokens, u bin)
    plan (1)   a select=top source's records are sorted by (score descending, tie hash) and the first
               round(fraction x n) are its documents (``top_select``), its available tokens theirs. Then per
               source: target = share (normalised) x mix.total_tokens; epochs = target / available tokens;
               a source that would need more than its max_epochs is refused, naming the fixes. Each document
               is written floor(epochs) times, plus once more when u falls below the threshold that makes the
               fractional epoch's tokens closest to its target (u is binned in 2^14 bins, so a source's planned
               tokens are within 1/16384 of its tokens of the exact target)
    write (N)  the copies: ``documents/<source>-<NNNNN>.jsonl.zst`` with NNNNN = epoch x N + task, so each
               epoch is its own shards (the trainer's GPTDataset shuffles documents within what it reads);
               each copy has ``metadata.mix = {source, split: train, epoch}``. A share ``mix.holdout`` of each
               source's documents (by hash(source, file, record)) is held out: written once to
               ``valid/<source>-<task>.jsonl.zst`` (``split: valid``), never counted or mixed

``<output.dir>/plan.json`` is the solved mixture; the manifest holds the realised-vs-target table. A document
is kept (written one or more times) or removed with reason ``not_sampled`` (an epoch below one left it out),
``not_selected`` (select=pareto or top left it out) or ``no_quality_score`` (select=pareto or top, no score).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.writers.jsonl import JsonlWriter
from loguru import logger

from data_pipeline.config import ConfigError, StageConfig
from data_pipeline.dedup.minhash import hash64
from data_pipeline.dedup.records import read_records, records_ok, write_records
from data_pipeline.score.rules import id_hash, pareto_keep
from data_pipeline.stages.base import Books, MixRole, Pipeline, ReaderRole, Stage, WorkRole
from data_pipeline.stages.inputs import build_readers, input_listing

BINS = 1 << 14
# a source whose planned tokens miss its target by more than this share of the total gets a note (plan.json, the
# manifest, the data card and the log): its documents are too few or too large to apportion a fractional epoch
SHARE_TOLERANCE = 0.001
# one record per scored document of a select=top source, written by the count pipeline
KEY = np.dtype([("source", "<i4"), ("bin", "<i4"), ("tokens", "<i8"), ("score", "<f8"), ("tie", "<u8")])


def uniform_bin(source: str, name: str, record: int, seed: int) -> int:
    """The document's bin of u = hash(source, file, record, seed) / 2^64: the same for any task count, read
    order or input listing."""
    return hash64(f"{source}\0{name}\0{record}\0{seed}".encode()) * BINS >> 64


def held_out(source: str, name: str, record: int, holdout: float) -> bool:
    """A validation document: hash(source, file, record) / 2^64 < holdout (independent of mix.seed, so the
    validation set stays the same when the training mixture is redrawn)."""
    return hash64(f"{source}\0{name}\0{record}\0valid".encode()) < holdout * 2.0 ** 64


class _MixStep(PipelineStep):
    type = "🥣 - MIX"

    def __init__(self, work: str, sources: list[str], path_source: list[int], select: list[dict] | None = None):
        super().__init__()
        self.work, self.sources, self.path_source = work, sources, path_source
        self.select = [dict(r) for r in select] if select else [{"select": "all"} for _ in sources]

    def score(self, s: int, doc) -> float | None:
        score = doc.metadata.get(self.select[s]["score_key"])
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            return None
        return float(score)

    def offered(self, s: int, name: str, record: int, doc, seed: int) -> str | None:
        """None when source s offers the document to the mixture, else the reason it does not. For select=top
        before the plan (no ``threshold`` yet) every scored document is offered: the plan picks among them."""
        rule = self.select[s]
        if rule["select"] == "all":
            return None
        score = self.score(s, doc)
        if score is None:
            return "no_quality_score"
        doc_id = f"{self.sources[s]}/{name}#{record}"
        if rule["select"] == "pareto":
            return None if pareto_keep([doc_id], [score], seed, rule["alpha"])[0] else "not_selected"
        if "threshold" not in rule:
            return None
        t_score, t_tie = rule["threshold"]
        return None if (-score, id_hash(doc_id, seed)) <= (-t_score, t_tie) else "not_selected"


class MixCount(_MixStep):
    """Per task: an int64 array [sources, 2 + 2 BINS]: documents, tokens, tokens per u bin, documents per u bin
    (``counts/``), and a KEY record per scored document of each select=top source (``keys/``)."""

    name = "count"

    def __init__(self, work, sources, path_source, select, tokenizer: str, seed: int, holdout: float):
        super().__init__(work, sources, path_source, select)
        self.tokenizer, self.seed, self.holdout = tokenizer, seed, holdout

    def outputs_ok(self, rank: int) -> bool:
        return records_ok(f"{self.work}/counts/{rank:05d}.npy") and records_ok(f"{self.work}/keys/{rank:05d}.npy")

    def run(self, data, rank: int = 0, world_size: int = 1):
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=self.tokenizer)
        counts = np.zeros((len(self.sources), 2 + 2 * BINS), np.int64)
        keys = []
        for doc in data or ():
            index, name, record = doc.metadata.pop("dedup_pos")
            s = self.path_source[int(index)]
            if held_out(self.sources[s], name, int(record), self.holdout):
                continue
            if self.offered(s, name, int(record), doc, self.seed):
                continue
            with self.track_time():
                tokens = len(sp.encode(doc.text)) + 1
            b = uniform_bin(self.sources[s], name, int(record), self.seed)
            self.stat_update("mix_documents")
            if self.select[s]["select"] == "top":
                tie = id_hash(f"{self.sources[s]}/{name}#{record}", self.seed)
                keys.append((s, b, tokens, self.score(s, doc), tie))
                continue
            counts[s, 0] += 1
            counts[s, 1] += tokens
            counts[s, 2 + b] += tokens
            counts[s, 2 + BINS + b] += 1
        write_records(f"{self.work}/keys/{rank:05d}.npy", np.array(keys, KEY))
        write_records(f"{self.work}/counts/{rank:05d}.npy", counts)
        return
        yield


def top_select(keys: np.ndarray, fraction: float) -> tuple[np.ndarray, dict]:
    """The documents of one select=top source among its KEY records: the first round(fraction x n) by (score
    descending, tie hash), and the threshold (score, tie) a later pass applies one document at a time. Exact:
    a record is selected iff its (-score, tie) <= the threshold's, which for distinct keys is rank <= k. Two
    documents with the same score and the same 64-bit hash straddling the cut are both kept (``tied``)."""
    n = len(keys)
    k = int(np.floor(fraction * n + 0.5))
    info = {"fraction": fraction, "scored_documents": n, "selected_documents": 0}
    if k == 0:
        return np.zeros(n, bool), info
    order = np.lexsort((keys["tie"], -keys["score"]))
    last = keys[order[k - 1]]
    t_score, t_tie = float(last["score"]), int(last["tie"])
    mask = (keys["score"] > t_score) | ((keys["score"] == t_score) & (keys["tie"] <= np.uint64(t_tie)))
    info.update(selected_documents=int(mask.sum()), tied=int(mask.sum()) - k, threshold_score=t_score,
                threshold_tie=t_tie)
    return mask, info


def select_counts(counts: np.ndarray, keys: np.ndarray, select: list[dict], sources: list[str]) -> dict:
    """Fills each select=top source's row of counts from its selected records; returns its plan entry."""
    chosen = {}
    for s, rule in enumerate(select):
        if rule["select"] != "top":
            continue
        mine = keys[keys["source"] == s]
        mask, info = top_select(mine, rule["fraction"])
        if mine.size and not mask.any():
            raise ConfigError(f"mix: source {sources[s]} has {mine.size} scored documents and "
                              f"mix.sources.{sources[s]}.fraction={rule['fraction']:g} keeps round({rule['fraction']:g}"
                              f" x {mine.size}) = 0 of them. Fix: mix.sources.{sources[s]}.fraction>="
                              f"{0.5 / mine.size:.3g}, or more text for it")
        sel = mine[mask]
        counts[s, 0], counts[s, 1] = sel.size, int(sel["tokens"].sum())
        counts[s, 2:2 + BINS] = np.bincount(sel["bin"], weights=sel["tokens"], minlength=BINS).astype(np.int64)
        counts[s, 2 + BINS:] = np.bincount(sel["bin"], minlength=BINS)
        chosen[sources[s]] = info
    return chosen


def solve(counts: np.ndarray, sources: list[str], shares: list[float], caps: list[float], total: float) -> dict:
    """The mixture: per source its target, epochs, full epochs and the u-bin threshold of the fractional one."""
    shares = np.asarray(shares, float) / sum(shares)
    plan, problems = {}, []
    for s, name in enumerate(sources):
        docs, tokens = int(counts[s, 0]), int(counts[s, 1])
        hist, doc_hist = counts[s, 2:2 + BINS], counts[s, 2 + BINS:]
        target = shares[s] * total
        if tokens == 0:
            problems.append(f"source {name} has no documents (check mix.sources.{name}.paths)")
            continue
        epochs = target / tokens
        if epochs > caps[s] + 1e-12:
            problems.append(
                f"source {name} would need {epochs:.3g} epochs ({target:.4g} target tokens = share "
                f"{shares[s]:.4f} x {total:.4g}; it has {tokens:,}) but mix.sources.{name}.max_epochs={caps[s]:g}. "
                f"Fix: mix.total_tokens<={caps[s] * tokens / shares[s]:.4g}, or mix.sources.{name}.max_epochs="
                f"{math.ceil(epochs * 100) / 100:g}, or a share of at most {caps[s] * tokens / total:.4f} of the "
                f"mixture for {name}, or more text for it")
            continue
        full = int(math.floor(epochs + 1e-12))
        rest = target - full * tokens
        cum = np.concatenate([[0], np.cumsum(hist)])
        threshold = int(np.argmin(np.abs(cum - rest)))
        planned = full * tokens + int(cum[threshold])
        plan[name] = {"share": float(shares[s]), "target_tokens": int(round(target)), "available_tokens": tokens,
                      "available_documents": docs, "epochs": epochs, "full_epochs": full, "threshold_bin": threshold,
                      "planned_tokens": planned, "planned_documents": full * docs + int(doc_hist[:threshold].sum()),
                      "max_epochs": caps[s]}
        if abs(planned - target) > SHARE_TOLERANCE * total:
            plan[name]["note"] = (
                f"source {name} gets a share of {planned / total:.4f} instead of {shares[s]:.4f} ({planned:,} tokens "
                f"for a target of {target:,.0f}): its fractional epoch ({epochs - full:.3f}) is taken by whole "
                f"documents and it has {docs:,} of {tokens / docs:,.0f} tokens on average. Fix: cut its text into "
                f"more documents (a .txt book: input.txt_docs=paragraph), or set its share to the realised one")
    if problems:
        raise ConfigError("mix: " + "; ".join(problems))
    return plan


class MixPlan(_MixStep):
    """Sums the counts of every task and solves the mixture into ``plan.json``."""

    name = "plan"

    def __init__(self, work, sources, path_source, select, shares, caps, total, tasks: int, out: str):
        super().__init__(work, sources, path_source, select)
        self.shares, self.caps, self.total, self.tasks, self.out = shares, caps, total, tasks, out

    def run(self, data, rank: int = 0, world_size: int = 1):
        counts = sum(read_records(f"{self.work}/counts/{t:05d}.npy") for t in range(self.tasks))
        keys = np.concatenate([read_records(f"{self.work}/keys/{t:05d}.npy") for t in range(self.tasks)])
        chosen = select_counts(counts, keys, self.select, self.sources)
        plan = solve(counts, self.sources, self.shares, self.caps, self.total)
        for name, info in chosen.items():
            plan[name]["top"] = info
        for p in plan.values():
            if "note" in p:
                logger.warning(p["note"])
        tmp = f"{self.out}/plan.json.tmp"
        with open(tmp, "w") as f:
            json.dump({"total_tokens": self.total, "sources": plan}, f, indent=1)
        os.replace(tmp, f"{self.out}/plan.json")
        return
        yield


class MixWrite(_MixStep):
    """Writes each document as many times as the plan says, one shard per (source, epoch, task)."""

    name = "🥣 mix"

    def __init__(self, work, sources, path_source, select, seed: int, holdout: float, out: str,
                 compression: str | None, tasks: int):
        super().__init__(work, sources, path_source, select)
        self.seed, self.holdout, self.out, self.compression, self.tasks = seed, holdout, out, compression, tasks

    def run(self, data, rank: int = 0, world_size: int = 1):
        with open(f"{self.out}/plan.json") as f:
            plan = json.load(f)["sources"]
        for s, rule in enumerate(self.select):
            if rule["select"] == "top":
                top = plan[self.sources[s]]["top"]
                rule["threshold"] = (top["threshold_score"], top["threshold_tie"])
        suffix = ".jsonl" + (".zst" if self.compression else "")
        writer = JsonlWriter(f"{self.out}/documents", output_filename="${shard}" + suffix,
                             compression=self.compression)
        valid = JsonlWriter(f"{self.out}/valid", output_filename="${shard}" + suffix, compression=self.compression)
        with writer, valid:
            for doc in data or ():
                index, name, record = doc.metadata.pop("dedup_pos")
                s = self.path_source[int(index)]
                source = self.sources[s]
                p = plan[source]
                if held_out(source, name, int(record), self.holdout):
                    self.stat_update("mix_kept")
                    self.stat_update(f"mix_valid.{source}")
                    doc.metadata["mix"] = {"source": source, "split": "valid"}
                    valid.write(doc, rank, shard=f"{source}-{rank:05d}")
                    continue
                reason = self.offered(s, name, int(record), doc, self.seed)
                if reason:
                    self.stat_update("mix_documents")
                    self.stat_update(f"dropped_{reason}")
                    continue
                copies = p["full_epochs"] + (uniform_bin(source, name, int(record), self.seed) < p["threshold_bin"])
                self.stat_update("mix_documents")
                if not copies:
                    self.stat_update("dropped_not_sampled")
                    continue
                self.stat_update("mix_kept")
                self.stat_update(f"mix_copies.{source}", value=copies)
                self.stat_update(f"mix_chars.{source}", value=copies * len(doc.text))
                for epoch in range(copies):
                    doc.metadata["mix"] = {"source": source, "split": "train", "epoch": epoch}
                    writer.write(doc, rank, shard=f"{source}-{epoch * self.tasks + rank:05d}")
        return
        yield


class MixStage(Stage):
    name = "mix"

    def pipelines(self, cfg: StageConfig) -> list[Pipeline]:
        if "://" in cfg.output.dir:
            raise ConfigError("stage=mix writes plan.json with local I/O: output.dir must be a local (or mounted) folder")
        m, tasks = cfg.mix, cfg.executor.tasks
        out = os.path.abspath(cfg.output.dir)
        work = f"{out}/work"
        if not os.path.exists(m.tokenizer):
            raise ConfigError(f"mix.tokenizer: {m.tokenizer} does not exist. Fix: train one with "
                              f"`python -m data_pipeline.tokenizer train ...` and pass its .model")
        sources = list(m.sources)
        path_source = [s for s, src in enumerate(m.sources.values()) for _ in src.paths]
        input_listing(cfg)  # every path exists
        compression = None if cfg.output.compression == "none" else "zstd"
        count_steps = build_readers(cfg, positions=True)
        select = [{"select": src.select, "alpha": src.alpha, "score_key": src.score_key, "fraction": src.fraction}
                  for src in m.sources.values()]
        count = MixCount(work, sources, path_source, select, m.tokenizer, m.seed, m.holdout)
        plan = MixPlan(work, sources, path_source, select, [s.share for s in m.sources.values()],
                       [s.max_epochs for s in m.sources.values()], m.total_tokens, tasks, out)
        write_steps = build_readers(cfg, positions=True)
        return [
            Pipeline("count", count_steps + [count], [ReaderRole() for _ in count_steps] + [WorkRole("count")],
                     tasks, "count", books=False, outputs_ok=count.outputs_ok),
            Pipeline("plan", [plan], [WorkRole("plan")], 1, "plan", books=False,
                     outputs_ok=lambda r: os.path.exists(f"{out}/plan.json")),
            Pipeline("write", write_steps + [MixWrite(work, sources, path_source, select, m.seed, m.holdout, out, compression, tasks)],
                     [ReaderRole() for _ in write_steps] + [MixRole("mix")], tasks, "write"),
        ]

    def fingerprint_inputs(self, cfg: StageConfig) -> dict:
        from data_pipeline.mix.tokenize import _sha256

        return {"mix_tokenizer_sha256": _sha256(cfg.mix.tokenizer) if os.path.exists(cfg.mix.tokenizer or "") else None}

    def manifest_extra(self, books: Books, state: dict) -> dict:
        out = (state.get("config") or {}).get("output", {}).get("dir")
        try:
            with open(f"{os.path.abspath(out)}/plan.json") as f:
                plan = json.load(f)
        except (OSError, TypeError, ValueError):
            return {}
        total = plan["total_tokens"]
        rows, problems = {}, []
        for name, p in plan["sources"].items():
            copies = int(books.extra.get(f"mix_copies.{name}", 0))
            if copies != p["planned_documents"]:
                problems.append(f"{name}: {copies} documents written, {p['planned_documents']} planned (the input "
                                f"changed between the count and write passes)")
            rows[name] = {
                "target_share": round(p["share"], 6), "target_tokens": p["target_tokens"],
                "realised_tokens": p["planned_tokens"], "realised_share": round(p["planned_tokens"] / total, 6),
                "epochs": round(p["planned_tokens"] / p["available_tokens"], 4), "max_epochs": p["max_epochs"],
                "available_tokens": p["available_tokens"], "documents_written": copies,
                "characters_written": int(books.extra.get(f"mix_chars.{name}", 0)),
                "validation_documents": int(books.extra.get(f"mix_valid.{name}", 0)),
            }
            if "note" in p:
                rows[name]["note"] = p["note"]
        return {"mix": {"total_tokens": total, "realised_tokens": sum(r["realised_tokens"] for r in rows.values()),
                        "sources": rows, "consistent": not problems, "consistency_problem": "; ".join(problems)}}
