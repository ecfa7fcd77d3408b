"""Train a lossless sentencepiece BPE tokenizer for pre-training.

Lossless means decode(encode(text)) == text byte for byte. sentencepiece's defaults are not (NFKC, collapsed
whitespace, a dummy leading space); the settings below are, for any text without U+2581 ("▁", which
sentencepiece uses as its space symbol and decodes to a space):

  normalization_rule_name="identity"    no NFKC: "Ａ" and "①" stay themselves
  remove_extra_whitespaces=False        runs of spaces, tabs, "\\r\\n" survive
  add_dummy_prefix=False                no invented leading space
  byte_fallback=True                    any character outside the vocabulary becomes UTF-8 byte pieces, never <unk>
  allow_whitespace_only_pieces=True     "    " (code indentation) can be one piece
  split_digits=True                     numbers are spelled digit by digit

Special ids: 0 <unk>, 1 <s> (bos), 2 </s> (eos = EOD, appended after every document by encode.py), 3 <pad>.

Reproducible: sentencepiece's sampling seed is fixed and the model bytes are a function of the input, the
config and ``num_threads`` (the same input and config give the same .model; a different num_threads gives a
different, equally good, model).

Training sees one "sentence" per line of every document (lines longer than max_sentence_length bytes are
dropped by sentencepiece); when there are more than input_sentence_size lines, a seeded random sample.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import sentencepiece as spm

from data_pipeline.tokenizer.documents import ReadStats, iter_documents

UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3
EOD_ID = EOS_ID


@dataclass
class TokenizerTrainConfig:
    vocab_size: int = 32000
    model_type: str = "bpe"
    character_coverage: float = 0.9995  # the rarest 0.05% of characters are left to byte fallback
    input_sentence_size: int = 5_000_000  # lines sampled for training (0: all)
    max_sentence_length: int = 65536  # bytes; longer lines are dropped
    num_threads: int = 8  # part of the result: keep it fixed to reproduce a model
    seed: int = 1234
    max_sample_docs: int = 200  # documents kept to report bytes/token after training

    def validate(self) -> None:
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size={self.vocab_size} is too small: byte fallback alone needs 256 pieces + "
                             "4 special ids; use >= 300 (1000 or more in practice)")
        if self.model_type not in ("bpe", "unigram"):
            raise ValueError(f"model_type={self.model_type!r}: use 'bpe' (or 'unigram')")
        if self.num_threads < 1:
            raise ValueError(f"num_threads={self.num_threads} must be >= 1")


def train_tokenizer(
    texts: Iterable[str] | Iterable[str | Path],
    vocab_size: int,
    output_prefix: str | Path,
    config: TokenizerTrainConfig | None = None,
    *,
    files: bool | None = None,
    txt_mode: str = "file",
    text_key: str = "text",
) -> Path:
    """Train on documents (strings) or on input files/sample names; write <output_prefix>.model, .vocab, .json.

    ``files=None`` guesses: Path objects, or a list whose items are all existing files or sample names, are
    read as inputs (see documents.py); anything else is taken as the documents' text. Returns the .model path.
    """
    config = config or TokenizerTrainConfig()
    config = TokenizerTrainConfig(**{**asdict(config), "vocab_size": vocab_size})
    config.validate()
    output_prefix = Path(output_prefix)
    output_prefix.parent.mkdir(parents=True, exist_ok=True)

    items = list(texts) if not isinstance(texts, Iterator) else texts
    read_stats = ReadStats()
    if files is None:
        files = isinstance(items, list) and bool(items) and all(_looks_like_input(x) for x in items)
    docs = iter_documents(items, txt_mode, text_key, read_stats) if files else (str(t) for t in items)

    sample: list[str] = []
    counts = {"documents": 0, "lines": 0, "bytes": 0}

    def sentences() -> Iterator[str]:
        for doc in docs:
            counts["documents"] += 1
            counts["bytes"] += len(doc.encode("utf-8"))
            if len(sample) < config.max_sample_docs:
                sample.append(doc)
            for line in doc.split("\n"):
                if line:
                    counts["lines"] += 1
                    yield line

    model = io.BytesIO()
    spm.set_random_generator_seed(config.seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences(),
        model_writer=model,
        vocab_size=config.vocab_size,
        model_type=config.model_type,
        character_coverage=config.character_coverage,
        input_sentence_size=config.input_sentence_size,
        shuffle_input_sentence=True,
        max_sentence_length=config.max_sentence_length,
        num_threads=config.num_threads,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        byte_fallback=True,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_id=PAD_ID,
        minloglevel=2,
    )
    if counts["lines"] == 0:
        raise ValueError("no training text: every input document was empty")
    model_bytes = model.getvalue()
    model_path = output_prefix.with_name(output_prefix.name + ".model")
    _write_atomic(model_path, model_bytes)

    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    vocab = "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.vocab_size()))
    _write_atomic(output_prefix.with_name(output_prefix.name + ".vocab"), vocab.encode("utf-8"))
    sample_tokens = sum(len(ids) for ids in sp.encode(sample)) if sample else 0
    sample_bytes = sum(len(d.encode("utf-8")) for d in sample)
    manifest = {
        "model": model_path.name,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "vocab_size": sp.vocab_size(),
        "special_ids": {"unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID, "pad": PAD_ID, "eod": EOD_ID},
        "config": asdict(config),
        "training_documents": counts["documents"],
        "training_lines": counts["lines"],
        "training_bytes": counts["bytes"],
        "skipped_corrupt_records": read_stats.skipped,
        "sample_bytes_per_token": round(sample_bytes / sample_tokens, 4) if sample_tokens else None,
    }
    _write_atomic(output_prefix.with_name(output_prefix.name + ".json"),
                  (json.dumps(manifest, indent=2) + "\n").encode())
    return model_path


def _looks_like_input(item) -> bool:
    if isinstance(item, Path):
        return True
    from data_pipeline.samples import REGISTRY

    return isinstance(item, str) and "\n" not in item and len(item) < 4096 and (
        item in REGISTRY or Path(item).is_file())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
