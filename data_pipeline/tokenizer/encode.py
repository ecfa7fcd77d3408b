"""Encode documents into a Megatron indexed dataset (<prefix>.bin / <prefix>.idx) for the trainer.

One Megatron "document" per input document, holding its tokens followed by the EOD id (the tokenizer's
eos, ``</s>``). Token dtype: uint16 when the vocabulary has fewer than 65500 pieces, else int32
(megatron's ``DType.optimal_dtype``). Files are written under temporary names and renamed when complete,
so a crash never leaves a half-written pair behind the final names; ``<prefix>.json`` records the stats.
Reading and writing overlap the encoding of the next batch (sentencepiece's batch encode, ``num_threads``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
import sentencepiece as spm

from data_pipeline.tokenizer.mmidx import TokenShardWriter, optimal_dtype
from data_pipeline.tokenizer.validate import validate_indexed_dataset


def encode_documents(
    docs: Iterable[str],
    tokenizer_model: str | Path,
    output_prefix: str | Path,
    *,
    num_threads: int = 4,
    batch_size: int = 256,
) -> dict:
    """Tokenize docs into output_prefix.bin/.idx; return stats (documents, tokens, bytes, bytes_per_token...)."""
    tokenizer_model = Path(tokenizer_model)
    if not tokenizer_model.is_file():
        raise FileNotFoundError(f"tokenizer model {tokenizer_model} not found; train one with "
                                "`python -m data_pipeline.tokenizer train input.paths=[...] output.prefix=DIR/tokenizer`")
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_model))
    eod = sp.eos_id()
    if eod < 0:
        raise ValueError(f"{tokenizer_model} has no eos piece to use as EOD; train it with "
                         "data_pipeline.tokenizer.train (eos id 2)")
    dtype = optimal_dtype(sp.vocab_size())
    output_prefix = Path(output_prefix)
    output_prefix.parent.mkdir(parents=True, exist_ok=True)

    stats = {"documents": 0, "empty_skipped": 0, "tokens": 0, "text_tokens": 0, "bytes": 0}
    writer = TokenShardWriter(output_prefix, dtype)

    def write(kept: list[str], encoded: Future) -> None:
        docs = encoded.result()
        for ids in docs:
            ids.append(eod)
        tokens = writer.add_documents(docs)
        stats["documents"] += len(docs)
        stats["tokens"] += tokens
        stats["text_tokens"] += tokens - len(docs)
        stats["bytes"] += sum(len(doc.encode("utf-8")) for doc in kept)

    try:
        # sentencepiece encodes a batch without the GIL: while it encodes batch k, this thread writes batch
        # k-1 and reads batch k+1
        with ThreadPoolExecutor(1) as encoder:
            pending = None
            for batch in _batches(docs, batch_size):
                kept = [d for d in batch if d]
                stats["empty_skipped"] += len(batch) - len(kept)
                encoded = encoder.submit(sp.encode, kept, out_type=int, num_threads=num_threads)
                if pending:
                    write(*pending)
                pending = (kept, encoded)
            if pending:
                write(*pending)
        writer.close()
        if stats["documents"] == 0:
            raise ValueError(f"no non-empty documents to encode into {output_prefix}; check the inputs")
        validate_indexed_dataset(writer.tmp_prefix)
        writer.commit()
    finally:
        writer.abort()  # removes what is left under the temporary prefix (nothing once committed)

    stats.update(
        bytes_per_token=round(stats["bytes"] / max(stats["text_tokens"], 1), 4),
        eod_id=eod,
        vocab_size=sp.vocab_size(),
        dtype=np.dtype(dtype).name,
        tokenizer_model=str(tokenizer_model.resolve()),
        tokenizer_sha256=hashlib.sha256(tokenizer_model.read_bytes()).hexdigest(),
        prefix=str(output_prefix),
    )
    tmp_json = Path(f"{writer.tmp_prefix}.json")
    tmp_json.write_text(json.dumps(stats, indent=2) + "\n")
    os.replace(tmp_json, f"{output_prefix}.json")
    return stats


def _batches(docs: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(docs)
    while batch := list(islice(it, size)):
        yield batch
