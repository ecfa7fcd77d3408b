"""Typed configuration of `python -m data_pipeline.score train` (conf/data_pipeline/score.yaml).

    positives.paths=[...]        reference text (a sample name such as enwiki or botchan, .jsonl[.gz|.zst] files,
                                 the filter stage's documents/ folder, MediaWiki .xml[.bz2], .txt)
    negatives.paths=[...]        raw crawl, the same kinds of input
    eval.positives.paths=[...]   optional: sources kept out of training, evaluated whole
    eval.negatives.paths=[...]   (a classifier is best judged on a source it never saw)
    output.prefix=PREFIX         writes PREFIX.model and PREFIX.report.json
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import conf
from conf import fail
from data_pipeline.tokenizer.config import TxtDocs


@dataclass
class DocumentSet:
    paths: list[str] = field(default_factory=list)
    text_key: str = "text"  # JSONL field
    txt_docs: TxtDocs = TxtDocs.file  # how a .txt file splits into documents: file | paragraph | line
    chunk_words: int = 0  # > 0: cut every document into pieces of this many words (a book into passages)


@dataclass
class EvalSets:
    positives: DocumentSet = field(default_factory=DocumentSet)
    negatives: DocumentSet = field(default_factory=DocumentSet)


@dataclass
class ScoreOutput:
    prefix: Optional[str] = None


@dataclass
class FeaturesConfig:
    ngram_max: int = 2  # word 1..n grams
    log2_features: int = 18  # hash buckets 2^18 (Spark HashingTF's default, GPT-3's features)
    lowercase: bool = True


@dataclass
class ScoreTrainSettings:
    seed: int = 1  # the held-out split's hash
    heldout: float = 0.2  # share of each training source held out (by a hash of the seed and the text)
    min_words: int = 20  # shorter documents are skipped (counted in the report)
    C: float = 1.0  # inverse L2 strength of the logistic regression
    max_iter: int = 1000
    balanced: bool = True  # weight the classes to equal total weight


@dataclass
class ScoreTrainConfig:
    positives: DocumentSet = field(default_factory=DocumentSet)
    negatives: DocumentSet = field(default_factory=DocumentSet)
    eval: EvalSets = field(default_factory=EvalSets)
    output: ScoreOutput = field(default_factory=ScoreOutput)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    train: ScoreTrainSettings = field(default_factory=ScoreTrainSettings)

    def validate(self) -> "ScoreTrainConfig":
        for side in ("positives", "negatives"):
            if not getattr(self, side).paths:
                fail(f"{side}.paths", "empty", f"pass {side}.paths=[FILE_DIR_OR_SAMPLE,...]"
                     + (" (reference text, e.g. [enwiki])" if side == "positives" else " (raw crawl documents)"))
        if not self.output.prefix:
            fail("output.prefix", "not set", "pass output.prefix=PREFIX (writes PREFIX.model, PREFIX.report.json)")
        for key, docs in (("positives", self.positives), ("negatives", self.negatives),
                          ("eval.positives", self.eval.positives), ("eval.negatives", self.eval.negatives)):
            if docs.chunk_words < 0:
                fail(f"{key}.chunk_words", f"{docs.chunk_words}", "use 0 (whole documents) or a word count")
        if not 0.0 < self.train.heldout < 1.0:
            fail("train.heldout", f"{self.train.heldout} is not a share in (0, 1)", "use e.g. 0.2")
        if self.features.ngram_max < 1:
            fail("features.ngram_max", f"{self.features.ngram_max}", "use 1 (words) or more")
        if not 10 <= self.features.log2_features <= 24:
            fail("features.log2_features", f"2^{self.features.log2_features} buckets", "use 10 to 24 (18 by default)")
        if self.train.C <= 0:
            fail("train.C", f"{self.train.C} is not positive", "use e.g. 1.0")
        if self.train.min_words < 0 or self.train.max_iter < 1:
            fail("train.min_words", f"min_words={self.train.min_words}, max_iter={self.train.max_iter}",
                 "use min_words >= 0 and max_iter >= 1")
        return self


def load(overrides: list[str]) -> ScoreTrainConfig:
    conf.register("score_schema", ScoreTrainConfig)
    hcfg = conf.compose("data_pipeline", overrides, ScoreTrainConfig, config_name="score")
    return conf.to_object(hcfg, ScoreTrainConfig, "data_pipeline").validate()
