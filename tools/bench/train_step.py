"""Benchmark: our training step against bare megatron-core and Hugging Face transformers on the same model,
batch and layout.

Ours: `python -m pretrain` (data loading from the .bin/.idx shards, metrics, schedule, everything), timed by
its own metrics.jsonl (step_time_s, data_wait_frac). Bare: megatron-core's forward_backward_func plus
optimizer.step() on the same GPTModel, with pre-built random token batches and nothing else. Both run in the
same invocation, alternating, and the report gives median step-time ratios, the data-wait fraction and
peak memory per rank.

    python -m tools.bench.train_step [--shapes tiny 125m] [--steps 12] [--nproc 1]

Needs the quickstart shards (make quickstart) or --data PREFIX --tokenizer MODEL.

Peer arms, one process each, no data loading (`--peers`): the same pre-built random batches, the same AdamW
(lr, betas, eps, weight decay on matrices only, clipping at 1.0) and one timer around the whole step
(zero grads, forward, backward, clip, optimizer step) in every arm:
  megatron-<attention>: the trainer's model, wrapper and optimizer (pretrain.train.build_model_and_optimizer:
      megatron-core's GPTModel with our layer spec and model.attention=local|sdpa, SingleProcessModel or
      megatron's DDP per parallel.ddp, megatron's optimizer) under megatron's forward_backward_func and the
      trainer's guarded update; trainer overrides after the flags apply; megatron-sdpa-ddp: megatron-sdpa
      with parallel.ddp=always (megatron's DDP even in one process);
  hf: transformers' LlamaForCausalLM (SDPA attention) with the same shape (parameter counts printed and
      checked equal), torch.optim.AdamW as transformers' Trainer builds it by default (the fused kernel)
      and clip_grad_norm_.

Each arm reports its median step, its peak RSS and its peak heap (bytes in use in the C heap over two more
steps after the timed ones: what a step needs, without the freed memory the allocator keeps mapped).

    python -m tools.bench.train_step --peers --shapes 125m --seq 256 --batch 4 --steps 50
    python -m tools.bench.train_step --peers --shapes 125m --seq 2048 --batch 1 --steps 5

`--interleave` builds every arm in one process and alternates their steps (the order rotating each round):
the median per-round step-time ratio with a 95% interval, robust to a shared machine's slow phases.

    python -m tools.bench.train_step --peers --interleave --shapes 125m --seq 256 --batch 4 --steps 30 \
        --arms hf megatron-sdpa megatron-sdpa-ddp
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
PEER_ARMS = ["megatron-local", "megatron-sdpa", "megatron-sdpa-ddp", "hf"]
DEFAULT_PEER_ARMS = ["megatron-local", "megatron-sdpa", "hf"]
ADAMW = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, clip_grad=1.0)


def _random_batches(vocab: int, batch: int, seq: int, n: int):
    import torch

    gen = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (batch, seq + 1), generator=gen) for _ in range(n)]


def _peer_step(arm: str, shape: str, seq: int, batch: int, vocab: int, overrides: list[str]):
    """Builds one peer arm in this process; returns (step function on a [batch, seq+1] token batch -> loss,
    parameter count). `overrides` (trainer config, e.g. parallel.recompute.granularity=full) apply to the
    megatron arms."""
    import torch

    from pretrain import config as C

    cfg = C.load([f"model={shape}", f"model.seq_length={seq}", f"model.vocab_size={vocab}",
                  *(overrides if arm != "hf" else [])])
    m = cfg.model
    pos = torch.arange(seq).unsqueeze(0).expand(batch, -1)
    if arm == "hf":
        import transformers

        hf_cfg = transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=m.hidden_size, intermediate_size=m.ffn_hidden_size,
            num_hidden_layers=m.num_layers, num_attention_heads=m.num_attention_heads,
            num_key_value_heads=m.num_query_groups, max_position_embeddings=seq, rms_norm_eps=m.norm_eps,
            rope_theta=float(m.rotary_base), tie_word_embeddings=not m.untie_embeddings, attention_bias=False,
            mlp_bias=False, attention_dropout=0.0)
        model = transformers.LlamaForCausalLM._from_config(hf_cfg, attn_implementation="sdpa",
                                                           dtype=torch.float32)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        # the AdamW kernel transformers' Trainer picks by default ("adamw_torch_fused" with torch >= 2.8: the
        # fused kernel, as our trainer uses on CPU, pretrain.optimizer_state.fuse_cpu_adam)
        fused = transformers.TrainingArguments.__dataclass_fields__["optim"].default == "adamw_torch_fused"
        opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() > 1]},
                                 {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}],
                                lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"],
                                weight_decay=ADAMW["weight_decay"], fused=fused)

        def step(b):
            opt.zero_grad(set_to_none=True)
            logits = model(input_ids=b[:, :-1], position_ids=pos, use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, vocab), b[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, ADAMW["clip_grad"])
            opt.step()
            return loss.item()
    else:
        from megatron.core import parallel_state, tensor_parallel
        from megatron.core.pipeline_parallel import get_forward_backward_func

        from pretrain import runtime
        from pretrain.layout import Layout
        from pretrain.train import build_model_and_optimizer, guarded_update

        m.attention = arm.split("-")[1]
        if arm.endswith("-ddp"):
            cfg.parallel.ddp = "always"
        o = cfg.optim
        o.lr, (o.beta1, o.beta2), o.eps = ADAMW["lr"], ADAMW["betas"], ADAMW["eps"]
        o.weight_decay, o.clip_grad = ADAMW["weight_decay"], ADAMW["clip_grad"]
        cfg.train.global_batch_size = cfg.train.micro_batch_size = batch
        C._validate_performance(cfg)
        if not parallel_state.model_parallel_is_initialized():  # the first megatron arm of this process
            runtime.init_distributed(runtime.dist_env())
            parallel_state.initialize_model_parallel(1, 1)
            tensor_parallel.model_parallel_cuda_manual_seed(0)
        # the trainer's own model, wrapper (megatron DDP or SingleProcessModel, parallel.ddp) and optimizer
        chunks, opt = build_model_and_optimizer(cfg, Layout.from_config(cfg, 1), vocab, False, torch.device("cpu"))
        model = chunks[0]
        params = [p for p in model.parameters()]
        fb = get_forward_backward_func()

        def step(b):
            model.zero_grad_buffer()
            opt.zero_grad()

            def fwd(it, chunk):
                x = next(it)
                out = chunk(x[:, :-1], pos, None, labels=x[:, 1:])
                return out, lambda t: (t.float().mean(), {"loss": t.float().mean().detach()})

            losses = fb(forward_step_func=fwd, data_iterator=iter([b]), model=model, num_microbatches=1,
                        seq_length=seq, micro_batch_size=batch, forward_only=False)
            loss = float(losses[0]["loss"])
            guarded_update(opt, loss, ADAMW["clip_grad"])
            return loss
    return step, sum(p.numel() for p in params)


def peer(arm: str, shape: str, seq: int, batch: int, vocab: int, steps: int, out: str,
         overrides: list[str]) -> None:
    """One peer arm in this process: `steps` training steps of one micro-batch each, timed whole."""
    import torch

    step, n_params = _peer_step(arm, shape, seq, batch, vocab, overrides)
    batches = _random_batches(vocab, batch, seq, 4)
    times, losses = [], []
    for i in range(steps):
        t0 = time.perf_counter()
        losses.append(step(batches[i % len(batches)]))
        times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    heap = _peak_heap_mb(lambda: [step(b) for b in batches[:2]])  # after the timed steps: no poller in them
    Path(out).write_text(json.dumps({"arm": arm, "step_times": times, "losses": losses, "peak_rss_mb": rss,
                                     "peak_heap_mb": heap, "num_params": n_params,
                                     "threads": torch.get_num_threads()}))


def _peak_heap_mb(work) -> float | None:
    """Peak bytes in use in the C heap (glibc mallinfo2: arena + mmapped chunks, where CPU tensors live) while
    `work()` runs, polled every 0.5 ms from a thread. Peak RSS also counts freed memory the allocator keeps
    mapped, which moves with allocation order more than with what a step needs. None off glibc."""
    import ctypes
    import threading

    class _MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None

    def in_use() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    peak, done = [in_use()], threading.Event()

    def poll():
        while not done.wait(0.0005):
            peak[0] = max(peak[0], in_use())

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        work()
    finally:
        done.set()
        thread.join()
    return max(peak[0], in_use()) / 2 ** 20


def interleaved(args) -> dict:
    """All arms built in this one process, then stepped in turn (arm A step k, arm B step k, ...; the order
    rotates every round), each step timed on its own: slow phases of a shared machine hit every arm alike.
    Reports each arm's median step and, against the first arm, the median of the per-round ratios with a
    95% interval (order statistics of the binomial). Peak memory is not separable here: use the per-process
    mode for it."""
    import torch

    steps = {arm: _peer_step(arm, args.shapes[0], args.seq, args.batch, args.vocab, args.overrides)[0]
             for arm in args.arms}
    batches = _random_batches(args.vocab, args.batch, args.seq, 4)
    times = {arm: [] for arm in args.arms}
    for k in range(args.steps + 1):
        order = args.arms[k % len(args.arms):] + args.arms[:k % len(args.arms)]
        for arm in order:
            t0 = time.perf_counter()
            steps[arm](batches[k % len(batches)])
            if k:  # round 0 pays one-off costs
                times[arm].append(time.perf_counter() - t0)
    base = args.arms[0]
    n = len(times[base])
    lo, hi = _median_ci_ranks(n)
    print(f"\n{args.shapes[0]} seq {args.seq} x batch {args.batch}, interleaved in one process, {n} rounds "
          f"(after one warm-up round), {torch.get_num_threads()} threads")
    print(f"arm                  median step s   ratio to {base} (median of {n} rounds, 95% interval)")
    result = {}
    for arm in args.arms:
        ratios = sorted(a / b for a, b in zip(times[arm], times[base]))
        result[arm] = {"median_step_s": statistics.median(times[arm]), "ratio": statistics.median(ratios),
                       "ratio_ci": [ratios[lo], ratios[hi]], "step_times": times[arm]}
        print(f"{arm:20s} {result[arm]['median_step_s']:14.3f}   {result[arm]['ratio']:.3f} "
              f"[{ratios[lo]:.3f}, {ratios[hi]:.3f}]")
    return result


def _median_ci_ranks(n: int) -> tuple[int, int]:
    """0-based ranks (lo, hi) of the sorted sample bracketing its median with >= 95% coverage (binomial)."""
    from math import comb

    best = (0, n - 1)
    for j in range(n // 2, -1, -1):
        cover = sum(comb(n, i) for i in range(j + 1, n - j)) / 2 ** n  # P(x[j] <= median <= x[n-1-j])
        if cover >= 0.95:
            best = (j, n - 1 - j)
            break
    return best


def measure_peers(args, work: Path) -> list[dict]:
    rows = []
    for r in range(args.repeat):
        for arm in args.arms:
            out = work / f"{arm}_{r}.json"
            _launch(1, [*_SELF, "--peer", arm, args.shapes[0], str(args.seq), str(args.batch),
                        str(args.vocab), str(args.steps), str(out), *args.overrides])
            res = json.loads(out.read_text())
            warm = 1 if args.steps > 1 else 0  # the first step pays one-off costs
            res["median_step_s"] = statistics.median(res["step_times"][warm:])
            res["repeat"] = r
            rows.append(res)
            print(json.dumps({k: v for k, v in res.items() if k != "losses"}), flush=True)
    counts = {r["arm"]: r["num_params"] for r in rows}
    print(f"\n{args.shapes[0]} seq {args.seq} x batch {args.batch}, vocab {args.vocab}, {args.steps} steps "
          f"(median of steps {2 if args.steps > 1 else 1}..{args.steps}), {args.repeat} run(s) per arm; "
          f"parameters {counts}")
    if len(set(counts.values())) > 1:
        print("WARNING: the arms have different parameter counts")
    base = statistics.median(r["median_step_s"] for r in rows if r["arm"] == args.arms[0])
    print(f"arm               step s   vs {args.arms[0]}   peak RSS MB   peak heap MB")
    for arm in args.arms:
        rs = [r for r in rows if r["arm"] == arm]
        t = statistics.median(r["median_step_s"] for r in rs)
        heap = max((r["peak_heap_mb"] or 0) for r in rs)
        print(f"{arm:16s} {t:8.3f}   {t / base:8.3f}x   {max(r['peak_rss_mb'] for r in rs):11.0f}   {heap:12.0f}")
    return rows


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


# as a module, not as tools/bench/train_step.py: a script's folder goes first on sys.path, and this folder's
# tokenize.py would shadow the standard library's tokenize (inspect, and so numpy, fail to import)
_SELF = ["-m", "tools.bench.train_step"]


def _launch(nproc: int, args: list[str]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // nproc)), PYTHONWARNINGS="ignore",
               WANDB_SILENT="true")
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
           if nproc > 1 else [sys.executable])
    subprocess.run(cmd + args, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def measure(shape: str, nproc: int, steps: int, data: list[str], extra: list[str], work: Path) -> dict:
    overrides = [*SHAPE_OVERRIDES[shape], *data, *extra]
    out = work / f"bare_{shape}.json"
    _launch(nproc, [*_SELF, "--bare", str(steps), str(out), *overrides])
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
    if argv and argv[0] == "--peer":
        arm, shape, seq, batch, vocab, steps, out = argv[1:8]
        peer(arm, shape, int(seq), int(batch), int(vocab), int(steps), out, argv[8:])
        return 0
    ap = argparse.ArgumentParser(description="our training step vs bare megatron-core")
    ap.add_argument("--shapes", nargs="+", default=["tiny", "125m"])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="alternate bare/ours this many times")
    ap.add_argument("--data", default=str(ROOT / "data/quickstart/enwiki_text_document"))
    ap.add_argument("--tokenizer", default=str(ROOT / "data/quickstart/tokenizer.model"))
    ap.add_argument("--peers", action="store_true", help="the peer arms (megatron-local/-sdpa, hf) instead")
    ap.add_argument("--interleave", action="store_true",
                    help="with --peers: every arm in one process, steps alternated (paired step-time ratios)")
    ap.add_argument("--arms", nargs="+", default=DEFAULT_PEER_ARMS, choices=PEER_ARMS)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096, help="4096: the quickstart tokenizer's padded vocabulary")
    ap.add_argument("overrides", nargs="*", help="extra trainer overrides, e.g. parallel.tp=2")
    args = ap.parse_args(argv)
    if args.peers and args.interleave:
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        interleaved(args)
        return 0
    if args.peers:
        with tempfile.TemporaryDirectory() as tmp:
            measure_peers(args, Path(tmp))
        return 0
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
