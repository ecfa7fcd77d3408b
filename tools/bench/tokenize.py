"""Tokenizer benchmark: encode throughput, and bytes per token against a Hugging Face byte-level BPE.

    python -m tools.bench.tokenize [--runs 3] [--vocab 4096] [--mb 20] [--workers 2] [--out bench-tokenize.json]

Text (the sample kit plus Python's own standard library, so nothing is downloaded beyond the kit):
  training sample  enwiki articles 0-69 and the even-numbered stdlib modules (sorted by name)
  held out         enwiki articles 70-105, botchan (5-line chunks, never trained on), the odd-numbered stdlib
                   modules: every measurement below is on this held-out text only
Tokenizers, all trained on the same sample at the same vocabulary size:
  ours             data_pipeline.tokenizer.train_tokenizer (lossless sentencepiece BPE, newlines kept in units,
                   its default settings: pieces may span words and scripts, digits split)
  ours, word-bounded  the same with split_by_whitespace=True split_by_unicode_script=True (the previous default)
  ours, lines cut  the default sentencepiece settings fed one line per sentence with "\\n" removed (the
                   training text of the release before newlines were kept): what keeping newlines is worth
  ours, \n user-defined  newlines kept, "\n" a user-defined symbol (always one token, never inside a piece)
(tools/bench/tokenize_settings.py measures more settings, and their training memory)
  hf byte-level    tokenizers.ByteLevelBPETokenizer().train_from_iterator (its defaults: min_frequency 2),
                   vocab_size the same, one special token
(a) Throughput, MB/s of UTF-8 text, on the held-out documents repeated to --mb MB as 8 plain .jsonl shards:
  raw sentencepiece   SentencePieceProcessor.encode(list_of_str, num_threads=1) on documents already in memory
  ours                encode_documents(iter_documents([dir]), ...): reads the shards, encodes, writes .bin/.idx
  megatron-style      the approach of Megatron-LM's tools/preprocess_data.py (rewritten, not copied): a
                      multiprocessing Pool of --workers processes over the JSONL lines (chunksize 32), each
                      json.loads + encode, the parent appending EOD and writing IndexedDatasetBuilder
  ours is run with 1 thread (per core, against raw) and with --workers threads (against megatron-style with
  --workers processes). Wall clock and CPU time (this process's threads plus the Pool's finished workers);
  arms alternated inside each run; the median of --runs runs, and each ratio is the median over runs of that
  run's ratio. "per CPU-second" is the per-core figure that does not depend on how busy the machine is; ours
  overlaps reading and writing with encoding, so even with 1 encode thread it may use more than one core.
(b) bytes per token (UTF-8 bytes / tokens, no EOD) on each held-out set, for the five tokenizers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np


def corpora() -> tuple[list[str], dict[str, list[str]]]:
    from data_pipeline.samples import fetch
    from data_pipeline.wikipedia import iter_wikipedia_pages

    paths = fetch(["enwiki", "botchan"])
    wiki = [p["text"] for p in iter_wikipedia_pages(paths["enwiki"])]
    stdlib = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    code = [p.read_text(encoding="utf-8") for p in stdlib]
    lines = paths["botchan"].read_bytes().decode("utf-8").split("\r\n")
    botchan = ["\r\n".join(lines[i:i + 5]) for i in range(0, len(lines), 5)]
    train = wiki[:70] + code[0::2]
    held = {"enwiki 70-105": wiki[70:], "botchan": botchan, "stdlib odd": code[1::2]}
    return train, held


def train_all(train: list[str], vocab: int, work: Path):
    import io

    import sentencepiece as spm
    from tokenizers import ByteLevelBPETokenizer

    from data_pipeline.tokenizer.train import TokenizerTrainConfig, spm_options, train_tokenizer, training_units

    model = train_tokenizer(train, vocab, work / "ours", TokenizerTrainConfig(num_threads=2), files=False)
    ours = spm.SentencePieceProcessor(model_file=str(model))
    words = spm.SentencePieceProcessor(model_file=str(train_tokenizer(
        train, vocab, work / "words", TokenizerTrainConfig(num_threads=2, split_by_whitespace=True,
                                                           split_by_unicode_script=True), files=False)))
    lines = [line for doc in train for line in doc.split("\n") if line]
    buf = io.BytesIO()
    spm.set_random_generator_seed(1234)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf,
                                   **spm_options(TokenizerTrainConfig(vocab_size=vocab, num_threads=2)))
    lines_cut = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    buf = io.BytesIO()
    spm.set_random_generator_seed(1234)
    units = [u for doc in train for u in training_units(doc, 65536)]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(units), model_writer=buf, user_defined_symbols=["\n"],
                                   **spm_options(TokenizerTrainConfig(vocab_size=vocab, num_threads=2)))
    newline_symbol = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    hf = ByteLevelBPETokenizer()
    hf.train_from_iterator(train, vocab_size=vocab, special_tokens=["<|endoftext|>"], show_progress=False)
    return model, {"ours": lambda docs: [len(x) for x in ours.encode(docs)],
                   "ours, word-bounded": lambda docs: [len(x) for x in words.encode(docs)],
                   "ours, lines cut": lambda docs: [len(x) for x in lines_cut.encode(docs)],
                   "ours, \\n user-defined": lambda docs: [len(x) for x in newline_symbol.encode(docs)],
                   "hf byte-level": lambda docs: [len(e.ids) for e in hf.encode_batch(docs)]}


def bytes_per_token(tokenizers: dict, held: dict[str, list[str]]) -> dict:
    out = {}
    for name, docs in held.items():
        n_bytes = sum(len(d.encode("utf-8")) for d in docs)
        out[name] = {tok: round(n_bytes / sum(fn(docs)), 4) for tok, fn in tokenizers.items()}
    return out


# ---- megatron-style arm: module-level so the Pool can pickle it ----
_SP = None


def _init_worker(model: str) -> None:
    global _SP
    import sentencepiece as spm

    _SP = spm.SentencePieceProcessor(model_file=model)


def _encode_line(line: bytes):
    text = json.loads(line)["text"]
    return _SP.encode(text), len(line)


def megatron_style(files: list[Path], model: Path, prefix: Path, workers: int) -> None:
    import sentencepiece as spm
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    sp = spm.SentencePieceProcessor(model_file=str(model))
    dtype = DType.optimal_dtype(sp.vocab_size())
    eod = sp.eos_id()
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)

    def lines():
        for path in files:
            with open(path, "rb") as f:
                yield from f

    with mp.Pool(workers, initializer=_init_worker, initargs=(str(model),)) as pool:
        for ids, _ in pool.imap(_encode_line, lines(), chunksize=32):
            ids.append(eod)
            builder.add_document(np.asarray(ids, dtype=dtype), [len(ids)])
    builder.finalize(f"{prefix}.idx")


def throughput(model: Path, held: dict[str, list[str]], mb: float, runs: int, workers: int, work: Path) -> dict:
    import sentencepiece as spm

    from data_pipeline.tokenizer.documents import iter_documents
    from data_pipeline.tokenizer.encode import encode_documents

    base = [d for docs in held.values() for d in docs]
    base_mb = sum(len(d.encode("utf-8")) for d in base) / 1e6
    docs = base * max(1, round(mb / base_mb))
    total_mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    shards = work / "jsonl"
    shards.mkdir(exist_ok=True)
    files = [shards / f"{i:02d}.jsonl" for i in range(8)]
    for i, path in enumerate(files):
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[i::8]))
    sp = spm.SentencePieceProcessor(model_file=str(model))
    arms = {
        "raw sentencepiece (1 core)": (1, lambda: sp.encode(docs, num_threads=1)),
        "ours (1 thread)": (1, lambda: encode_documents(iter_documents([shards]), model, work / "o1", num_threads=1)),
        f"ours ({workers} threads)": (workers, lambda: encode_documents(iter_documents([shards]), model, work / "ow",
                                                                        num_threads=workers)),
        f"megatron-style ({workers} processes)": (workers, lambda: megatron_style(files, model, work / "m", workers)),
    }
    times = {name: [] for name in arms}
    cpu = {name: [] for name in arms}
    for run in range(runs):
        order = list(arms) if run % 2 == 0 else list(reversed(arms))  # alternate which arm goes first
        for name in order:
            start, start_cpu = time.perf_counter(), _cpu_seconds()
            arms[name][1]()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(_cpu_seconds() - start_cpu)
    result = {"input_mb": round(total_mb, 2), "documents": len(docs), "runs": runs, "arms": {}}
    for name, (cores, _) in arms.items():
        mbs = [total_mb / t for t in times[name]]
        result["arms"][name] = {"mb_per_s": round(statistics.median(mbs), 3),
                                "mb_per_s_per_worker": round(statistics.median(mbs) / cores, 3),
                                "mb_per_cpu_second": round(statistics.median([total_mb / c for c in cpu[name]]), 3),
                                "seconds": [round(t, 3) for t in times[name]],
                                "cpu_seconds": [round(c, 3) for c in cpu[name]]}
    raw, one = "raw sentencepiece (1 core)", "ours (1 thread)"
    many, meg = f"ours ({workers} threads)", f"megatron-style ({workers} processes)"

    def ratio(of: dict, a: str, b: str) -> float:  # median over runs of that run's b-time / a-time
        return round(statistics.median([y / x for x, y in zip(of[a], of[b])]), 3)

    result["ratios"] = {
        "ours 1 thread / raw sentencepiece, wall": ratio(times, one, raw),
        "ours 1 thread / raw sentencepiece, per CPU-second": ratio(cpu, one, raw),
        f"ours / megatron-style, {workers} workers, wall": ratio(times, many, meg),
        f"ours / megatron-style, {workers} workers, per CPU-second": ratio(cpu, many, meg),
    }
    return result


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children (the Pool's workers)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--mb", type=float, default=20.0, help="throughput input size (held-out text repeated)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    train, held = corpora()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, tokenizers = train_all(train, args.vocab, work)
        result = {"vocab_size": args.vocab,
                  "training_mb": round(sum(len(d.encode()) for d in train) / 1e6, 2),
                  "held_out_docs": {k: len(v) for k, v in held.items()},
                  "bytes_per_token": bytes_per_token(tokenizers, held),
                  "throughput": throughput(model, held, args.mb, args.runs, args.workers, work)}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
