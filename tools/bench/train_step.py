"""Benchmark: our training step against bare megatron-core on the same model, batch and layout.

Ours: `python -m pretrain` (data loading from the .bin/.idx shards, metrics, schedule, everything), timed by
its own metrics.jsonl (step_time_s, data_wait_frac). Bare: megatron-core's forward_backward_func plus
optimizer.step() on the same GPTModel, with pre-built random token batches and nothing else. Both run in the
same invocation, alternating, and the report gives median step-time ratios, the data-wait fraction and
peak memory per rank.

    python -m tools.bench.train_step [--shapes tiny 125m] [--steps 12] [--nproc 1]

Needs the quickstart shards (make quickstart) or --data PREFIX --tokenizer MODEL.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SHAPE_OVERRIDES = {  # batch sized for CPU; the 125m shape at a shorter sequence to fit a CPU benchmark
    "tiny": ["model=tiny", "train.global_batch_size=16", "train.micro_batch_size=4"],
    "125m": ["model=125m", "model.seq_length=256", "train.global_batch_size=4", "train.micro_batch_size=2"],
}


def bare(overrides: list[str], steps: int, out: str) -> None:
    """Runs inside each rank: megatron-core only, on random tokens."""
    import torch
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from pretrain import config as C
    from pretrain import runtime
    from pretrain.model import build_model_chunks, init_weights

    cfg = C.load(overrides)
    env = runtime.dist_env()
    runtime.init_distributed(env)
    p, t = cfg.parallel, cfg.train
    parallel_state.initialize_model_parallel(p.tp, p.pp, virtual_pipeline_model_parallel_size=p.vpp)
    tensor_parallel.model_parallel_cuda_manual_seed(0)
    vocab = C.model_vocab_size(cfg)
    chunks = build_model_chunks(cfg.model, p, vocab, False)
    init_weights(chunks, cfg.model, 0)
    tcfg = chunks[0].config
    model = [DistributedDataParallel(tcfg, DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, use_distributed_optimizer=p.distributed_optimizer), c,
        disable_bucketing=i > 0) for i, c in enumerate(chunks)]
    tcfg.finalize_model_grads_func = finalize_model_grads
    opt = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=1e-4, clip_grad=1.0,
                                                 use_distributed_optimizer=p.distributed_optimizer), model)
    dp = parallel_state.get_data_parallel_world_size()
    n_micro = t.global_batch_size // (t.micro_batch_size * dp)
    s = cfg.model.seq_length
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, vocab, (t.micro_batch_size, s + 1), generator=gen) for _ in range(n_micro)]
    pos = torch.arange(s).unsqueeze(0).expand(t.micro_batch_size, -1)

    def step_func(it, chunk):
        b = next(it)
        out = chunk(b[:, :-1], pos, None, labels=b[:, 1:])
        return out, lambda x: (x.float().mean(), {"loss": x.float().mean().detach()})

    fb = get_forward_backward_func()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        for m in model:
            m.zero_grad_buffer()
        opt.zero_grad()
        fb(forward_step_func=step_func, data_iterator=iter(batches), model=model[0], num_microbatches=n_micro,
           seq_length=s, micro_batch_size=t.micro_batch_size, forward_only=False)
        opt.step()
        times.append(time.perf_counter() - t0)
    if env.rank == 0:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        Path(out).write_text(json.dumps({"step_times": times, "peak_rss_mb": rss}))
    runtime.destroy()


def _launch(nproc: int, args: list[str]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // nproc)), PYTHONWARNINGS="ignore",
               WANDB_SILENT="true")
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
           if nproc > 1 else [sys.executable])
    subprocess.run(cmd + args, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def measure(shape: str, nproc: int, steps: int, data: list[str], extra: list[str], work: Path) -> dict:
    overrides = [*SHAPE_OVERRIDES[shape], *data, *extra]
    out = work / f"bare_{shape}.json"
    _launch(nproc, [str(Path(__file__)), "--bare", str(steps), str(out), *overrides])
    bare_res = json.loads(out.read_text())
    run_dir = work / f"ours_{shape}"
    _launch(nproc, ["-m", "pretrain", *overrides, f"train.iters={steps}", "train.eval_iters=0",
                    "train.save_interval=100000", "optim.warmup_iters=1", "logging.wandb.mode=disabled",
                    f"run.dir={run_dir}"])
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    warm = 2  # the first steps pay one-off costs in both
    ours_t = statistics.median(r["step_time_s"] for r in rows[warm:])
    bare_t = statistics.median(bare_res["step_times"][warm:])
    return {"shape": shape, "nproc": nproc, "extra": extra, "bare_step_s": bare_t, "ours_step_s": ours_t,
            "ratio": ours_t / bare_t,
            "data_wait_frac": statistics.median(r["data_wait_frac"] for r in rows[warm:]),
            "ours_peak_rss_mb": max(r.get("peak_mem_mb") or 0 for r in rows),
            "bare_peak_rss_mb": bare_res["peak_rss_mb"]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--bare":
        bare(argv[3:], int(argv[1]), argv[2])
        return 0
    ap = argparse.ArgumentParser(description="our training step vs bare megatron-core")
    ap.add_argument("--shapes", nargs="+", default=["tiny", "125m"])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="alternate bare/ours this many times")
    ap.add_argument("--data", default=str(ROOT / "data/quickstart/enwiki_text_document"))
    ap.add_argument("--tokenizer", default=str(ROOT / "data/quickstart/tokenizer.model"))
    ap.add_argument("overrides", nargs="*", help="extra trainer overrides, e.g. parallel.tp=2")
    args = ap.parse_args(argv)
    data = [f"data.paths=[{args.data}]", f"data.tokenizer_model={args.tokenizer}"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            for r in range(args.repeat):
                work = Path(tmp) / f"{shape}_{r}"
                work.mkdir()
                res = measure(shape, args.nproc, args.steps, data, args.overrides, work)
                results.append(res)
                print(json.dumps(res), flush=True)
    print("\nshape  nproc  bare step s  ours step s  ratio  data wait  peak RSS MB (ours / bare)")
    for shape in args.shapes:
        rs = [r for r in results if r["shape"] == shape]
        ratio = statistics.median(r["ratio"] for r in rs)
        print(f"{shape:6s} {args.nproc:5d}  {statistics.median(r['bare_step_s'] for r in rs):11.3f}  "
              f"{statistics.median(r['ours_step_s'] for r in rs):11.3f}  {ratio:5.3f}  "
              f"{100 * statistics.median(r['data_wait_frac'] for r in rs):8.2f}%  "
              f"{max(r['ours_peak_rss_mb'] for r in rs):.0f} / {max(r['bare_peak_rss_mb'] for r in rs):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
