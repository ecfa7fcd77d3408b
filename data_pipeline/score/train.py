"""Train the quality classifier: reference text (positives) against raw crawl (negatives).

Every training source is split by a hash of (seed, text): ``train.heldout`` of it is held out (identical texts
fall on the same side, so an exact duplicate cannot leak into the held-out set). Sources under ``eval.`` are not
trained on at all. The model is saved first and reloaded, and every number of the report is computed with the
saved file, as the score stage will use it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np

from data_pipeline.score.config import ScoreTrainConfig
from data_pipeline.score.model import Features, QualityModel
from data_pipeline.tokenizer.documents import ReadStats, iter_documents, resolve_input

BINS = np.linspace(0.0, 1.0, 11)


def heldout_share(text: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}\0".encode() + text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 11) / float(1 << 53)


def chunks(text: str, words: int) -> list[str]:
    """The text cut before every ``words``-th word (0: the whole text)."""
    if words <= 0:
        return [text]
    starts = [m.start() for i, m in enumerate(re.finditer(r"\S+", text)) if i % words == 0] or [0]
    starts[0] = 0
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


def read_sources(cfg: ScoreTrainConfig) -> list[dict]:
    """One entry per input path: its side (1 positive, 0 negative), role (train/eval) and documents."""
    sets = (cfg.positives, cfg.negatives, cfg.eval.positives, cfg.eval.negatives)
    for path in [p for docs in sets for p in docs.paths]:
        resolve_input(path)  # a missing input fails before minutes of reading the others
    sources = []
    for role, label, docs in [("train", 1, cfg.positives), ("train", 0, cfg.negatives),
                              ("eval", 1, cfg.eval.positives), ("eval", 0, cfg.eval.negatives)]:
        for path in docs.paths:
            stats, texts, short = ReadStats(), [], 0
            for document in iter_documents([path], str(docs.txt_docs), docs.text_key, stats):
                for text in chunks(document, docs.chunk_words):
                    if len(text.split()) < cfg.train.min_words:
                        short += 1
                    else:
                        texts.append(text)
            heldout = [role == "eval" or heldout_share(t, cfg.train.seed) < cfg.train.heldout for t in texts]
            sources.append({"path": path, "label": label, "role": role, "texts": texts,
                            "heldout": np.array(heldout, dtype=bool), "short": short, "corrupt": stats.skipped})
    return sources


def metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    out = {"documents": int(labels.size), "positives": int(labels.sum()), "negatives": int((1 - labels).sum())}
    if labels.size:
        out["accuracy"] = round(float(((scores >= 0.5) == (labels == 1)).mean()), 4)
    if out["positives"] and out["negatives"]:
        out["roc_auc"] = round(float(roc_auc_score(labels, scores)), 4)
    return out


def train_classifier(cfg: ScoreTrainConfig) -> dict:
    from sklearn.linear_model import LogisticRegression

    sources = read_sources(cfg)
    for label, side in ((1, "positives"), (0, "negatives")):
        if not any(s["label"] == label and s["role"] == "train" and (~s["heldout"]).any() for s in sources):
            raise ValueError(f"{side}.paths: no training document of {cfg.train.min_words} words or more (after "
                             f"holding out {cfg.train.heldout:.0%}); give more input or lower train.min_words")
    features = Features(**asdict(cfg.features))
    train = [(t, s["label"]) for s in sources if s["role"] == "train" for t, h in zip(s["texts"], s["heldout"]) if not h]
    x = features.vectorizer().transform([t for t, _ in train])
    y = np.array([label for _, label in train])
    lr = LogisticRegression(C=cfg.train.C, max_iter=cfg.train.max_iter, solver="lbfgs",
                            class_weight="balanced" if cfg.train.balanced else None)
    lr.fit(x, y)
    prefix = Path(cfg.output.prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    info = {"trained_on": {"positives": list(cfg.positives.paths), "negatives": list(cfg.negatives.paths)},
            "documents": int(y.size), "iterations": int(lr.n_iter_[0])}
    model_path = prefix.with_name(prefix.name + ".model")
    QualityModel(features, lr.coef_[0], lr.intercept_[0], info).save(model_path)
    model = QualityModel.load(model_path)

    groups = {"train": ([], []), "heldout": ([], [])}
    report_sources = []
    for s in sources:
        scores = model.scores(s["texts"])
        s["scores"] = scores
        held = scores[s["heldout"]]
        if s["role"] == "train":
            groups["heldout"][0].append(np.full(held.size, s["label"]))
            groups["heldout"][1].append(held)
            groups["train"][0].append(np.full(int((~s["heldout"]).sum()), s["label"]))
            groups["train"][1].append(scores[~s["heldout"]])
        report_sources.append({
            "path": s["path"], "side": "positive" if s["label"] else "negative", "role": s["role"],
            "documents": len(s["texts"]), "skipped_short": s["short"], "skipped_corrupt": s["corrupt"],
            "trained_on": int((~s["heldout"]).sum()), "held_out": int(s["heldout"].sum()),
            "held_out_mean_score": round(float(held.mean()), 4) if held.size else None,
            "held_out_histogram": np.histogram(held, bins=BINS)[0].tolist(),
        })
    result = {name: metrics(np.concatenate(ls), np.concatenate(ss)) for name, (ls, ss) in groups.items()}
    if any(s["role"] == "eval" for s in sources):
        # other sources: eval positives against the held-out negatives (or eval negatives against held-out
        # positives) when only one side was given
        labels, scores = [], []
        for label in (1, 0):
            pool = [s for s in sources if s["label"] == label and s["role"] == "eval"] or \
                   [s for s in sources if s["label"] == label and s["role"] == "train"]
            for s in pool:
                labels.append(np.full(int(s["heldout"].sum()), label))
                scores.append(s["scores"][s["heldout"]])
        result["eval"] = metrics(np.concatenate(labels), np.concatenate(scores))
    versions = {p: importlib.metadata.version(p) for p in ("scikit-learn", "numpy", "scipy")}
    report = {
        "model": {"path": str(model_path), "sha256": model.sha256, "bytes": model_path.stat().st_size,
                  "nonzero_weights": int(np.count_nonzero(model.weights)), "intercept": model.intercept,
                  "iterations": info["iterations"]},
        **result,
        "histogram_bins": [round(float(b), 2) for b in BINS],
        "sources": report_sources,
        "settings": {"classifier": "logistic regression (scikit-learn lbfgs) on HashingVectorizer features",
                     **{k: v for k, v in asdict(cfg).items() if k != "output"}, "versions": versions},
    }
    report_path = prefix.with_name(prefix.name + ".report.json")
    tmp = report_path.with_name(report_path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(report_path)
    return report
