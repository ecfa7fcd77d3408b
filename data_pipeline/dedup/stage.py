"""stage=dedup: exact, URL and MinHash LSH dedup in four chained pipelines (steps.py).

    <output.dir>/documents/<file>.jsonl.zst   kept documents, one file per input file (same bytes for any task count)
    <output.dir>/removed/<file>.jsonl.zst     removed ones, with metadata.dedup {reason, cluster_id, cluster_size, kept_id}
    <output.dir>/work/                        signatures, bucket rows, edges, members, decisions (checksummed)
    <output.dir>/manifest.json                documents in = kept + removed + errors; clusters; pairs; rounds

Pipelines, in order (N = executor.tasks, B = dedup.buckets or N):

    signatures (N)  -> pairs (B) -> clusters r00 .. r<max_rounds-1> (B each) -> members (B) -> keep (B) -> write (N)

The clustering rounds stop at convergence: the local and MPI executors skip the rest, and under Slurm (where
the whole chain is submitted at once) their tasks find the converged round and do nothing.
"""

from __future__ import annotations

import glob
import json
import os

from data_pipeline.config import ConfigError, StageConfig
from data_pipeline.dedup.index import ORDINAL_LIMIT, IndexWriter, open_indexes, settings_of
from data_pipeline.dedup.minhash import MinHashParams, s_curve
from data_pipeline.dedup.positions import Positions
from data_pipeline.dedup.clusters import ComponentsRound, Keep, Members, converged_round, largest_cluster
from data_pipeline.dedup.steps import REASONS, DedupDecide, Pairs, ShardedJsonlWriter, Signatures
from data_pipeline.extract import HtmlToText
from data_pipeline.stages.base import (Books, DedupRole, ExtractorRole, Pipeline, ReaderRole, Stage, WorkRole,
                                       WriterRole)
from data_pipeline.stages.inputs import build_readers, input_listing


class DedupStage(Stage):
    name = "dedup"

    def pipelines(self, cfg: StageConfig) -> list[Pipeline]:
        if "://" in cfg.output.dir:
            raise ConfigError("stage=dedup writes its intermediate files with local I/O: output.dir must be a local "
                              "(or network-mounted) folder, not a URL")
        d, out, tasks = cfg.dedup, cfg.output.dir.rstrip("/"), cfg.executor.tasks
        work = os.path.abspath(out) + "/work"
        listing = input_listing(cfg)
        params = MinHashParams(ngram=d.ngram, bands=d.bands, rows=d.rows, seed=d.seed)
        buckets = d.buckets or tasks
        indexes = open_indexes(list(d.index.read), d, buckets)
        positions = Positions(listing, tasks, indexes)
        compression = None if cfg.output.compression == "none" else "zstd"

        def read():
            steps = build_readers(cfg, positions=True)
            roles = [ReaderRole() for _ in steps]
            if cfg.input.format in ("warc", "pages"):
                steps.append(HtmlToText(timeout=cfg.extract.timeout_s, favour_precision=cfg.extract.favour_precision))
                roles.append(ExtractorRole())
            return steps, roles

        steps, roles = read()
        signatures = Signatures(work, positions, params, buckets, d.exact, d.url, d.minhash, d.scope, d.scope_key,
                                d.quality_key)
        write_steps, write_roles = read()
        removed_writer = ShardedJsonlWriter(f"{out}/removed", compression)
        write_steps += [DedupDecide(work, positions, exclusion_writer=removed_writer),
                        ShardedJsonlWriter(f"{out}/documents", compression)]
        write_roles += [DedupRole(), WriterRole()]
        pairs = Pairs(work, d.threshold, params.permutations, buckets, indexes)
        rounds = [ComponentsRound(work, r, buckets) for r in range(d.max_rounds)]
        members = Members(work, buckets, d.max_rounds)
        keep = Keep(work, positions, d.keep, d.exact, d.url)
        return [
            Pipeline("signatures", steps + [signatures], roles + [WorkRole("signatures")], tasks, "signatures",
                     books=False, outputs_ok=signatures.outputs_ok),
            *self.index_pipeline(cfg, work, listing, buckets),
            Pipeline("pairs", [pairs], [WorkRole("pairs")], buckets, "pairs", books=False, outputs_ok=pairs.outputs_ok),
            *[Pipeline(f"clusters_r{r.round:02d}", [r], [WorkRole(f"clusters_r{r.round:02d}")], buckets, f"clusters/r{r.round:02d}",
                       books=False, outputs_ok=r.outputs_ok, skip=r.done_before) for r in rounds],
            Pipeline("members", [members], [WorkRole("members")], buckets, "members", books=False,
                     outputs_ok=members.outputs_ok),
            Pipeline("keep", [keep], [WorkRole("clusters")], buckets, "keep", books=False, outputs_ok=keep.outputs_ok),
            Pipeline("write", write_steps, write_roles, tasks, "write"),
        ]

    def fingerprint_inputs(self, cfg: StageConfig) -> dict:
        """The indexes read, by the content of their index.json (a rewritten index changes it)."""
        from pathlib import Path

        from data_pipeline.samples import file_sha256

        meta = {path: Path(path) / "index.json" for path in cfg.dedup.index.read}
        return {f"index:{path}": file_sha256(p) if p.exists() else None for path, p in meta.items()}

    @staticmethod
    def index_pipeline(cfg: StageConfig, work: str, listing: list, buckets: int) -> list[Pipeline]:
        d = cfg.dedup
        if not d.index.write:
            return []
        if "://" in d.index.write:
            raise ConfigError("dedup.index.write: must be a local (or network-mounted) folder, not a URL")
        if len(listing) + len(cfg.input.paths) >= ORDINAL_LIMIT:
            raise ConfigError(f"dedup.index.write: {len(listing)} input files; an index holds runs of fewer than "
                              f"{ORDINAL_LIMIT}. Fix: index the dump in parts (one run per part)")
        name = d.index.name or os.path.basename(os.path.abspath(d.index.write))
        meta = {"name": name, "settings": settings_of(d), "buckets": buckets, "listing": listing}
        writer = IndexWriter(work, d.index.write, meta)
        return [Pipeline("index", [writer], [WorkRole("index")], buckets, "index", books=False,
                         outputs_ok=writer.outputs_ok)]

    def manifest_extra(self, books: Books, state: dict) -> dict:
        cfg = state.get("config") or {}
        out = cfg.get("output", {}).get("dir")
        d = cfg.get("dedup", {})
        work = f"{os.path.abspath(out)}/work" if out else ""
        buckets = d.get("buckets") or cfg.get("executor", {}).get("tasks", 1)
        extra = {k: int(v) for k, v in sorted(books.extra.items())}
        rounds_edges = [v // 2 for k, v in extra.items() if k.startswith("clusters_r") and k.endswith(".edges")]
        peak = {}
        for path in sorted(glob.glob(f"{os.path.abspath(out)}/work/rss/*.json")) if out else []:
            pipeline = os.path.basename(path).rsplit("_", 1)[0]
            with open(path) as f:
                peak[pipeline] = max(peak.get(pipeline, 0.0), round(json.load(f)["peak_rss_mb"], 1))
        removed = books.removed.get("dedup", {})
        problems = []
        if extra.get("signatures.documents", 0) != extra.get("documents", 0):
            problems.append(f"the signatures pipeline saw {extra.get('signatures.documents', 0)} documents, the "
                            f"write pipeline {extra.get('documents', 0)}: the input changed between them")
        if extra.get("clusters.removed", 0) != int(sum(removed.values())):
            problems.append(f"{extra.get('clusters.removed', 0)} documents were to be removed, "
                            f"{int(sum(removed.values()))} were")
        if extra.get("unmatched_decisions", 0):
            problems.append(f"{extra['unmatched_decisions']} removal decisions matched no document")
        s = {f"{j:.1f}": round(s_curve(j, d.get("bands", 14), d.get("rows", 8)), 4) for j in (0.5, 0.6, 0.7, 0.8, 0.9)}
        return {"dedup": {
            "preset": d.get("preset"), "ngram": d.get("ngram"), "bands": d.get("bands"), "rows": d.get("rows"),
            "threshold": d.get("threshold"), "scope": d.get("scope"),
            "removed": {r: int(removed.get(r, 0)) for r in REASONS},
            "index": {"read": list(d.get("index", {}).get("read") or []), "write": d.get("index", {}).get("write"),
                      "index_documents_matched": extra.get("clusters.index_documents_matched", 0)},
            "clusters": extra.get("clusters.clusters", 0),
            "documents_in_clusters": extra.get("clusters.documents_in_clusters", 0),
            "largest_cluster": largest_cluster(work) if out else 0,
            "cluster_rounds_run": (converged_round(work, buckets, d.get("max_rounds", 0)) or 0) + 1 if out else 0,
            "edges_per_round": rounds_edges,
            "candidate_pairs": extra.get("pairs.candidate_pairs", 0),
            "verified_pairs": extra.get("pairs.verified_pairs", 0),
            "rejected_pairs": extra.get("pairs.rejected_pairs", 0),
            "exact_or_url_pairs": extra.get("pairs.exact_or_url_pairs", 0),
            "documents_without_words": extra.get("signatures.no_words", 0),
            "documents_shorter_than_ngram": extra.get("signatures.shorter_than_ngram", 0),
            "band_s_curve": s,
            "peak_rss_mb_per_task": peak,
            "consistent": not problems,
            "consistency_problem": "; ".join(problems),
        }}
