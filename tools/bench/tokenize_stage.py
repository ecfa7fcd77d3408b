"""stage=tokenize benchmark: the whole stage (CLI, executor, encode + merge) against raw sentencepiece encode.

    python -m tools.bench.tokenize_stage [--runs 3] [--mb 4] [--scale 10] [--vocab 4096] [--tasks 1 2] \
        [--baseline /path/to/another/checkout] [--out bench-tokenize-stage.json]

Input: ``.jsonl.zst`` shards shaped like a mix stage's output (``documents/<source>-NNNNN.jsonl.zst`` and
``valid/<source>-NNNNN.jsonl.zst``, every record with ``metadata.mix = {source, split[, epoch]}``), at
``--mb`` MB and ``--scale`` x ``--mb`` MB of DISTINCT text (no document repeated), from the sample kit and
Python's own standard library, nothing downloaded beyond the kit:
  wikipedia  the enwiki sample's articles
  code       every .py module of the standard library (recursively; not site-packages)
  docs       the python_docs, postgres_docs and sqlite_docs HTML pages, tags stripped (a regex, enough here)
  books      botchan in 5-line chunks
documents over 128 Ki characters cut at line ends into pieces of at most that (sentencepiece's own memory
grows with a document's length: so the largest document is about the same at both sizes and the peak RSS
compares what grows with the input), all shuffled together (seed 0) and cut at the size, 5 % of each source's documents going to ``valid``. The
small input is a prefix of the large one's document order.

Tokenizer: ``train_tokenizer`` on enwiki articles 0-69 + the even-numbered top-level stdlib modules (as
tools/bench/tokenize.py does), vocab ``--vocab``; the same model for every arm.

Arms, alternated (the order reversed every other run), at each size:
  raw sentencepiece   ``SentencePieceProcessor.encode(list_of_str, num_threads=1)`` on the same documents
                      already in memory, in this process
  stage, tasks=T      ``python -m data_pipeline stage=tokenize ... executor.tasks=T`` as a subprocess (a fresh
                      output.dir each time): Python start-up, imports, the encode pipeline and the merge
  baseline stage      with --baseline DIR: the same command run from another checkout (tasks=1), e.g. the
                      code before a change, in the same alternated runs
CPU time of the stage arm is the subprocess's and all of its descendants' (``os.wait4``: its pool workers
included); peak RSS is the largest VmHWM of any process of that tree (/proc, polled every 20 ms: the biggest
task's, or the CLI process's when it runs the task itself, tasks=1). MB is UTF-8 bytes
of document text. For each run: MB/s wall, MB per CPU-second, the ratio to raw's per CPU-second (run by run,
then the median), and from the (small, large) pair the stage's fixed cost (CPU-seconds at zero input) and its
marginal rate ((MB_large - MB_small) / (cpu_large - cpu_small)). Medians over ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]+>", re.S | re.I)
_BLANKS = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")


def html_text(page: str) -> str:
    return _BLANKS.sub("\n\n", html.unescape(_TAGS.sub("", page))).strip()


def pieces(text: str, limit: int = 1 << 17) -> list[str]:
    """``text`` cut at line ends into pieces of at most about ``limit`` characters (a longer line stays whole)."""
    if len(text) <= limit:
        return [text]
    out, start = [], 0
    while len(text) - start > limit:
        cut = text.rfind("\n", start, start + limit)
        cut = start + limit if cut <= start else cut + 1
        out.append(text[start:cut])
        start = cut
    return out + [text[start:]]


def corpus() -> tuple[list[str], list[tuple[str, str]]]:
    """(tokenizer training text, [(source, text)] of every distinct document, shuffled)."""
    from data_pipeline.samples import fetch
    from data_pipeline.wikipedia import iter_wikipedia_pages

    paths = fetch(["enwiki", "botchan", "python_docs", "postgres_docs", "sqlite_docs"])
    wiki = [p["text"] for p in iter_wikipedia_pages(paths["enwiki"])]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    top = sorted(stdlib.glob("*.py"))
    code = []
    for path in sorted(stdlib.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            code.append(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            continue
    docs = []
    for name in ("python_docs", "postgres_docs", "sqlite_docs"):
        for path in sorted(paths[name].rglob("*.html")):
            text = html_text(path.read_text(encoding="utf-8", errors="replace"))
            if text:
                docs.append(text)
    lines = paths["botchan"].read_bytes().decode("utf-8").split("\r\n")
    books = ["\r\n".join(lines[i:i + 5]) for i in range(0, len(lines), 5)]
    train = wiki[:70] + [p.read_text(encoding="utf-8") for p in top[0::2]]
    everything = [(source, piece) for source, texts in (("wikipedia", wiki), ("code", code), ("docs", docs),
                                                        ("books", books))
                  for text in texts if text.strip() for piece in pieces(text)]
    random.Random(0).shuffle(everything)
    return train, everything


def take(everything: list[tuple[str, str]], mb: float) -> list[tuple[str, str]]:
    out, size = [], 0
    for source, text in everything:
        if size >= mb * 1e6:
            break
        out.append((source, text))
        size += len(text.encode("utf-8"))
    if size < mb * 1e6:
        raise SystemExit(f"only {size / 1e6:.1f} MB of distinct text in the kit; ask for less (--mb x --scale)")
    return out


def write_mix_like(docs: list[tuple[str, str]], folder: Path, shards: int = 4) -> list[str]:
    """documents/<source>-NNNNN.jsonl.zst (``shards`` per source) and valid/<source>-00000.jsonl.zst; returns
    the texts in the order written (what raw encodes)."""
    import orjson
    import zstandard

    by: dict[tuple[str, str, int], list[bytes]] = {}
    seen: dict[str, int] = {}
    for n, (source, text) in enumerate(docs):
        i = seen[source] = seen.get(source, -1) + 1
        split = "valid" if i % 20 == 19 else "train"
        shard = 0 if split == "valid" else i % shards
        mix = {"source": source, "split": split} | ({"epoch": 0} if split == "train" else {})
        record = {"text": text, "id": f"{source}/{n}", "metadata": {"mix": mix, "file_path": f"{source}/{n}"}}
        by.setdefault((split, source, shard), []).append(orjson.dumps(record) + b"\n")
    for (split, source, shard), lines in by.items():
        sub = folder / ("documents" if split == "train" else "valid")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{source}-{shard:05d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(b"".join(lines)))
    return [text for _, text in docs]


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return pids


def _hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakRss:
    """The largest VmHWM (peak resident set of one process) seen in a process tree, read from /proc every 20 ms.
    Not ru_maxrss: a child's ru_maxrss starts at its parent's at fork, and this benchmark's own process holds
    the whole input in memory for the raw arm."""

    def __init__(self, pid: int):
        import threading

        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            for p in _tree(self.pid):
                self.peak = max(self.peak, _hwm_kib(p))
            self._stop.wait(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_stage(model: Path, data: Path, out: Path, tasks: int, checkout: Path | None = None) -> tuple[float, float, int]:
    """(wall s, CPU s of the process tree, peak RSS KiB of its largest process). ``checkout``: run another
    checkout's code (``python -m`` puts the working directory first on sys.path)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "data_pipeline", "stage=tokenize", f"tokenize.tokenizer={model}",
           f"input.paths=[{data / 'documents'},{data / 'valid'}]", "input.format=jsonl",
           f"executor.tasks={tasks}", f"output.dir={out}", "progress=false"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=checkout)
    rss = PeakRss(proc.pid)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    peak = rss.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"stage=tokenize failed ({proc.returncode}):\n{output.decode(errors='replace')[-4000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    if not (manifest.get("tokenize") or {}).get("consistent"):
        raise SystemExit(f"stage=tokenize: tokens not conserved: {manifest.get('tokenize')}")
    return wall, usage.ru_utime + usage.ru_stime, peak


def _self_cpu() -> float:
    import resource

    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mb", type=float, default=4.0, help="the small input, MB of distinct text")
    ap.add_argument("--scale", type=float, default=10.0, help="the large input is this many times the small")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--tasks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another checkout (e.g. the main branch) whose stage runs as one more arm, tasks=1")
    ap.add_argument("--work", type=Path, default=None, help="keep the inputs and outputs here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)

    import sentencepiece as spm

    from data_pipeline.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory()
        work = Path(tmp.name)
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
    try:
        train, everything = corpus()
        model = train_tokenizer(train, args.vocab, work / "tok", TokenizerTrainConfig(num_threads=2), files=False)
        sp = spm.SentencePieceProcessor(model_file=str(model))
        sizes = {"1x": args.mb, f"{args.scale:g}x": args.mb * args.scale}
        inputs = {}
        for label, mb in sizes.items():
            texts = write_mix_like(take(everything, mb), work / f"in-{label}")
            inputs[label] = {"texts": texts, "mb": sum(len(t.encode("utf-8")) for t in texts) / 1e6}
        arms = ["raw sentencepiece (1 thread)"] + [f"stage, tasks={t}" for t in args.tasks]
        if args.baseline:
            arms.append("baseline stage, tasks=1")
        wall = {(a, s): [] for a in arms for s in sizes}
        cpu = {(a, s): [] for a in arms for s in sizes}
        rss = {(a, s): [] for a in arms for s in sizes}
        for run in range(args.runs):
            plan = [(a, s) for s in sizes for a in arms]
            for arm, size in plan if run % 2 == 0 else reversed(plan):
                if arm.startswith("raw"):
                    texts = inputs[size]["texts"]
                    t0, c0 = time.perf_counter(), _self_cpu()
                    sp.encode(texts, num_threads=1)
                    wall[arm, size].append(time.perf_counter() - t0)
                    cpu[arm, size].append(_self_cpu() - c0)
                else:
                    tasks = int(arm.rsplit("=", 1)[1])
                    checkout = args.baseline.resolve() if arm.startswith("baseline") else None
                    w, c, r = run_stage(model, work / f"in-{size}", work / f"out-{size}-{tasks}", tasks, checkout)
                    wall[arm, size].append(w)
                    cpu[arm, size].append(c)
                    rss[arm, size].append(r)
                print(f"run {run + 1} {arm} {size}: {wall[arm, size][-1]:.2f} s wall, {cpu[arm, size][-1]:.2f} "
                      f"CPU-s", file=sys.stderr, flush=True)
        raw = arms[0]
        small, large = list(sizes)
        result = {"vocab_size": args.vocab, "runs": args.runs, "cpus": os.cpu_count(),
                  "inputs": {s: {"mb": round(inputs[s]["mb"], 3), "documents": len(inputs[s]["texts"])}
                             for s in sizes}, "arms": {}}
        for arm in arms:
            row = {}
            for size in sizes:
                mb = inputs[size]["mb"]
                row[size] = {
                    "mb_per_s": round(statistics.median(mb / t for t in wall[arm, size]), 3),
                    "mb_per_cpu_second": round(statistics.median(mb / c for c in cpu[arm, size]), 3),
                    "ratio_to_raw_per_cpu_second": round(statistics.median(
                        r / c for r, c in zip(cpu[raw, size], cpu[arm, size])), 3),
                    "ratio_to_raw_wall": round(statistics.median(
                        r / c for r, c in zip(wall[raw, size], wall[arm, size])), 3),
                    "seconds": [round(t, 3) for t in wall[arm, size]],
                    "cpu_seconds": [round(c, 3) for c in cpu[arm, size]],
                }
                if rss[arm, size]:
                    row[size]["peak_rss_mib"] = round(statistics.median(rss[arm, size]) / 1024, 1)
            d_mb = inputs[large]["mb"] - inputs[small]["mb"]
            marginal = [d_mb / (cl - cs) for cs, cl in zip(cpu[arm, small], cpu[arm, large])]
            fixed = [cs - inputs[small]["mb"] / m for cs, m in zip(cpu[arm, small], marginal)]
            marginal_raw = [d_mb / (cl - cs) for cs, cl in zip(cpu[raw, small], cpu[raw, large])]
            row["marginal_mb_per_cpu_second"] = round(statistics.median(marginal), 3)
            row["marginal_ratio_to_raw"] = round(statistics.median(m / r for m, r in zip(marginal, marginal_raw)), 3)
            row["fixed_cpu_seconds"] = round(statistics.median(fixed), 3)
            result["arms"][arm] = row
        print(json.dumps(result, indent=2))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
