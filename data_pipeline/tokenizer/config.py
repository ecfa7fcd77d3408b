"""Typed configuration of `python -m data_pipeline.tokenizer train|encode` (conf/data_pipeline/tokenizer.yaml).

The same spellings as the pipeline's stages: `input.paths=[...]` for what is read, `output.prefix=PATH` for
what is written (PATH.model/.vocab/.json for `train`, PATH.bin/.idx/.json for `encode`; the prefix is Megatron's
shard naming).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Optional

import conf
from conf import fail
from data_pipeline.tokenizer.train import TokenizerTrainConfig


class TxtDocs(StrEnum):
    """How a .txt file splits into documents."""
    file = "file"  # the whole file
    paragraph = "paragraph"  # blank-line-separated paragraphs
    line = "line"


@dataclass
class TokenizerInput:
    # files, directories or sample names: .txt (see txt_docs), .jsonl[.gz|.zst] (field text_key), a directory
    # (its .jsonl[.gz|.zst] files, sorted: a stage's documents/), MediaWiki .xml[.bz2], or a sample name such
    # as enwiki or botchan
    paths: list[str] = field(default_factory=list)
    text_key: str = "text"
    txt_docs: TxtDocs = TxtDocs.file


@dataclass
class TokenizerOutput:
    prefix: Optional[str] = None


@dataclass
class EncodeConfig:
    num_threads: int = 4


@dataclass
class TokenizerCommandConfig:
    input: TokenizerInput = field(default_factory=TokenizerInput)
    output: TokenizerOutput = field(default_factory=TokenizerOutput)
    tokenizer: Optional[str] = None  # encode: the .model written by `train`
    train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)

    def validate(self, command: str) -> "TokenizerCommandConfig":
        if not self.input.paths:
            fail("input.paths", "empty", "pass input.paths=[FILE_DIR_OR_SAMPLE,...], e.g. input.paths=[enwiki]")
        if not self.output.prefix:
            what = "PREFIX.model/.vocab/.json" if command == "train" else "PREFIX.bin/.idx/.json"
            fail("output.prefix", "not set", f"pass output.prefix=PREFIX (writes {what})")
        if command == "encode" and not self.tokenizer:
            fail("tokenizer", "encode needs the tokenizer model", "pass tokenizer=PATH.model (written by train)")
        if command == "train":
            try:
                self.train.validate()
            except ValueError as e:
                fail("train", str(e), "see TokenizerTrainConfig in data_pipeline/tokenizer/train.py")
        if self.encode.num_threads < 1:
            fail("encode.num_threads", f"{self.encode.num_threads} threads", "use 1 or more")
        return self


# the argparse flags of earlier releases, and the keys that replaced them
RENAMED = {"--input": "input.paths=[...]", "--output": "output.prefix=PREFIX", "--output-prefix": "output.prefix=PREFIX",
           "--vocab-size": "train.vocab_size=N", "--tokenizer": "tokenizer=PATH.model", "--text-key": "input.text_key=KEY",
           "--txt-docs": "input.txt_docs=file|paragraph|line", "--seed": "train.seed=N",
           "--num-threads": "train.num_threads=N (train) or encode.num_threads=N (encode)",
           "--input-sentence-size": "train.sample_bytes=N (bytes of documents)",
           "--character-coverage": "train.character_coverage=X"}


def load(command: str, overrides: list[str]) -> TokenizerCommandConfig:
    for arg in overrides:
        flag = arg.split("=")[0]
        if flag in RENAMED:
            fail(flag, "the tokenizer takes key=value overrides like the other tools", f"use {RENAMED[flag]}")
    conf.register("tokenizer_schema", TokenizerCommandConfig)
    hcfg = conf.compose("data_pipeline", overrides, TokenizerCommandConfig, config_name="tokenizer")
    return conf.to_object(hcfg, TokenizerCommandConfig, "data_pipeline").validate(command)
