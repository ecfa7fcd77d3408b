"""CLI: `python -m data_pipeline.tokenizer train|encode|check` (see README, "Tokenizer and token shards")."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data_pipeline.tokenizer.documents import TXT_MODES, ReadStats, iter_documents
from data_pipeline.tokenizer.train import TokenizerTrainConfig, train_tokenizer

_INPUT_HELP = ("input files or sample names: .txt (see --txt-docs), .jsonl[.gz] (field --text-key), "
               "MediaWiki .xml[.bz2], or a sample name such as 'enwiki' or 'botchan'")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_pipeline.tokenizer")
    sub = parser.add_subparsers(dest="command", required=True)
    defaults = TokenizerTrainConfig()

    p = sub.add_parser("train", help="train a lossless sentencepiece BPE tokenizer")
    p.add_argument("--input", nargs="+", required=True, help=_INPUT_HELP)
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--output", type=Path, required=True, help="output prefix: writes PREFIX.model/.vocab/.json")
    p.add_argument("--num-threads", type=int, default=defaults.num_threads,
                   help="part of the result: the same input, config and thread count give the same model bytes")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--input-sentence-size", type=int, default=defaults.input_sentence_size,
                   help="lines sampled for training (0: all)")
    p.add_argument("--character-coverage", type=float, default=defaults.character_coverage)
    _add_reader_args(p)

    p = sub.add_parser("encode", help="encode documents into Megatron .bin/.idx with EOD after each")
    p.add_argument("--tokenizer", type=Path, required=True, help="the .model written by `train`")
    p.add_argument("--input", nargs="+", required=True, help=_INPUT_HELP)
    p.add_argument("--output-prefix", type=Path, required=True, help="writes PREFIX.bin, PREFIX.idx, PREFIX.json")
    p.add_argument("--num-threads", type=int, default=4)
    _add_reader_args(p)

    p = sub.add_parser("check", help="validate .bin/.idx pairs (truncation, size mismatch)")
    p.add_argument("prefixes", nargs="+")

    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            config = TokenizerTrainConfig(vocab_size=args.vocab_size, num_threads=args.num_threads, seed=args.seed,
                                          input_sentence_size=args.input_sentence_size,
                                          character_coverage=args.character_coverage)
            model = train_tokenizer(args.input, args.vocab_size, args.output, config, files=True,
                                    txt_mode=args.txt_docs, text_key=args.text_key)
            info = json.loads(model.with_suffix(".json").read_text())
            print(f"wrote {model} (vocab {info['vocab_size']}, sha256 {info['sha256'][:16]}): "
                  f"{info['training_documents']} docs, {info['training_lines']} lines, "
                  f"{info['training_bytes']} bytes; bytes/token on the first docs: "
                  f"{info['sample_bytes_per_token']}; skipped corrupt records: {info['skipped_corrupt_records']}")
        elif args.command == "encode":
            from data_pipeline.tokenizer.encode import encode_documents  # imports megatron-core

            read_stats = ReadStats()
            docs = iter_documents(args.input, args.txt_docs, args.text_key, read_stats)
            stats = encode_documents(docs, args.tokenizer, args.output_prefix, num_threads=args.num_threads)
            print(f"wrote {args.output_prefix}.bin/.idx ({stats['dtype']}): {stats['documents']} docs, "
                  f"{stats['tokens']} tokens (incl. EOD id {stats['eod_id']}), {stats['bytes']} bytes, "
                  f"{stats['bytes_per_token']} bytes/token; skipped {read_stats.empty} empty docs and "
                  f"{read_stats.skipped} corrupt records")
        else:
            from data_pipeline.tokenizer.validate import validate_indexed_dataset

            for prefix in args.prefixes:
                info = validate_indexed_dataset(prefix)
                print(f"ok {prefix}: {info.documents} docs, {info.tokens} tokens, {info.dtype.__name__}")
    except (FileNotFoundError, ValueError) as exc:  # IndexedDatasetError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_reader_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--txt-docs", choices=TXT_MODES, default="file",
                   help="how a .txt file splits into documents: the whole file (default), blank-line-separated "
                        "paragraphs, or lines")
    p.add_argument("--text-key", default="text", help="JSONL field holding the document text")


if __name__ == "__main__":
    sys.exit(main())
