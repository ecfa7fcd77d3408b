"""stage=tokenize: documents (a mix stage's output, or any JSONL) into Megatron .bin/.idx shards and a blend.

    python -m data_pipeline stage=tokenize tokenize.tokenizer=tok.model input.paths=[mixed/documents,mixed/valid] \
        input.format=jsonl executor.tasks=16 output.dir=tokens

Two pipelines (N = executor.tasks):

    encode (N)  each task encodes its files (tokens + EOD, as data_pipeline.tokenizer.encode does) into one
                .bin/.idx per (split, source) it meets: work/<split>/<source>-<task>; the source and split come
                from ``metadata.mix`` (a mix stage's output) or are ``documents`` / ``train``. Batches of about
                256 Ki characters go to sentencepiece's list encode (1 thread); the files are written with
                numpy in megatron's format (data_pipeline.tokenizer.mmidx): tasks never import torch/megatron
    merge (1)   per (split, source) the task files concatenated in task order (the .bin files copied and the
                index arrays joined: what megatron's IndexedDatasetBuilder.add_index would write, byte for byte)
                into ``<split>/<source>_text_document.bin/.idx`` with a
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
    """Documents into one .bin/.idx per (split, source), encoded in batches (sentencepiece's list API, one
    thread: a task is one core) and written with numpy (data_pipeline.tokenizer.mmidx): no torch or megatron
    in the task, and memory bounded by the batch (``batch_bytes`` of text), not by the input."""

    type = "🔢 - TOKENIZE"
    name = "encode"

    def __init__(self, work: str, tokenizer: str, batch_bytes: int = 1 << 18, batch_documents: int = 1024):
        super().__init__()
        self.work, self.tokenizer = work, tokenizer
        self.batch_bytes, self.batch_documents = batch_bytes, batch_documents

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

        from data_pipeline.tokenizer.mmidx import TokenShardWriter, optimal_dtype

        sp = spm.SentencePieceProcessor(model_file=self.tokenizer)
        eod, dtype = sp.eos_id(), optimal_dtype(sp.vocab_size())
        writers: dict[tuple[str, str], TokenShardWriter] = {}

        def flush(keys: list[tuple[str, str]], texts: list[str]) -> None:
            with self.track_time(unit="batch"):
                encoded = sp.encode(texts, out_type=int, num_threads=1)
            by_key: dict[tuple[str, str], list[list[int]]] = {}
            for key, ids in zip(keys, encoded):
                ids.append(eod)
                by_key.setdefault(key, []).append(ids)
            for key, docs in by_key.items():
                if key not in writers:
                    os.makedirs(f"{self.work}/{key[0]}", exist_ok=True)
                    writers[key] = TokenShardWriter(f"{self.work}/{key[0]}/{key[1]}-{rank:05d}", dtype)
                tokens = writers[key].add_documents(docs)
                self.stat_update(f"tokenize_tokens.{key[0]}.{key[1]}", value=tokens, unit="batch")
                self.stat_update(f"tokenize_documents.{key[0]}.{key[1]}", value=len(docs), unit="batch")
            self.stat_update("tokenize_kept", value=len(texts), unit="batch")

        keys, texts, size, seen, empty = [], [], 0, 0, 0
        try:
            for doc in data or ():
                seen += 1
                text = doc.text
                if not text:
                    empty += 1
                    continue
                mix = doc.metadata.get("mix")
                if isinstance(mix, dict):
                    keys.append((str(mix.get("split", "train")), str(mix.get("source", "documents"))))
                else:
                    keys.append(("train", "documents"))
                texts.append(text)
                size += len(text)
                if size >= self.batch_bytes or len(texts) >= self.batch_documents:
                    flush(keys, texts)
                    keys, texts, size = [], [], 0
            if texts:
                flush(keys, texts)
            if seen:
                self.stat_update("tokenize_documents", value=seen, unit="task")
            if empty:
                self.stat_update("dropped_empty", value=empty, unit="task")
            prefixes = []
            for (split, source), writer in sorted(writers.items()):
                writer.finalize()
                prefixes.append(f"{split}/{source}-{rank:05d}")
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        os.makedirs(f"{self.work}/listing", exist_ok=True)
        with open(f"{self.work}/listing/{rank:05d}.json.tmp", "w") as f:
            json.dump(prefixes, f)
        os.replace(f"{self.work}/listing/{rank:05d}.json.tmp", f"{self.work}/listing/{rank:05d}.json")
        return
        yield


class Merge(PipelineStep):
    """Per (split, source) the task files concatenated in task order (mmidx.merge_shards: the .bin files
    copied, the index arrays joined; byte for byte what megatron's ``IndexedDatasetBuilder.add_index`` gives,
    without its torch import and its ``gc.collect()`` per file), then each one's .json and blend.json."""

    type = "🔢 - TOKENIZE"
    name = "merge"

    def __init__(self, work: str, out: str, tokenizer: str, tasks: int):
        super().__init__()
        self.work, self.out, self.tokenizer, self.tasks = work, out, tokenizer, tasks

    def run(self, data, rank: int = 0, world_size: int = 1):
        import sentencepiece as spm

        from data_pipeline.tokenizer.mmidx import merge_shards, optimal_dtype

        sp = spm.SentencePieceProcessor(model_file=self.tokenizer)
        dtype = optimal_dtype(sp.vocab_size())
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
            documents, tokens = merge_shards(prefixes, final, dtype)
            with open(f"{final}.json", "w") as f:
                json.dump({"documents": documents, "tokens": tokens, "split": split, "source": source,
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

