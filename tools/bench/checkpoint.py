"""Checkpoint save and load time, `full` vs `dcp` (sync and async), on the trainer's own model and optimizer.

    python -m tools.bench.checkpoint [--shape 125m] [--layouts dp1 dp2 dp2-distopt tp2] [--runs 3] [--dir /tmp/ckpt_bench]

Per layout, one torchrun job builds the model and megatron optimizer (Adam moments allocated by one step on
zero gradients), then for --runs rounds saves and loads with each arm in turn (alternated, so drift in the
shared machine hits every arm alike). Times, medians over the rounds:
  resume_s   from save() until it returns: when training could continue (async: the CPU staging copy and
             the hand-off to the background thread)
  commit_s   from save() until the checkpoint is committed (async: save() then wait(), nothing else running)
  verify_s   find_resumable_parallel: every rank checks the sha256 of its share of the files
  load_s     load() into this layout's model and optimizer
Bytes are the checkpoint's files; write MB/s per rank is the largest bytes one rank wrote over commit_s; the
staging rate is the largest state one rank hands to dcp (what async copies) over dcp-async's resume_s.
The table gives each arm's ratio to the `full` arm measured in the same job, and projects an 8B save from the
measured per-rank write rate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARMS = {"full": ("full", False), "dcp-sync": ("dcp", False), "dcp-async": ("dcp", True)}
LAYOUTS = {"dp1": (1, []), "dp2": (2, []), "dp2-distopt": (2, ["parallel.distributed_optimizer=true"]),
           "tp2": (2, ["parallel.tp=2"])}
PARAMS_8B = 8.03e9


def worker(a) -> None:
    import torch

    from pretrain import checkpoint, runtime
    from pretrain import config as C
    from pretrain.train import build_model_and_optimizer

    cfg = C.load([f"model={a.shape}", f"model.vocab_size={a.vocab}", "train.global_batch_size=2",
                  "train.micro_batch_size=1", "optim.warmup_iters=0", *a.overrides])
    env = runtime.dist_env()
    layout = C.validate(cfg, env.world_size, check_data=False)
    device = runtime.init_distributed(env)
    from megatron.core import parallel_state, tensor_parallel

    parallel_state.initialize_model_parallel(tensor_model_parallel_size=layout.tp,
                                             pipeline_model_parallel_size=layout.pp)
    tensor_parallel.model_parallel_cuda_manual_seed(0)
    model, optimizer = build_model_and_optimizer(cfg, layout, C.model_vocab_size(cfg), False, device)
    for m in model:  # one update on zero gradients: Adam's moments exist, as in a real run
        m.zero_grad_buffer()
    optimizer.step()
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    staged = torch.tensor([sum(t.numel() * t.element_size()
                               for t in checkpoint._local_state(model, optimizer, False)[0].values())])
    torch.distributed.all_reduce(staged, op=torch.distributed.ReduceOp.MAX)
    root = Path(a.dir)
    rows = {arm: [] for arm in ARMS}
    for r in range(a.runs):
        for arm, (fmt, async_save) in ARMS.items():
            ckpts = root / arm
            if rank == 0 and ckpts.exists():
                shutil.rmtree(ckpts)
            torch.distributed.barrier()
            saver = checkpoint.Checkpointer(fmt, async_save)
            t0 = time.perf_counter()
            path = saver.save(ckpts, 1, model, optimizer, {"consumed_samples": 0}, save_main=False)
            resume = time.perf_counter() - t0
            saver.wait()
            torch.distributed.barrier()
            commit = time.perf_counter() - t0
            t1 = time.perf_counter()
            found, _ = checkpoint.find_resumable_parallel(ckpts)
            verify = time.perf_counter() - t1
            assert found == path, (found, path)
            torch.distributed.barrier()
            t2 = time.perf_counter()
            checkpoint.load(path, model, optimizer)
            torch.distributed.barrier()
            load = time.perf_counter() - t2
            sizes = {f.name: f.stat().st_size for f in path.iterdir() if f.is_file()}
            per_rank = _bytes_per_rank(path, fmt, world, sizes)
            times = torch.tensor([resume, commit, verify, load], dtype=torch.float64)
            torch.distributed.all_reduce(times, op=torch.distributed.ReduceOp.MAX)
            rows[arm].append({"resume_s": times[0].item(), "commit_s": times[1].item(),
                              "verify_s": times[2].item(), "load_s": times[3].item(),
                              "bytes": sum(sizes.values()), "max_rank_bytes": max(per_rank)})
            if rank == 0:
                print(f"round {r + 1} {arm}: " + ", ".join(f"{k} {v:.2f}" for k, v in rows[arm][-1].items()
                                                           if k.endswith("_s")), flush=True)
    if rank == 0:
        nparams = sum(p.numel() for m in model for p in m.parameters()) * layout.tp * layout.pp
        Path(a.out).write_text(json.dumps({"rows": rows, "world": world, "params": nparams,
                                           "staged_rank_bytes": int(staged.item()),
                                           "layout": layout.describe(), "tp_pp": layout.tp * layout.pp}))
    runtime.destroy()


def _bytes_per_rank(path: Path, fmt: str, world: int, sizes: dict) -> list[int]:
    if fmt == "full":  # rank r wrote tensors_rank<r>.pt
        return [sizes.get(f"tensors_rank{r:05d}.pt", 0) for r in range(world)]
    out = []
    for r in range(world):
        files = json.loads((path / "sha256" / f"rank{r:05d}.json").read_text())
        out.append(sum(sizes.get(f, 0) for f in files))
    return out


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(x[key] for x in rows)


def report(name: str, res: dict) -> list[str]:
    rows, runs = res["rows"], len(res["rows"]["full"])
    lines = [f"\n{name}: {res['layout']}, {res['params'] / 1e6:.1f}M params, fp32 (weights + Adam moments), "
             f"median of {runs} alternated rounds"]
    lines.append(f"{'arm':10s} {'resume_s':>9s} {'commit_s':>9s} {'verify_s':>9s} {'load_s':>8s} "
                 f"{'MB':>7s} {'MB/s/rank':>10s}   ratios to full: resume commit verify load")
    base = {k: _median(rows["full"], k) for k in ("resume_s", "commit_s", "verify_s", "load_s")}
    for arm, rs in rows.items():
        m = {k: _median(rs, k) for k in base}
        bw = statistics.median(x["max_rank_bytes"] / x["commit_s"] for x in rs) / 1e6
        lines.append(f"{arm:10s} {m['resume_s']:9.2f} {m['commit_s']:9.2f} {m['verify_s']:9.2f} "
                     f"{m['load_s']:8.2f} {rs[0]['bytes'] / 1e6:7.0f} {bw:10.0f}   "
                     + " ".join(f"{m[k] / base[k]:.2f}" for k in base))
    return lines


def projection(results: dict) -> list[str]:
    """An 8B save from the per-rank rates measured here: write (dcp-sync, and full's one writer per stage) and
    staging (dcp-async's resume_s over the state one rank hands to dcp). From the distributed-optimizer layout
    when measured (how an 8B model trains): each rank then stages its TP/PP-local weights and 1/world of the
    optimizer state."""
    name = next((n for n in ("dp2-distopt", "dp2", "tp2") if n in results), next(iter(results)))
    res = results[name]
    rows = res["rows"]
    bw = {arm: statistics.median(x["max_rank_bytes"] / x["commit_s"] for x in rows[arm])
          for arm in ("full", "dcp-sync")}
    stage = statistics.median(res["staged_rank_bytes"] / x["resume_s"] for x in rows["dcp-async"])
    distopt = name == "dp2-distopt"
    total = PARAMS_8B * 14
    lines = [f"\n8B projection ({PARAMS_8B / 1e9:.2f}B params x (bf16 weight 2 + fp32 main 4 + Adam 8) = 14 bytes/param "
             f"= {total / 1e9:.0f} GB), from the {name} rates measured here: write full {bw['full'] / 1e6:.0f}, "
             f"dcp {bw['dcp-sync'] / 1e6:.0f} MB/s per rank, async staging {stage / 1e6:.0f} MB/s per rank; assumes "
             "every rank keeps that rate (the filesystem's aggregate bandwidth is not the limit) and TP=8"
             + (", distributed optimizer:" if distopt else ":")]
    for ranks, pp in [(8, 1), (64, 2), (256, 4)]:
        full = total / pp / bw["full"]  # one writer per pipeline stage, after the TP gather
        dcp = total / ranks / bw["dcp-sync"]  # every rank writes its share
        # what one rank stages: its TP/PP-local weights, and its shard of the optimizer state (distributed) or
        # the whole TP/PP-local optimizer state (replicated over DP)
        per_rank = PARAMS_8B * (2 / (8 * pp) + 12 / ranks) if distopt else total / (8 * pp)
        lines.append(f"  {ranks:4d} ranks (TP=8, PP={pp}): full {full / 60:6.1f} min ({pp} writers); dcp sync "
                     f"{dcp:6.1f} s ({ranks} writers); dcp async: training resumes after {per_rank / stage:5.1f} s")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="125m")
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--layouts", nargs="+", default=["dp1", "dp2", "dp2-distopt", "tp2"], choices=list(LAYOUTS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where checkpoints are written (default: a temporary dir)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    base = Path(a.dir or tempfile.mkdtemp(prefix="ckpt_bench_"))
    results = {}
    for name in a.layouts:
        nproc, extra = LAYOUTS[name]
        out = base / f"{name}.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               "-m", "tools.bench.checkpoint", "--worker", "--shape", a.shape, "--vocab", str(a.vocab),
               "--runs", str(a.runs), "--dir", str(base / name), "--out", str(out), *extra]
        print(f"== {name}: {' '.join(cmd[3:])}", flush=True)
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
        results[name] = json.loads(out.read_text())
        shutil.rmtree(base / name, ignore_errors=True)
    lines = []
    for name, res in results.items():
        lines += report(name, res)
    lines += projection(results)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
