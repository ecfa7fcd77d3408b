"""Tokenizer training settings: compression on held-out text, and training memory and time per sampled byte.

    python -m tools.bench.tokenize_settings [--arms "NAME;..."] [--vocab 4096] [--mem-mb 16,64] [--out FILE.json]

Each arm is a set of TokenizerTrainConfig overrides (ARMS below). For each arm, in a fresh subprocess:
  compression  train_tokenizer on tools.bench.tokenize's training sample (enwiki 0-69 + the even stdlib
               modules, vocab --vocab, 2 threads); bytes/token (UTF-8 bytes / tokens, no EOD) on its held-out
               sets (enwiki 70-105, botchan in 5-line chunks, the odd stdlib modules); the round trip and the
               exported tokenizer.json's ids checked on all held-out documents
  memory       train_tokenizer on the first N MB (--mem-mb) of distinct .py files of this environment's
               site-packages (sorted by path, duplicates by content dropped): peak RSS of the process
               (ru_maxrss), the RSS just before training (the text in memory), the training time, and
               bytes/token on the same held-out sets (stdlib is not in site-packages)
The slope between the smallest and largest size is the training memory per sampled byte (MB of RSS per MB
sampled).
Training is deterministic for a seed and thread count, so one run per arm gives its compression; times are
wall clock on whatever the machine is doing (2 threads).
The Hugging Face ByteLevelBPETokenizer on the same sample and vocab is measured once, as "hf byte-level".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

# every arm spells out its settings, so arms keep their meaning whatever the defaults are
OLD = {"split_digits": True, "max_piece_length": 16, "split_by_unicode_script": True, "split_by_number": True,
       "split_by_whitespace": True}  # the settings before pieces could span words
_WORDS = {**OLD, "split_digits": False, "split_by_unicode_script": False, "split_by_number": False}
_SPAN = {**OLD, "split_by_whitespace": False, "split_by_unicode_script": False}  # the new default
ARMS: dict[str, dict] = {
    "old default": OLD,
    "split_digits off": {**OLD, "split_digits": False},
    "max_piece_length 32": {**OLD, "max_piece_length": 32},
    "split_by_unicode_script off": {**OLD, "split_by_unicode_script": False},
    "split_by_number off": {**OLD, "split_by_number": False},
    "split_by_whitespace off": {**OLD, "split_by_whitespace": False},
    "coverage 0.999": {**OLD, "character_coverage": 0.999},
    "script off + coverage 0.999": {**OLD, "split_by_unicode_script": False, "character_coverage": 0.999},
    "digits+script+number off": _WORDS,
    "digits+script+number off + length 24": {**_WORDS, "max_piece_length": 24},
    "digits+script+number off + length 32": {**_WORDS, "max_piece_length": 32},
    "digits+script+number off + coverage 0.999": {**_WORDS, "character_coverage": 0.999},
    "digits+script+number off + coverage 0.998": {**_WORDS, "character_coverage": 0.998},
    "whitespace+script off": _SPAN,
    "whitespace+script off + length 32": {**_SPAN, "max_piece_length": 32},
    "all off + length 32": {**_WORDS, "split_by_whitespace": False, "max_piece_length": 32},
}


def python_text(mb: float) -> list[str]:
    """The first mb MB of distinct .py files under site-packages, by sorted path."""
    root = Path(sysconfig.get_paths()["purelib"])
    seen, docs, total = set(), [], 0
    for path in sorted(root.rglob("*.py")):
        try:
            data = path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        digest = hashlib.sha256(data).digest()
        if not text or digest in seen or "\u2581" in text:
            continue
        seen.add(digest)
        docs.append(text)
        total += len(data)
        if total >= mb * 1e6:
            break
    return docs


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(job: dict) -> dict:
    """One training in this process: {"kind": "compression"|"memory", "overrides": {...}, ...}."""
    import tempfile

    from data_pipeline.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    config = TokenizerTrainConfig(**{"num_threads": 2, "sample_bytes": 0, "check_memory": False, **job["overrides"]})
    if job["kind"] == "compression":
        from tools.bench.tokenize import corpora

        train, held = corpora()
    else:
        from tools.bench.tokenize import corpora

        train, held = python_text(job["mb"]), corpora()[1]
    sampled = sum(len(d.encode("utf-8")) for d in train)
    before = _rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = train_tokenizer(train, job["vocab"], Path(tmp) / "tok", config, files=False)
        seconds = time.perf_counter() - start
        peak = _peak_mb()
        out = {"sampled_mb": round(sampled / 1e6, 3), "rss_before_mb": round(before, 1), "peak_rss_mb": round(peak, 1),
               "train_seconds": round(seconds, 2)}
        if held:
            import sentencepiece as spm
            from tokenizers import Tokenizer

            sp = spm.SentencePieceProcessor(model_file=str(model))
            hf = Tokenizer.from_file(str(model.with_suffix(".tokenizer.json")))
            out["bytes_per_token"], lossless, same_ids = {}, True, True
            for name, docs in held.items():
                ids = sp.encode(docs)
                lossless &= all(sp.decode(i).encode("utf-8") == d.encode("utf-8") for i, d in zip(ids, docs))
                same_ids &= [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)] == ids
                out["bytes_per_token"][name] = round(sum(len(d.encode("utf-8")) for d in docs) / sum(map(len, ids)), 4)
            out["lossless"], out["hf_export_same_ids"] = lossless, same_ids
    return out


def hf_reference(vocab: int) -> dict:
    from tokenizers import ByteLevelBPETokenizer

    from tools.bench.tokenize import corpora

    train, held = corpora()
    hf = ByteLevelBPETokenizer()
    hf.train_from_iterator(train, vocab_size=vocab, special_tokens=["<|endoftext|>"], show_progress=False)
    return {name: round(sum(len(d.encode("utf-8")) for d in docs) / sum(len(e.ids) for e in hf.encode_batch(docs)), 4)
            for name, docs in held.items()}


def run_child(job: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "tools.bench.tokenize_settings", "--child", json.dumps(job)],
                          capture_output=True, text=True)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default=";".join(ARMS), help="names from ARMS, separated by ;")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--mem-mb", default="16,64", help="memory arm sizes, MB of distinct Python ('' to skip)")
    ap.add_argument("--no-compression", action="store_true")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="also write (and update) the results as JSON here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    result = json.loads(args.out.read_text()) if args.out and args.out.exists() else {}
    result.setdefault("vocab_size", args.vocab)
    if not args.no_hf:
        result["hf byte-level"] = hf_reference(args.vocab)
        print("hf byte-level", result["hf byte-level"], flush=True)
    sizes = [float(x) for x in args.mem_mb.split(",") if x]
    for name in args.arms.split(";"):
        arm = result.setdefault("arms", {}).setdefault(name, {})
        arm["overrides"] = ARMS[name]
        if not args.no_compression:
            arm["compression"] = run_child({"kind": "compression", "overrides": ARMS[name], "vocab": args.vocab})
            print(name, "compression", arm["compression"], flush=True)
        for mb in sizes:
            arm.setdefault("memory", {})[f"{mb:g}"] = run_child(
                {"kind": "memory", "overrides": ARMS[name], "vocab": args.vocab, "mb": mb})
            print(name, f"memory {mb:g} MB", arm["memory"][f"{mb:g}"], flush=True)
        if len(sizes) >= 2 and all("peak_rss_mb" in arm["memory"][f"{mb:g}"] for mb in (min(sizes), max(sizes))):
            lo, hi = (arm["memory"][f"{mb:g}"] for mb in (min(sizes), max(sizes)))
            arm["rss_mb_per_sampled_mb"] = round((hi["peak_rss_mb"] - lo["peak_rss_mb"]) /
                                                 (hi["sampled_mb"] - lo["sampled_mb"]), 2)
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
