"""stage=tokenize: documents (a mix stage's output, or any JSONL) into Megatron .bin/.idx shards and a blend.

    python -m data_pipeline stage=tokenize tokenize.tokenizer=tok.model input.paths=[mixed/documents,mixed/valid] \
        input.format=jsonl executor.tasks=16 output.dir=tokens

Two pipelines (N = executor.tasks):

    encode (N)  each task encodes its files (tokens + EOD, as data_pipeline.tokenizer.encode does) into one
                .bin/.idx per (split, source) it meets: work/<split>/<source>-<task>; the source and split come
                from ``metadata.mix`` (a mix stage's output) or are ``documents`` / ``train``
    merge (1)   per (split, source) the task files concatenated in task order (megatron's
                IndexedDatasetBuilder.add_index) into ``<split>/<source>_text_document.bin/.idx`` with a
                ``.json`` of its documents, tokens and the tokenizer's sha256 (the trainer checks it), and
                ``blend.json``: Megatron's per-split data args ({"train": [weight, prefix, ...], "valid": ...,
                "test": []}) with weights = tokens, i.e. the mixture's realised token shares

``python -m pretrain data.blend=<output.dir>/blend.json`` trains on it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep

from data_pipeline.config import ConfigError, StageConfig
from data_pipeline.samples import file_sha256
from data_pipeline.stages.base import Books, Pipeline, ReaderRole, Stage, TokenizeRole, WorkRole
from data_pipeline.stages.inputs import build_readers

SPLITS = ("train", "valid", "test")


def _sha256(path: str) -> str:
    return file_sha256(Path(path))


class Encode(PipelineStep):
    type = "🔢 - TOKENIZE"
    name = "encode"

    def __init__(self, work: str, tokenizer: str):
        super().__init__()
        self.work, self.tokenizer = work, tokenizer

    def outputs_ok(self, rank: int) -> bool:
        from data_pipeline.tokenizer.validate import IndexedDatasetError, validate_indexed_dataset

        try:
            with open(f"{self.work}/listing/{rank:05d}.json") as f:
                prefixes = json.load(f)
            for prefix in prefixes:
                validate_indexed_dataset(f"{self.work}/{prefix}")
        except (OSError, ValueError, IndexedDatasetError):
            return False
        return True

    def run(self, data, rank: int = 0, world_size: int = 1):
        import sentencepiece as spm
        from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

        sp = spm.SentencePieceProcessor(model_file=self.tokenizer)
        eod, dtype = sp.eos_id(), DType.optimal_dtype(sp.vocab_size())
        builders: dict[tuple[str, str], IndexedDatasetBuilder] = {}
        for doc in data or ():
            mix = doc.metadata.get("mix") if isinstance(doc.metadata.get("mix"), dict) else {}
            split, source = str(mix.get("split", "train")), str(mix.get("source", "documents"))
            self.stat_update("tokenize_documents")
            if not doc.text:
                self.stat_update("dropped_empty")
                continue
            with self.track_time():
                ids = sp.encode(doc.text)
                ids.append(eod)
            key = (split, source)
            if key not in builders:
                os.makedirs(f"{self.work}/{split}", exist_ok=True)
                builders[key] = IndexedDatasetBuilder(f"{self.work}/{split}/.{source}-{rank:05d}.tmp.bin", dtype=dtype)
            builders[key].add_document(np.asarray(ids, dtype=dtype), [len(ids)])
            self.stat_update("tokenize_kept")
            self.stat_update(f"tokenize_tokens.{split}.{source}", value=len(ids))
            self.stat_update(f"tokenize_documents.{split}.{source}")
        prefixes = []
        for (split, source), builder in sorted(builders.items()):
            tmp = f"{self.work}/{split}/.{source}-{rank:05d}.tmp"
            builder.finalize(f"{tmp}.idx")
            final = f"{split}/{source}-{rank:05d}"
            os.replace(f"{tmp}.bin", f"{self.work}/{final}.bin")
            os.replace(f"{tmp}.idx", f"{self.work}/{final}.idx")
            prefixes.append(final)
        os.makedirs(f"{self.work}/listing", exist_ok=True)
        with open(f"{self.work}/listing/{rank:05d}.json.tmp", "w") as f:
            json.dump(prefixes, f)
        os.replace(f"{self.work}/listing/{rank:05d}.json.tmp", f"{self.work}/listing/{rank:05d}.json")
        return
        yield


class Merge(PipelineStep):
    type = "🔢 - TOKENIZE"
    name = "merge"

    def __init__(self, work: str, out: str, tokenizer: str, tasks: int):
        super().__init__()
        self.work, self.out, self.tokenizer, self.tasks = work, out, tokenizer, tasks

    def run(self, data, rank: int = 0, world_size: int = 1):
        import sentencepiece as spm
        from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder

        sp = spm.SentencePieceProcessor(model_file=self.tokenizer)
        dtype = DType.optimal_dtype(sp.vocab_size())
        sha = _sha256(self.tokenizer)
        parts: dict[tuple[str, str], list[str]] = {}
        for t in range(self.tasks):
            with open(f"{self.work}/listing/{t:05d}.json") as f:
                for prefix in json.load(f):
                    split, name = prefix.split("/")
                    parts.setdefault((split, name.rsplit("-", 1)[0]), []).append(f"{self.work}/{prefix}")
        blend = {s: [] for s in SPLITS}
        for (split, source), prefixes in sorted(parts.items()):
            final = f"{self.out}/{split}/{source}_text_document"
            os.makedirs(os.path.dirname(final), exist_ok=True)
            builder = IndexedDatasetBuilder(f"{final}.tmp.bin", dtype=dtype)
            for prefix in prefixes:
                builder.add_index(prefix)
            builder.finalize(f"{final}.tmp.idx")
            os.replace(f"{final}.tmp.bin", f"{final}.bin")
            os.replace(f"{final}.tmp.idx", f"{final}.idx")
            ds = IndexedDataset(final, mmap=True)
            tokens = int(ds.sequence_lengths.sum())
            with open(f"{final}.json", "w") as f:
                json.dump({"documents": len(ds), "tokens": tokens, "split": split, "source": source,
                           "tokenizer_model": os.path.abspath(self.tokenizer), "tokenizer_sha256": sha,
                           "vocab_size": sp.vocab_size(), "eod_id": sp.eos_id(), "dtype": np.dtype(dtype).name}, f,
                          indent=1)
            blend[split] += [tokens, final]
            self.stat_update(f"tokenize_merged_tokens.{split}.{source}", value=tokens)
        with open(f"{self.out}/blend.json.tmp", "w") as f:
            json.dump(blend, f, indent=1)
        os.replace(f"{self.out}/blend.json.tmp", f"{self.out}/blend.json")
        return
        yield


class TokenizeStage(Stage):
    name = "tokenize"

    def pipelines(self, cfg: StageConfig) -> list[Pipeline]:
        tok = cfg.tokenize.tokenizer
        if "://" in cfg.output.dir:
            raise ConfigError("stage=tokenize writes .bin/.idx with local I/O: output.dir must be a local folder")
        if not tok or not os.path.exists(tok):
            raise ConfigError(f"tokenize.tokenizer: {tok!r} does not exist. Fix: pass tokenize.tokenizer=PREFIX.model "
                              f"(`python -m data_pipeline.tokenizer train ...` makes one)")
        out = os.path.abspath(cfg.output.dir)
        work, tasks = f"{out}/work", cfg.executor.tasks
        readers = build_readers(cfg)
        encode = Encode(work, tok)
        return [
            Pipeline("encode", readers + [encode], [ReaderRole() for _ in readers] + [TokenizeRole()], tasks,
                     "encode", outputs_ok=encode.outputs_ok),
            Pipeline("merge", [Merge(work, out, tok, tasks)], [WorkRole("merge")], 1, "merge", books=False,
                     outputs_ok=lambda r: os.path.exists(f"{out}/blend.json")),
        ]

    def fingerprint_inputs(self, cfg: StageConfig) -> dict:
        tok = cfg.tokenize.tokenizer or ""
        return {"tokenizer_sha256": _sha256(tok) if os.path.exists(tok) else None}

    def manifest_extra(self, books: Books, state: dict) -> dict:
        out = (state.get("config") or {}).get("output", {}).get("dir")
        encoded, merged = {}, {}
        for key, value in books.extra.items():
            if key.startswith("tokens."):
                encoded[key[len("tokens."):]] = int(value)
            elif key.startswith("merge.merged_tokens."):
                merged[key[len("merge.merged_tokens."):]] = int(value)
        problems = [f"{k}: {v} tokens encoded, {merged.get(k)} merged" for k, v in encoded.items() if merged.get(k) != v]
        shares = {}
        try:
            with open(f"{os.path.abspath(out)}/blend.json") as f:
                blend = json.load(f)
            for split, items in blend.items():
                total = sum(items[0::2]) or 1
                shares[split] = {os.path.basename(p).removesuffix("_text_document"): round(w / total, 6)
                                 for w, p in zip(items[0::2], items[1::2])}
        except (OSError, TypeError, ValueError):
            pass
        return {"tokenize": {"tokens": encoded, "token_shares": shares, "consistent": not problems,
                             "consistency_problem": "; ".join(problems)}}

