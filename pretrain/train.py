"""The training loop: `python -m pretrain <hydra overrides>` or `torchrun --nproc_per_node=N -m pretrain ...`.

Config (conf/pretrain.yaml -> pretrain.config.PretrainConfig) is validated before any process group starts.
Then: process groups (pretrain.runtime), megatron-core parallel state, the model chunks (pretrain.model),
megatron's DDP and optimizer (AdamW; ZeRO-1 with parallel.distributed_optimizer), its LR schedule
(warmup, then cosine / WSD / linear / constant), and its pipeline schedule's forward_backward_func.
Each step trains one global batch; every eval_interval steps the fixed validation set is evaluated; every
save_interval steps, and on SIGUSR1/SIGTERM, a layout-independent checkpoint is written (pretrain.checkpoint).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from pretrain import config as C

EXIT_PREEMPTED = 99  # checkpoint saved on SIGUSR1/SIGTERM; the job should be requeued


class _StopFlag:
    """Set by SIGUSR1/SIGTERM; acted on at the next step boundary."""

    def __init__(self):
        self.signum = 0

    def install(self) -> None:
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        self.signum = signum


def _print0(*args) -> None:
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        print(*args, flush=True)


def run(cfg: C.PretrainConfig) -> int:
    from pretrain import runtime

    env = runtime.dist_env()
    C.validate(cfg, env.world_size)  # fails with the key and the fix before anything starts
    run_dir = Path(cfg.run.dir).resolve()
    total_iters = C.train_iters(cfg)
    finished = run_dir / "finished.json"
    if finished.is_file() and json.loads(finished.read_text()).get("iterations", 0) >= total_iters:
        if env.rank == 0:
            print(f"run {run_dir} already finished {total_iters} steps ({finished}); nothing to do", flush=True)
        return 0

    stop = _StopFlag()
    stop.install()
    device = runtime.init_distributed(env)
    try:
        return _train(cfg, env, device, run_dir, total_iters, stop)
    finally:
        runtime.destroy()


def _train(cfg, env, device, run_dir: Path, total_iters: int, stop: _StopFlag) -> int:
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from omegaconf import OmegaConf

    from pretrain import checkpoint
    from pretrain.data import build_datasets, load_microbatches
    from pretrain.flops import count_params, flops_per_token
    from pretrain.metrics import MetricsLogger, peak_tflops
    from pretrain.model import build_model_chunks, init_weights

    p, t = cfg.parallel, cfg.train
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=p.tp, pipeline_model_parallel_size=p.pp,
        virtual_pipeline_model_parallel_size=p.vpp)
    tensor_parallel.model_parallel_cuda_manual_seed(cfg.run.seed)
    dp = parallel_state.get_data_parallel_world_size()
    dp_rank = parallel_state.get_data_parallel_rank()
    rank = env.rank
    bf16 = t.bf16 if t.bf16 is not None else device.type == "cuda"
    vocab = C.model_vocab_size(cfg)

    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        info = {"num_params": None, "flops_per_token": flops_per_token(cfg.model, vocab), "vocab_size": vocab,
                "seq_length": cfg.model.seq_length, "global_batch_size": t.global_batch_size,
                "world_size": env.world_size, "tp": p.tp, "pp": p.pp, "dp": dp, "vpp": p.vpp,
                "train_iters": total_iters, "model": asdict(cfg.model)}
        counts = count_params(cfg.model, vocab, cfg.model.untie_embeddings)
        info.update(num_params=counts["total"], num_params_non_embedding=counts["non_embedding"],
                    num_params_embedding=counts["embedding"])
        (run_dir / "run_info.json").write_text(json.dumps(info, indent=1))
    torch.distributed.barrier()

    # Model, DDP, optimizer, schedule
    chunks = build_model_chunks(cfg.model, p, vocab, bf16)
    init_weights(chunks, cfg.model, cfg.run.seed)
    if bf16:
        from megatron.core.transformer.module import Float16Module

        chunks = [Float16Module(c.config, c) for c in chunks]
    for c in chunks:
        c.to(device)
    tcfg = chunks[0].config
    ddp_cfg = DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=p.overlap_grad_reduce,
                                            overlap_param_gather=p.overlap_param_gather,
                                            use_distributed_optimizer=p.distributed_optimizer)
    model = [DistributedDataParallel(tcfg, ddp_cfg, c, disable_bucketing=(i > 0)) for i, c in enumerate(chunks)]
    tcfg.finalize_model_grads_func = finalize_model_grads
    tcfg.no_sync_func = [m.no_sync for m in model] if len(model) > 1 else model[0].no_sync
    o = cfg.optim
    optimizer = get_megatron_optimizer(OptimizerConfig(
        optimizer="adam", lr=o.lr, min_lr=o.min_lr, weight_decay=o.weight_decay, adam_beta1=o.beta1,
        adam_beta2=o.beta2, adam_eps=o.eps, clip_grad=o.clip_grad, bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=p.distributed_optimizer), model)
    style = {"cosine": "cosine", "wsd": "WSD", "linear": "linear", "constant": "constant"}[o.decay]
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=o.lr, min_lr=o.min_lr, lr_warmup_steps=o.warmup_iters,
        lr_decay_steps=total_iters, lr_decay_style=style, start_wd=o.weight_decay, end_wd=o.weight_decay,
        wd_incr_steps=total_iters, wd_incr_style="constant",
        wsd_decay_steps=max(1, int(o.wsd_decay_fraction * total_iters)) if style == "WSD" else None,
        lr_wsd_decay_style="linear" if style == "WSD" else None)

    # Resume
    ckpt_root = run_dir / "checkpoints"
    iteration, consumed = 0, 0
    if cfg.run.resume:
        found, notes = checkpoint.find_resumable(ckpt_root) if rank == 0 else (None, [])
        for note in notes:
            print(f"WARNING: {note}", flush=True)
        obj = [str(found) if found else None]
        torch.distributed.broadcast_object_list(obj, src=0)
        if obj[0]:
            meta = checkpoint.load(Path(obj[0]), model, optimizer)
            iteration, consumed = meta["iteration"], meta["consumed_samples"]
            scheduler.step(iteration)
            _print0(f"resumed from {obj[0]} (saved under {meta.get('layout')}): step {iteration}, "
                    f"{consumed} samples consumed")

    # Data
    cache = cfg.data.cache_dir or str(run_dir / "data_cache")
    datasets = build_datasets(cfg, cache)

    tokens_per_step = t.global_batch_size * cfg.model.seq_length
    fpt = flops_per_token(cfg.model, vocab)
    peak = peak_tflops(cfg.logging.peak_tflops)
    logger = MetricsLogger(run_dir, rank == 0, cfg.logging.wandb,
                           OmegaConf.to_container(OmegaConf.structured(cfg)))
    forward_backward = get_forward_backward_func()
    n_micro = t.global_batch_size // (t.micro_batch_size * dp)

    def forward_step(data_iterator, chunk):
        batch = next(data_iterator)
        out = chunk(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])

        def loss_func(per_token):
            mask = batch["loss_mask"].float()
            loss = (per_token.float() * mask).sum() / mask.sum()
            return loss, {"lm loss": loss.detach().clone()}

        return out, loss_func

    def run_batches(dataset, start: int, forward_only: bool):
        batches, wait_s = load_microbatches(dataset, start, cfg, dp_rank, dp, device)
        iters = [iter(batches) for _ in model]  # each model chunk (VPP) walks the same micro-batches
        losses = forward_backward(
            forward_step_func=forward_step, data_iterator=iters if len(model) > 1 else iters[0],
            model=model if len(model) > 1 else model[0], num_microbatches=n_micro,
            seq_length=cfg.model.seq_length, micro_batch_size=t.micro_batch_size, forward_only=forward_only)
        return _global_mean_loss(losses, device), wait_s

    def evaluate() -> float:
        for m in model:
            m.eval()
        total = 0.0
        with torch.no_grad():
            for k in range(t.eval_iters):
                loss, _ = run_batches(datasets.valid, k * t.global_batch_size, forward_only=True)
                total += loss
        for m in model:
            m.train()
        return total / t.eval_iters

    def save(reason: str):
        if p.overlap_param_gather:  # the updated params are all-gathered by the next forward: gather them now
            for m in model:
                m.start_param_sync(force_sync=True)
        layout = {"tp": p.tp, "pp": p.pp, "dp": dp, "vpp": p.vpp,
                  "distributed_optimizer": p.distributed_optimizer}
        path = checkpoint.save(ckpt_root, iteration, model, optimizer,
                               {"consumed_samples": consumed, "tokens": consumed * cfg.model.seq_length,
                                "layout": layout, "model": asdict(cfg.model), "vocab_size": vocab},
                               save_main=bf16)
        _print0(f"saved checkpoint {path} ({reason})")

    _print0(f"training {total_iters} steps: world {env.world_size} = tp {p.tp} x pp {p.pp} x dp {dp}"
            f"{f' (vpp {p.vpp})' if p.vpp else ''}, {n_micro} micro-batches of {t.micro_batch_size}, "
            f"{tokens_per_step} tokens/step, device {device.type}, {'bf16' if bf16 else 'fp32'}; run dir {run_dir}")
    for m in model:
        m.train()
    while iteration < total_iters:
        t0 = time.perf_counter()
        for m in model:
            m.zero_grad_buffer()
        optimizer.zero_grad()
        loss, wait_s = run_batches(datasets.train, consumed, forward_only=False)
        _, grad_norm, _ = optimizer.step()
        scheduler.step(1)
        iteration += 1
        consumed += t.global_batch_size
        step_time = time.perf_counter() - t0
        record = None
        if iteration % t.log_interval == 0 or iteration == total_iters:
            tps = tokens_per_step / step_time
            tflops = fpt * tps / env.world_size / 1e12
            record = {"step": iteration, "tokens": consumed * cfg.model.seq_length,
                      "flops": fpt * consumed * cfg.model.seq_length, "loss": loss,
                      "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm, "tokens_per_s": tps,
                      "tflops_per_device": tflops, "mfu": tflops / peak if peak else None,
                      "step_time_s": step_time, "data_wait_frac": wait_s / step_time,
                      "peak_mem_mb": _peak_memory_mb(device)}
        if t.eval_iters > 0 and (iteration % t.eval_interval == 0 or iteration == total_iters):
            val = evaluate()
            record = record or {"step": iteration, "tokens": consumed * cfg.model.seq_length}
            record["val_loss"] = val
        if record is not None:
            logger.log(record)
            _print0(f"step {iteration:6d}/{total_iters} | tokens {consumed * cfg.model.seq_length:>11,d} | "
                    f"loss {loss:.4f}" + (f" | val {record['val_loss']:.4f}" if "val_loss" in record else "")
                    + f" | lr {record.get('lr', 0):.2e} | {record.get('tokens_per_s', 0):,.0f} tok/s")
        flag = torch.tensor([float(stop.signum)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and iteration < total_iters:
            save(f"signal {int(flag.item())}")
            logger.close()
            _print0(f"stopped by signal {int(flag.item())} at step {iteration}; exit {EXIT_PREEMPTED} "
                    "(requeue to resume)")
            return EXIT_PREEMPTED
        if iteration % t.save_interval == 0 or iteration == total_iters:
            save("interval" if iteration < total_iters else "final")
        if t.exit_interval and iteration % t.exit_interval == 0 and iteration < total_iters:
            if iteration % t.save_interval:
                save("exit_interval")
            logger.close()
            _print0(f"exiting at step {iteration} (train.exit_interval); run again to continue")
            return 0
    logger.close()
    if rank == 0:
        (run_dir / "finished.json").write_text(json.dumps(
            {"iterations": iteration, "tokens": consumed * cfg.model.seq_length}))
        print(f"finished {iteration} steps; metrics in {run_dir / 'metrics.jsonl'}", flush=True)
    return 0


def _peak_memory_mb(device) -> float:
    """This rank's peak memory: the CUDA allocator's peak on GPU, the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _global_mean_loss(losses: list, device) -> float:
    """Mean loss over the global batch, available on every rank (losses exist only on the last PP stage)."""
    from megatron.core import parallel_state

    buf = torch.zeros(2, device=device, dtype=torch.float64)
    if losses and parallel_state.get_tensor_model_parallel_rank() == 0:
        buf[0] = torch.stack([x["lm loss"].double() for x in losses]).mean()
        buf[1] = 1.0
    torch.distributed.all_reduce(buf)
    return float(buf[0] / buf[1])


def main() -> None:
    import hydra

    C.register_configs()
    @hydra.main(config_path=C.CONF_DIR, config_name="pretrain", version_base="1.3")
    def _entry(dcfg) -> None:
        try:
            cfg = C.to_dataclass(dcfg)
            code = run(cfg)
        except C.ConfigError as e:
            print(f"config error: {e}", file=sys.stderr, flush=True)
            code = 2
        sys.exit(code)

    _entry()
