"""CLI (see README, "Quality scoring"):

    python -m data_pipeline.score train positives.paths=[enwiki] negatives.paths=[CRAWL/documents] \\
        eval.positives.paths=[botchan] eval.positives.txt_docs=paragraph output.prefix=DIR/quality
    python -m data_pipeline stage=score score.model=DIR/quality.model input.paths=[CRAWL/documents] \\
        input.format=jsonl output.dir=SCORED     # the stage: every document gets metadata.quality_score

Keys: data_pipeline/score/config.py (features.ngram_max, features.log2_features, train.seed, train.heldout,
train.min_words, train.C, positives.text_key, positives.txt_docs=file|paragraph|line, ...).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "train":
        print(__doc__, file=sys.stderr)
        return 2
    from conf import ConfigError
    from data_pipeline.score.config import load

    try:
        cfg = load(argv[1:])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from data_pipeline.score.train import train_classifier

    try:
        report = train_classifier(cfg)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    m = report["model"]
    print(f"wrote {m['path']} (sha256 {m['sha256'][:16]}, {m['nonzero_weights']} non-zero weights) and "
          f"{cfg.output.prefix}.report.json")
    for name in ("train", "heldout", "eval"):
        if name in report:
            r = report[name]
            print(f"{name:8s} {r['positives']:6d} positives {r['negatives']:6d} negatives  accuracy "
                  f"{r.get('accuracy', float('nan')):.4f}  ROC-AUC {r.get('roc_auc', float('nan')):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
