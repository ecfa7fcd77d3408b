"""`make quickstart`: the whole job on the sample-data kit, on CPU.

1. run the data pipeline on the sample kit, `python -m data_pipeline pipeline=full` (crawl pages from WARCs and
   Debian's HTML documentation, a Wikipedia dump excerpt and a book: extract, filter, dedup, quality classifier
   and scoring, a 4k BPE, the demo mixture, token shards, blend.json and a data card) into data/quickstart/pipeline/;
2. also write Wikipedia-only shards with their own 4k BPE into data/quickstart/ (the trainer's default data config);
3. train the tiny Llama-style model on the pipeline's blend with 2 processes (torchrun, data parallel) for a few
   hundred steps, with a validation loss per source;
5. sample from it (KV cache; temperature / top-p and greedy), export it to Hugging Face format and generate from
   the export through transformers;
6. train a scaling ladder (on shards of a 512-piece BPE), fit it, plot it, print the compute-optimal answer for a
   stated budget, then predict the loss of a run at 4x the ladder's largest budget, train it and compare.
Each step is skipped when its output is already there, so a second run goes straight to training.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "quickstart"
VOCAB = 4096
LADDER_VOCAB = 512  # the ladder's small vocabulary: its models are mostly non-embedding parameters


def build_data(data_dir: Path = DATA, vocab_size: int = VOCAB) -> list[str]:
    """Samples -> tokenizer -> shards. Returns the trainer overrides that point at them."""
    from data_pipeline.samples import fetch
    from data_pipeline.tokenizer.encode import encode_documents
    from data_pipeline.tokenizer.train import train_tokenizer
    from data_pipeline.wikipedia import iter_wikipedia_pages

    data_dir.mkdir(parents=True, exist_ok=True)
    paths = fetch(["enwiki", "botchan"])
    tokenizer = data_dir / "tokenizer.model"
    prefix = data_dir / "enwiki_text_document"
    shard_idx = Path(str(prefix) + ".idx")
    overrides = [f"data.paths=[{prefix}]", f"data.tokenizer_model={tokenizer}"]
    if tokenizer.is_file() and shard_idx.is_file():
        return overrides
    docs = [p["text"] for p in iter_wikipedia_pages(paths["enwiki"])]  # parsed once for both steps
    if not tokenizer.is_file():
        print(f"[quickstart] training a {vocab_size}-token lossless BPE on {paths['enwiki'].name}", flush=True)
        train_tokenizer(docs, vocab_size, data_dir / "tokenizer", files=False)
        shard_idx.unlink(missing_ok=True)  # shards of an older tokenizer would no longer match
    if not shard_idx.is_file():
        stats = encode_documents(docs, tokenizer, prefix)
        print(f"[quickstart] wrote {prefix}.bin/.idx: {stats.get('documents')} documents, "
              f"{stats.get('tokens'):,} tokens, {stats.get('bytes_per_token', 0):.2f} bytes/token", flush=True)
    return overrides


def build_pipeline_data(out: Path = DATA / "pipeline", tasks: int = 2) -> list[str]:
    """pipeline=full on the sample kit (resumable: finished steps are skipped). Returns the trainer overrides."""
    cmd = [sys.executable, "-m", "data_pipeline", "pipeline=full", f"output.dir={out}", f"executor.tasks={tasks}",
           "progress=false"]
    print("[quickstart] " + " ".join(cmd[1:]) + f"  (log: {out}.log)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{out}.log", "w") as log:
        done = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = Path(f"{out}.log").read_text().splitlines()[-15:]
        raise SystemExit("[quickstart] the data pipeline failed:\n" + "\n".join(tail))
    card = json.loads((out / "data_card.json").read_text())
    for name, s in card["mixture"]["sources"].items():
        print(f"[quickstart] {name:10s} {card['sources'][name]['read']:6,} documents read, "
              f"{card['sources'][name]['after_filter']:6,} after filters, {s['realised_tokens']:9,} training tokens "
              f"({s['realised_share']:.1%} of the mixture, {s['epochs']:.2f} epochs)", flush=True)
    print(f"[quickstart] data card: {out / 'data_card.md'}", flush=True)
    return card["trainer_overrides"]


def train(run_dir: Path, overrides: list[str], nproc: int, iters: int) -> Path:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
           "-m", "pretrain", "model=tiny", f"train.iters={iters}", "train.eval_interval=50",
           "train.save_interval=100", "train.log_interval=10", f"run.dir={run_dir}",
           "logging.wandb.mode=offline", *overrides]
    print("[quickstart] " + " ".join(cmd[2:]), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_SILENT="true")
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return run_dir


def summarize(run_dir: Path) -> None:
    from pretrain.metrics import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if r.get("loss") is not None]
    vals = [r for r in rows if r.get("val_loss") is not None]
    first, last = train_rows[0], train_rows[-1]
    print(f"\n[quickstart] loss {first['loss']:.3f} at step {first['step']} -> {last['loss']:.3f} at step "
          f"{last['step']} ({last['tokens']:,} tokens)")
    if vals:
        print("[quickstart] validation loss: " + ", ".join(f"{r['step']}: {r['val_loss']:.3f}" for r in vals))
        per_source = {k.split("/", 1)[1]: v for k, v in vals[-1].items() if k.startswith("val_loss/")}
        if per_source:
            print("[quickstart] validation loss per source at step " + f"{vals[-1]['step']}: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in sorted(per_source.items())))
    print(f"[quickstart] run directory: {run_dir} (metrics.jsonl, checkpoints/, wandb/)")


def use_model(run_dir: Path) -> None:
    """Sample from the trained model, export it to Hugging Face format and load it back through transformers."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for args in (["prompt=It was", "num_samples=3", "temperature=0.8", "top_p=0.95", "seed=1",
                  "max_new_tokens=40"],
                 ["prompt=It was", "temperature=0", "max_new_tokens=40"]):
        cmd = [sys.executable, "-m", "pretrain.generate", f"run.dir={run_dir}", *args]
        print("[quickstart] " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    hf_dir = run_dir / "hf"
    cmd = [sys.executable, "-m", "pretrain.export_hf", str(run_dir), str(hf_dir)]
    print("[quickstart] " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    out = model.generate(**tok("It was", return_tensors="pt"), max_new_tokens=30, do_sample=False)
    print(f"[quickstart] transformers, greedy, from {hf_dir}: {tok.decode(out[0])!r}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "quickstart"))
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--no-ladder", action="store_true", help="skip the scaling-ladder part")
    ap.add_argument("--budget", type=float, default=1e13,
                    help="FLOPs budget for the compute-optimal answer (default: 10x the ladder's largest)")
    args = ap.parse_args(argv)
    t0 = time.time()
    build_data()  # the default data config's shards (conf/pretrain/data/quickstart.yaml)
    overrides = build_pipeline_data()
    run_dir = Path(args.run_dir)
    train(run_dir, overrides, args.nproc, args.iters)
    summarize(run_dir)
    use_model(run_dir)
    if not args.no_ladder:
        from tools.scaling import quickstart_ladder

        ladder_data = build_data(DATA / f"ladder_bpe{LADDER_VOCAB}", LADDER_VOCAB)
        quickstart_ladder(ladder_data, ROOT / "runs" / "quickstart_ladder", args.budget)
    print(f"[quickstart] done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
