"""Classifier ablation: does training on the top-scored crawl documents beat a random sample of the same size?

From a `pipeline=full` output directory (`--pipeline DIR`):
1. the scored crawl (`sources/crawl/score/documents`, `metadata.quality_score`) minus a hashed `--crawl-heldout`
   share (a crawl validation set neither arm sees) is the pool; two arms of exactly `--fraction` of the pool's
   tokens under the run's `tokenizer/bpe.model` (EOD included; the last document is cut to hit the budget):
   `top` (highest scores first) and `random` (a seeded permutation; seed s for training seed s);
2. validation sets: `wikipedia_heldout`, the Wikipedia documents the classifier held out (its own hash split, read
   from `classifier/state.json`), the books, and the crawl's held-out share;
3. the `tiny` model trained identically on each arm (`--iters`, `--seeds`; iters x batch x seq must fit in the
   budget, so both arms train on under one epoch), one process per run;
4. `result.json` under `--out` and a table: validation losses per set and the final train loss, median over seeds,
   and the paired differences (top - random for the same training seed): mean, a 95% Student-t interval, and how
   many seeds favour top.
A run directory that finished already is read instead of retrained, so `--seeds 3` after `--seeds 2` trains seed 3.

    python -m tools.bench.quality_ablation --pipeline data/kit --seeds 2 --iters 120
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
GBS, SEQ = 16, 128  # the tiny preset's batch


def select_equal_tokens(order: list[int], lengths: list[int], budget: int) -> list[tuple[int, int]]:
    """(document, tokens kept) in `order` until exactly `budget` tokens; the last document is cut short."""
    if budget > sum(lengths[i] for i in order):
        raise ValueError(f"budget of {budget} tokens exceeds the pool's {sum(lengths[i] for i in order)}; "
                         "lower --fraction")
    out, left = [], budget
    for i in order:
        if left <= 0:
            break
        take = min(lengths[i], left)
        out.append((i, take))
        left -= take
    return out


def read_scored(folder: Path) -> list[dict]:
    import orjson
    import zstandard

    from data_pipeline.tokenizer.documents import resolve_input

    docs = []
    for path, _ in resolve_input(folder):
        with open(path, "rb") as raw:
            data = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read() \
                if path.name.endswith(".zst") else raw.read()
        docs += [orjson.loads(line) for line in data.splitlines() if line.strip()]
    missing = [d.get("id") for d in docs if "quality_score" not in d.get("metadata", {})]
    if missing:
        raise ValueError(f"{len(missing)} documents in {folder} have no metadata.quality_score (e.g. {missing[0]}); "
                         "pass a pipeline=full output whose crawl mixes with select=pareto")
    return docs


def write_ids(docs: list[list[int]], prefix: Path, vocab: int) -> int:
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    from data_pipeline.tokenizer.validate import validate_indexed_dataset

    dtype = DType.optimal_dtype(vocab)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    for ids in docs:
        builder.add_document(np.asarray(ids, dtype=dtype), [len(ids)])
    builder.finalize(f"{prefix}.idx")
    validate_indexed_dataset(prefix)
    return sum(map(len, docs))


def build_data(pipeline: Path, out: Path, fraction: float, heldout: float, seeds: list[int]) -> dict:
    import sentencepiece as spm

    from data_pipeline.score.train import heldout_share
    from data_pipeline.tokenizer.documents import iter_documents
    from data_pipeline.tokenizer.encode import encode_documents

    tok = pipeline / "tokenizer" / "bpe.model"
    sp = spm.SentencePieceProcessor(model_file=str(tok))
    eod = sp.eos_id()
    crawl = read_scored(pipeline / "sources" / "crawl" / "score" / "documents")
    held = [heldout_share(d["text"], 0) < heldout for d in crawl]
    pool = [d for d, h in zip(crawl, held) if not h]
    ids = [x + [eod] for x in sp.encode([d["text"] for d in pool])]
    lengths = [len(x) for x in ids]
    budget = int(fraction * sum(lengths))
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    scores = [d["metadata"]["quality_score"] for d in pool]

    def arm(name: str, order: list[int]) -> dict:
        picked = select_equal_tokens(order, lengths, budget)
        docs = [ids[i][:n - 1] + [eod] if n < lengths[i] else ids[i] for i, n in picked]
        tokens = write_ids(docs, data / f"{name}_text_document", sp.vocab_size())
        return {"prefix": str(data / f"{name}_text_document"), "documents": len(docs), "tokens": tokens,
                "mean_score": round(float(np.mean([scores[i] for i, _ in picked])), 4)}

    arms = {"top": arm("top", sorted(range(len(pool)), key=lambda i: (-scores[i], pool[i]["id"])))}
    for s in seeds:
        arms[f"random_s{s}"] = arm(f"random_s{s}", [int(i) for i in np.random.default_rng(s).permutation(len(pool))])
    state = json.loads((pipeline / "classifier" / "state.json").read_text())["state"]["config"]["train"]
    wiki = [t for t in iter_documents([pipeline / "sources" / "wikipedia" / "dedup" / "documents"])
            if heldout_share(t, state["seed"]) < state["heldout"]]
    valid = {
        "wikipedia_heldout": wiki,
        "books": list(iter_documents([pipeline / "sources" / "books" / "dedup" / "documents"])),
        "crawl_heldout": [d["text"] for d, h in zip(crawl, held) if h],
    }
    vstats = {}
    for name, texts in valid.items():
        st = encode_documents(texts, tok, data / f"{name}_text_document")
        vstats[name] = {"prefix": str(data / f"{name}_text_document"), "documents": st["documents"],
                        "tokens": st["tokens"]}
    return {"tokenizer": str(tok), "pool_documents": len(pool), "pool_tokens": sum(lengths), "budget": budget,
            "arms": arms, "valid": vstats}


def train(run_dir: Path, prefix: str, valid: list[str], tok: str, iters: int, seed: int, eval_iters: int,
          lr: float | None = None) -> dict:
    cmd = [sys.executable, "-m", "pretrain", "model=tiny", f"train.iters={iters}", f"train.eval_interval={iters}",
           f"train.eval_iters={eval_iters}", f"train.save_interval={iters}", "train.log_interval=1",
           f"run.dir={run_dir}", f"run.seed={seed}", "logging.wandb.mode=disabled", f"data.paths=[{prefix}]",
           f"data.valid_paths=[{','.join(valid)}]", f"data.tokenizer_model={tok}"]
    if lr is not None:
        cmd += [f"optim.lr={lr}", f"optim.min_lr={lr / 10}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_SILENT="true")
    finished = (run_dir / "finished.json").is_file()  # a finished run is read, not retrained (more seeds later)
    done = None if finished else subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done is not None and done.returncode != 0:
        raise SystemExit(f"training failed ({' '.join(cmd[1:])}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    last = rows[-1]
    losses = [r["loss"] for r in rows if r.get("loss") is not None]
    return {"train_loss_last10": float(np.mean(losses[-10:])), "tokens": last["tokens"],
            **{k.removeprefix("val_loss/"): v for k, v in last.items() if k.startswith("val_loss/")}}


def paired(top: list[float], random: list[float]) -> dict:
    """top - random per seed (the same training seed, schedule and batch order): mean, standard error, a 95%
    interval (Student's t), how many seeds favour top, and whether the interval excludes 0."""
    from scipy import stats

    d = np.asarray(top) - np.asarray(random)
    out = {"differences": [round(float(x), 4) for x in d], "mean": float(d.mean()), "seeds": int(d.size),
           "favour_top": int((d < 0).sum())}
    if d.size > 1:
        se = float(d.std(ddof=1) / np.sqrt(d.size))
        half = float(stats.t.ppf(0.975, d.size - 1)) * se
        out.update(se=se, ci95=[float(d.mean() - half), float(d.mean() + half)],
                   conclusive=bool(d.mean() + half < 0 or d.mean() - half > 0))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", required=True, help="a pipeline=full output directory")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "quality_ablation"))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--iters", type=int, default=120)
    ap.add_argument("--fraction", type=float, default=0.5, help="each arm's share of the pool's tokens")
    ap.add_argument("--crawl-heldout", type=float, default=0.1)
    ap.add_argument("--eval-iters", type=int, default=16)
    ap.add_argument("--lr", type=float, default=None, help="optim.lr (min_lr = lr / 10); default: the tiny preset's")
    args = ap.parse_args(argv)
    pipeline, out = Path(args.pipeline), Path(args.out)
    if not (pipeline / "tokenizer" / "bpe.model").is_file():
        raise SystemExit(f"{pipeline} has no tokenizer/bpe.model; pass the output.dir of a finished pipeline=full")
    seeds = list(range(1, args.seeds + 1))
    data = build_data(pipeline, out, args.fraction, args.crawl_heldout, seeds)
    seen = args.iters * GBS * SEQ
    if seen > data["budget"]:
        raise SystemExit(f"--iters {args.iters} trains {seen} tokens, more than an arm's {data['budget']}; "
                         f"use --iters {data['budget'] // (GBS * SEQ)} or fewer, or raise --fraction")
    valid = [v["prefix"] for v in data["valid"].values()]
    runs = {"top": [], "random": []}
    for s in seeds:
        for arm, key in (("top", "top"), ("random", f"random_s{s}")):
            tag = f"{arm}_s{s}" if args.lr is None else f"{arm}_lr{args.lr:g}_s{s}"
            r = train(out / "runs" / tag, data["arms"][key]["prefix"], valid, data["tokenizer"],
                      args.iters, s, args.eval_iters, args.lr)
            runs[arm].append({"seed": s, **r})
            print(f"[ablation] {arm} seed {s}: " + ", ".join(f"{k} {v:.4f}" for k, v in r.items() if k != "tokens"),
                  flush=True)
    metrics = [k for k in runs["top"][0] if k not in ("seed", "tokens")]
    median = {a: {m: statistics.median(r[m] for r in rs) for m in metrics} for a, rs in runs.items()}
    pairs = {m: paired([r[m] for r in runs["top"]], [r[m] for r in runs["random"]]) for m in metrics}
    result = {"config": vars(args), "tokens_seen_per_run": seen, "data": data, "runs": runs, "median": median,
              "top_minus_random": {m: median["top"][m] - median["random"][m] for m in metrics}, "paired": pairs}
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{seen:,} tokens seen per run; arms of {data['budget']:,} tokens each; median of {len(seeds)} seeds")
    print(f"{'metric':22s} {'top':>8s} {'random':>8s} {'top-rand':>9s}   paired top-random: mean [95% CI], seeds "
          "favouring top")
    for m in metrics:
        p = pairs[m]
        ci = f"[{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}]" if "ci95" in p else "[-]"
        print(f"{m:22s} {median['top'][m]:8.4f} {median['random'][m]:8.4f} {result['top_minus_random'][m]:+9.4f}   "
              f"{p['mean']:+.4f} {ci} {p['favour_top']}/{p['seeds']}")
    print(f"result: {out / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
