"""Dedup benchmark: signatures vs datatrove's MinhashDedupSignature (same run, same documents, one core),
decisions on the labelled set, whole-stage time and peak RSS per task at 1x/4x/16x distinct input, and the
agreement of our removals with datatrove's full four-stage MinHash pipeline.

    python -m tools.bench.dedup [--runs 3] [--scales 1,4,16] [--out bench-dedup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def signature_arms(texts: list[str], runs: int) -> dict:
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    from data_pipeline.dedup.minhash import MinHasher, MinHashParams

    ours = MinHasher(MinHashParams())
    theirs = MinhashDedupSignature(output_folder=tempfile.mkdtemp(), config=MinhashConfig())
    mb = sum(len(t.encode()) for t in texts) / 1e6
    arms = {"ours": lambda t: ours.signature(t), "datatrove": lambda t: theirs.get_signature(theirs.get_shingles(t))}
    times = {k: [] for k in arms}
    arms["datatrove"](texts[0])  # load its word tokenizer outside the timing
    for _ in range(runs):
        for name, fn in arms.items():  # interleaved, so both arms see the same machine load
            start = time.process_time()
            for t in texts:
                fn(t)
            times[name].append(time.process_time() - start)
    out = {name: {"mb_per_s_per_core": round(mb / statistics.median(v), 3),
                  "docs_per_s": round(len(texts) / statistics.median(v), 1), "cpu_s": [round(x, 2) for x in v]}
           for name, v in times.items()}
    out["ratio_ours_over_datatrove"] = round(out["ours"]["mb_per_s_per_core"] / out["datatrove"]["mb_per_s_per_core"], 2)
    out["mb"], out["documents"], out["runs"] = round(mb, 2), len(texts), runs
    return out


def labelled_decisions(docs) -> dict:
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    from data_pipeline.dedup.labelled import evaluate, labelled_pairs, predicted
    from data_pipeline.dedup.minhash import MinHasher, MinHashParams

    params = MinHashParams()
    hasher = MinHasher(params)
    pairs = labelled_pairs(docs, hasher)
    theirs = MinhashDedupSignature(output_folder=tempfile.mkdtemp(), config=MinhashConfig())

    def dt(a, b):
        sa, sb = (theirs.get_signature(theirs.get_shingles(x)) for x in (a, b))
        return any(x == y for x, y in zip(sa, sb))

    agree = [predicted(hasher, 0.72, a, b) == dt(a, b) for _, a, b in pairs]
    dt_low = sum(dt(a, b) for j, a, b in pairs if j < 0.6)
    return {"ours": evaluate(pairs, params, 0.72), "pairs": len(pairs),
            "decision_agreement_with_datatrove": round(sum(agree) / len(agree), 4),
            "datatrove_band_collisions_below_0.6": int(dt_low)}


def write_corpus(folder: Path, scale: int, seed: int = 0) -> int:
    """1500 * scale distinct documents (new random text at every scale), 10% near and 5% exact copies."""
    rng = random.Random(seed * 1000 + scale)
    # alphabetic words: datatrove's text normalisation maps every digit to 0, so "v123" words would all agree
    vocab = ["".join(chr(97 + (i // 26 ** k) % 26) for k in range(4)) for i in range(30000)]
    folder.mkdir(parents=True, exist_ok=True)
    n, files = 0, [open(folder / f"{f:04d}.jsonl", "w") for f in range(4 * scale)]
    for i in range(1500 * scale):
        words = [rng.choice(vocab) for _ in range(250)]
        rows = [words]
        if rng.random() < 0.10:
            near = list(words)
            for k in rng.sample(range(250), 5):
                near[k] = rng.choice(vocab)
            rows.append(near)
        if rng.random() < 0.05:
            rows.append(list(words))
        for r in rows:
            files[rng.randrange(len(files))].write(json.dumps({"id": f"s{scale}-{n}", "text": " ".join(r)}) + "\n")
            n += 1
    for f in files:
        f.close()
    return n


def cli(*args) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "data_pipeline", *args], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def scaling(root: Path, scales: list[int], workers: int) -> dict:
    out = {}
    for s in scales:
        inp = root / f"in{s}"
        n = write_corpus(inp, s)
        res = root / f"out{s}"
        wall = cli("stage=dedup", "dedup=fineweb", f"input.paths=[{inp}]", "input.format=jsonl",
                   f"executor.tasks={s}", f"executor.workers={workers}", f"output.dir={res}", "progress=false")
        m = json.loads((res / "manifest.json").read_text())
        out[f"{s}x"] = {"documents": n, "mb": round(sum(p.stat().st_size for p in inp.iterdir()) / 1e6, 1),
                        "tasks": s, "wall_s": round(wall, 1), "peak_rss_mb_per_task": m["dedup"]["peak_rss_mb_per_task"],
                        "removed": m["removed"].get("dedup", {}), "balanced": m["balanced"]}
    first = out[f"{scales[0]}x"]
    for s in scales[1:]:
        row = out[f"{s}x"]
        row["time_ratio_vs_1x"] = round(row["wall_s"] / first["wall_s"], 2)
        row["rss_ratio_vs_1x"] = {k: round(v / first["peak_rss_mb_per_task"][k], 2)
                                  for k, v in row["peak_rss_mb_per_task"].items()}
    return out


def datatrove_agreement(root: Path) -> dict:
    """Both pipelines, MinHash only (fineweb settings), 1 task, keep the first copy: removal sets compared."""
    import zstandard
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    inp, dt = root / "in1", root / "dt"
    cfg = MinhashConfig()
    run = lambda steps, tasks=1: LocalPipelineExecutor(steps, tasks=tasks, logging_dir=str(dt / f"logs{len(str(steps))}")).run()  # noqa: E731
    start = time.perf_counter()
    run([JsonlReader(str(inp)), MinhashDedupSignature(output_folder=str(dt / "sigs"), config=cfg)])
    LocalPipelineExecutor([MinhashDedupBuckets(input_folder=str(dt / "sigs"), output_folder=str(dt / "buckets"),
                                               config=cfg)], tasks=cfg.num_buckets, logging_dir=str(dt / "l2")).run()
    LocalPipelineExecutor([MinhashDedupCluster(input_folder=str(dt / "buckets"), output_folder=str(dt / "remove"),
                                               config=cfg)], tasks=1, logging_dir=str(dt / "l3")).run()
    LocalPipelineExecutor([JsonlReader(str(inp)), MinhashDedupFilter(
        input_folder=str(dt / "remove"), exclusion_writer=JsonlWriter(str(dt / "removed"), compression=None))],
        tasks=1, logging_dir=str(dt / "l4")).run()
    dt_wall = time.perf_counter() - start
    theirs = {json.loads(x)["id"] for p in (dt / "removed").glob("*") for x in p.read_text().splitlines()}
    ours_dir = root / "ours_mh"
    wall = cli("stage=dedup", "dedup=fineweb", "dedup.exact=false", "dedup.url=false", "dedup.keep=first",
               f"input.paths=[{inp}]", "input.format=jsonl", "executor.tasks=1", f"output.dir={ours_dir}",
               "progress=false")
    ours = set()
    for p in (ours_dir / "removed").glob("*.zst"):
        ours |= {json.loads(x)["id"] for x in zstandard.ZstdDecompressor().decompressobj().decompress(
            p.read_bytes()).decode().splitlines()}
    return {"ours_removed": len(ours), "datatrove_removed": len(theirs), "both": len(ours & theirs),
            "only_ours": len(ours - theirs), "only_datatrove": len(theirs - ours),
            "jaccard_of_removal_sets": round(len(ours & theirs) / max(1, len(ours | theirs)), 4),
            "wall_s_ours": round(wall, 1), "wall_s_datatrove": round(dt_wall, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scales", default="1,4,16")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--parts", default="signatures,labelled,scaling,datatrove")
    args = ap.parse_args(argv)
    from data_pipeline.dedup.labelled import base_documents
    from data_pipeline.samples import fetch

    docs = base_documents(fetch(["botchan"])["botchan"].read_text(), max_copyright=100)
    parts, result = args.parts.split(","), {}
    if "signatures" in parts:
        result["signatures"] = signature_arms([t for _, t in docs], args.runs)
        print(json.dumps(result, indent=1), flush=True)
    if "labelled" in parts:
        result["labelled_decisions"] = labelled_decisions(docs)
        print(json.dumps(result["labelled_decisions"], indent=1), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scales = [int(s) for s in args.scales.split(",")]
        if "scaling" in parts or "datatrove" in parts:
            result["scaling"] = scaling(root, scales if "scaling" in parts else scales[:1], args.workers)
            print(json.dumps(result["scaling"], indent=1), flush=True)
        if "datatrove" in parts:
            result["datatrove_full_pipeline"] = datatrove_agreement(root)
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
