"""CLI, with the pipeline's spellings (see README, "Tokenizer and token shards"):

    python -m data_pipeline.tokenizer train input.paths=[enwiki] train.vocab_size=4096 output.prefix=DIR/tokenizer
    python -m data_pipeline.tokenizer encode tokenizer=DIR/tokenizer.model input.paths=[enwiki] \\
        output.prefix=DIR/enwiki_text_document
    python -m data_pipeline.tokenizer check PREFIX [PREFIX ...]    # validate .bin/.idx pairs

Keys: data_pipeline/tokenizer/config.py (input.text_key, input.txt_docs=file|paragraph|line, train.num_threads,
train.seed, train.sample_bytes, train.character_coverage, train.split_by_whitespace, train.split_by_unicode_script,
train.split_digits, train.split_by_number, train.max_piece_length, train.check_memory, encode.num_threads).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COMMANDS = ("train", "encode", "check")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS or (argv[0] == "check" and len(argv) < 2):
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    from conf import ConfigError
    from data_pipeline.tokenizer.documents import ReadStats, iter_documents

    try:
        if command == "check":
            from data_pipeline.tokenizer.validate import validate_indexed_dataset

            for prefix in args:
                info = validate_indexed_dataset(prefix)
                print(f"ok {prefix}: {info.documents} docs, {info.tokens} tokens, {info.dtype.__name__}")
            return 0
        from data_pipeline.tokenizer.config import load

        cfg = load(command, args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:  # IndexedDatasetError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        inp = cfg.input
        if command == "train":
            from data_pipeline.tokenizer.train import train_tokenizer

            model = train_tokenizer(inp.paths, cfg.train.vocab_size, Path(cfg.output.prefix), cfg.train, files=True,
                                    txt_mode=str(inp.txt_docs), text_key=inp.text_key)
            info = json.loads(model.with_suffix(".json").read_text())
            hf = f" and {info['hf_tokenizer']}" if info["hf_tokenizer"] else ""
            print(f"wrote {model}{hf} (vocab {info['vocab_size']}, sha256 "
                  f"{info['sha256'][:16]}): sampled {info['training_documents']} of {info['input_documents']} docs, "
                  f"{info['training_units']} units, {info['training_bytes']} bytes; bytes/token on training docs: "
                  f"{info['sample_bytes_per_token']}; skipped corrupt records: {info['skipped_corrupt_records']}")
        else:
            from data_pipeline.tokenizer.encode import encode_documents  # imports megatron-core

            read_stats = ReadStats()
            docs = iter_documents(inp.paths, str(inp.txt_docs), inp.text_key, read_stats)
            prefix = Path(cfg.output.prefix)
            stats = encode_documents(docs, Path(cfg.tokenizer), prefix, num_threads=cfg.encode.num_threads)
            print(f"wrote {prefix}.bin/.idx ({stats['dtype']}): {stats['documents']} docs, "
                  f"{stats['tokens']} tokens (incl. EOD id {stats['eod_id']}), {stats['bytes']} bytes, "
                  f"{stats['bytes_per_token']} bytes/token; skipped {read_stats.empty} empty docs and "
                  f"{read_stats.skipped} corrupt records")
    except (FileNotFoundError, ValueError) as exc:  # IndexedDatasetError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
