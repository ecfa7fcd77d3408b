"""The training loop: `python -m pretrain <hydra overrides>` or `torchrun --nproc_per_node=N -m pretrain ...`.

    run(cfg)                 validate (ConfigError before anything starts), start process groups, train
    Trainer.__init__         parallel state, model chunks + DDP + optimizer + LR schedule, resume, data, metrics
    Trainer.fit              the loop: train_step, log, evaluate, checkpoint, stop on a signal / exit_interval
    Trainer.train_step       one global batch through megatron's pipeline schedule, then a guarded update
    Trainer.evaluate         the fixed validation set (the blend's, and each source's when there are several)

Parallelism is megatron-core's (TP / PP / VPP / DP, the distributed optimizer), laid out once by
pretrain.layout.Layout. Checkpoints (pretrain.checkpoint) are layout-independent; the run directory's files are
pretrain.rundir's. A step whose loss or grad norm is not finite is skipped before it reaches the weights.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import asdict, dataclass

import torch

from pretrain import config as C
from pretrain.layout import Layout
from pretrain.rundir import (EXIT_CONFIG, EXIT_DIVERGED, EXIT_FINISHED, EXIT_INTERVAL, EXIT_PREEMPTED,
                             RunDir)

# Config values a resumed run must share with its checkpoint: changing them rewrites the past.
PAST_KEYS = ("model.seq_length", "train.global_batch_size", "data.paths", "data.split", "run.seed")


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
    layout = C.validate(cfg, env.world_size)  # fails with the key and the fix before anything starts
    run_dir = RunDir(cfg.run.dir)
    total = C.train_iters(cfg)
    if run_dir.finished_iterations() >= total:
        if env.rank == 0:
            print(f"run {run_dir.path} already finished {total} steps; nothing to do", flush=True)
        return EXIT_FINISHED
    stop = _StopFlag()
    stop.install()
    device = runtime.init_distributed(env, timeout_s=cfg.run.pg_timeout_s)
    try:
        try:
            trainer = Trainer(cfg, layout, device, run_dir, env.rank)
        except C.ConfigError as e:  # found on resume (the checkpoint's config): not worth a requeue
            if env.rank == 0:
                run_dir.write_exit(EXIT_CONFIG, 0, str(e))
            raise
        code, message = trainer.fit(stop)
        if env.rank == 0:
            run_dir.write_exit(code, trainer.iteration, message)
        return code
    finally:
        runtime.destroy()


@dataclass
class StepResult:
    loss: float
    grad_norm: float | None
    lr: float
    applied: bool  # False: non-finite loss or grad norm, the update was skipped
    data_wait_s: float


class Trainer:
    def __init__(self, cfg: C.PretrainConfig, layout: Layout, device: torch.device, run_dir: RunDir, rank: int):
        from megatron.core import parallel_state, tensor_parallel
        from megatron.core.pipeline_parallel import get_forward_backward_func

        from pretrain.data import build_datasets
        from pretrain.metrics import MetricsLogger
        from pretrain.schedule import build_scheduler

        self.cfg, self.layout, self.device, self.run_dir, self.rank = cfg, layout, device, run_dir, rank
        self.total = C.train_iters(cfg)
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=layout.tp, pipeline_model_parallel_size=layout.pp,
            virtual_pipeline_model_parallel_size=layout.vpp)
        tensor_parallel.model_parallel_cuda_manual_seed(cfg.run.seed)
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.bf16 = cfg.train.bf16 if cfg.train.bf16 is not None else device.type == "cuda"
        self.vocab = C.model_vocab_size(cfg)
        self._write_run_files()

        self.model, self.optimizer = build_model_and_optimizer(cfg, layout, self.vocab, self.bf16, device)
        from pretrain.checkpoint import Checkpointer

        self.checkpointer = Checkpointer(cfg.run.checkpoint_format, C.async_save(cfg))
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.iteration, self.consumed = self._resume()
        self.datasets = build_datasets(cfg, cfg.data.cache_dir or str(run_dir.path / "data_cache"))
        self.metrics = MetricsLogger(run_dir.path, rank == 0, cfg.logging.wandb, _config_dict(cfg))
        self.forward_backward = get_forward_backward_func()
        self.nonfinite_in_a_row = 0
        self.skipped_total = 0

    # ------------------------------------------------------------------------------------------------------
    def fit(self, stop: _StopFlag) -> tuple[int, str]:
        """Train to the end, or stop early; returns (exit code, message)."""
        from pretrain.optimizer_state import describe

        t = self.cfg.train
        _print0(f"training {self.total} steps: world {self.layout.world_size} = {self.layout.describe()}, "
                f"{self.tokens_per_step} tokens/step, device {self.device.type}, "
                f"{'bf16' if self.bf16 else 'fp32'}, {type(self.model[0]).__name__}, {describe(self.optimizer)}; "
                f"run dir {self.run_dir.path}")
        for m in self.model:
            m.train()
        while self.iteration < self.total:
            t0 = time.perf_counter()
            step = self.iteration + 1
            result = self.train_step(step)
            self.iteration, self.consumed = step, self.consumed + t.global_batch_size
            self._account(result)
            record = self._record(result, time.perf_counter() - t0)
            if t.eval_iters > 0 and (step % t.eval_interval == 0 or step == self.total):
                t_eval = time.perf_counter()
                record["val_loss"] = self.evaluate()
                for name, dataset in self.datasets.valid_by_source.items():
                    record[f"val_loss/{name}"] = self.evaluate(dataset)
                record["val_time_s"] = time.perf_counter() - t_eval
            saving = (step % t.save_interval == 0 or step == self.total) and not self.nonfinite_in_a_row
            if saving:
                path = self.save("interval" if step < self.total else "final")
                record.update(self.eval_tasks(path))
            self._log(record)
            if self.nonfinite_in_a_row >= t.max_nonfinite_in_a_row:
                return EXIT_DIVERGED, self._diverged_message()
            signum = self._agreed_signal(stop)
            if signum and step < self.total:
                if not saving:
                    self.save(f"signal {signum}")
                return self._stop(EXIT_PREEMPTED, f"stopped by signal {signum} at step {step}; requeue to resume")
            if t.exit_interval and step % t.exit_interval == 0 and step < self.total:
                if not saving:
                    self.save("exit_interval")
                return self._stop(EXIT_INTERVAL, f"exiting at step {step} (train.exit_interval); run again "
                                                 "to continue")
        self.metrics.close()
        self._wait_for_checkpoint()
        if self.rank == 0:
            self.run_dir.mark_finished(self.iteration, self.consumed * self.cfg.model.seq_length)
        _print0(f"finished {self.iteration} steps; metrics in {self.run_dir.metrics_path}")
        return EXIT_FINISHED, "finished"

    def train_step(self, step: int) -> StepResult:
        from pretrain.schedule import set_step

        lr = set_step(self.scheduler, step)  # step k trains at lr(k)
        for m in self.model:
            m.zero_grad_buffer()
        self.optimizer.zero_grad()
        inject = step in self.cfg.train.inject_nonfinite_at
        loss, wait_s = self._run_batches(self.datasets.train, self.consumed, forward_only=False, inject=inject)
        applied, grad_norm = guarded_update(self.optimizer, loss, self.cfg.optim.clip_grad)
        return StepResult(loss, grad_norm, lr, applied, wait_s)

    def evaluate(self, dataset=None) -> float:
        """Mean loss over the first eval_iters global batches of `dataset` (default: the blend's validation
        set), the same batches every time; the same number on every rank, whatever the TP/PP/DP layout."""
        dataset = self.datasets.valid if dataset is None else dataset
        for m in self.model:
            m.eval()
        total = 0.0
        with torch.no_grad():
            for k in range(self.cfg.train.eval_iters):
                loss, _ = self._run_batches(dataset, k * self.cfg.train.global_batch_size, True)
                total += loss
        for m in self.model:
            m.train()
        return total / self.cfg.train.eval_iters

    def eval_tasks(self, checkpoint_path) -> dict:
        """train.eval_tasks on a checkpoint just written: rank 0 runs lm-evaluation-harness on it, the others
        wait. Returns {"eval/<task>/<metric>": value} (empty on other ranks and without tasks)."""
        if not self.cfg.train.eval_tasks:
            return {}
        results = {}
        if self.rank == 0:
            from pretrain.evaluate import local_tasks, run_eval_tasks
            from pretrain.generate import Generator

            if not hasattr(self, "_task_configs"):
                self._task_configs = [c for c in local_tasks(self._validation_text(), self.run_dir.path / "eval_tasks")
                                      if c["task"].removeprefix("slurmtrain_") in self.cfg.train.eval_tasks]
            scores = run_eval_tasks(lambda: Generator.from_checkpoint(checkpoint_path, device=self.device),
                                    self._task_configs)
            results = {f"eval/{k}": v for k, v in scores.items()}
            _print0("eval tasks: " + ", ".join(f"{k} {v:.4g}" for k, v in results.items()))
        torch.distributed.barrier()
        return results

    def _validation_text(self) -> str:
        """The run's held-out text: its validation samples, decoded (no data beyond the run's own)."""
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(self.cfg.data.tokenizer_model))
        valid = self.datasets.valid or self.datasets.train
        n = min(len(valid), 256)
        return "\n".join(sp.decode([int(x) for x in valid[i]["tokens"]]) for i in range(n))

    def save(self, reason: str):
        from pretrain.schedule import schedule_spec

        cfg = self.cfg
        if cfg.parallel.overlap_param_gather:  # the next forward would all-gather the updated params: do it now
            for m in self.model:
                m.start_param_sync(force_sync=True)
        path = self.checkpointer.save(
            self.run_dir.checkpoints, self.iteration, self.model, self.optimizer,
            {"consumed_samples": self.consumed, "tokens": self.consumed * cfg.model.seq_length,
             "layout": self.layout.as_dict(), "model": asdict(cfg.model), "vocab_size": self.vocab,
             "past": _past(cfg), "schedule": schedule_spec(cfg)},
            save_main=self.bf16, tokenizer_model=cfg.data.tokenizer_model, keep_last=cfg.run.keep_last)
        if cfg.train.eval_tasks:  # they read the checkpoint: it must be committed
            self.checkpointer.wait()
        _print0(f"{'saving' if self.checkpointer.in_flight else 'saved'} checkpoint {path} ({reason})")
        return path

    def _wait_for_checkpoint(self) -> None:
        """Before any exit: the save in flight is written by every rank and committed."""
        path = self.checkpointer.wait()
        if path is not None:
            _print0(f"committed checkpoint {path}")

    # ------------------------------------------------------------------------------------------------------
    @property
    def tokens_per_step(self) -> int:
        return self.cfg.train.global_batch_size * self.cfg.model.seq_length

    def _write_run_files(self) -> None:
        from omegaconf import OmegaConf

        from pretrain.flops import count_params, flops_per_token

        cfg, layout = self.cfg, self.layout
        if self.rank == 0:
            self.run_dir.create()
            self.run_dir.clear_exit()
            self.run_dir.write_config(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
            counts = count_params(cfg.model, self.vocab, cfg.model.untie_embeddings)
            self.run_dir.write_run_info({
                "num_params": counts["total"], "num_params_non_embedding": counts["non_embedding"],
                "num_params_embedding": counts["embedding"],
                "flops_per_token": flops_per_token(cfg.model, self.vocab),
                "flops_per_token_causal": flops_per_token(cfg.model, self.vocab, causal=True),
                "vocab_size": self.vocab, "seq_length": cfg.model.seq_length,
                "global_batch_size": cfg.train.global_batch_size, "world_size": layout.world_size,
                "tp": layout.tp, "pp": layout.pp, "dp": layout.dp, "vpp": layout.vpp, "train_iters": self.total,
                "model": asdict(cfg.model)})
        torch.distributed.barrier()

    def _resume(self) -> tuple[int, int]:
        from pretrain import checkpoint
        from pretrain.schedule import set_step

        if not self.cfg.run.resume:
            return 0, 0
        # every rank verifies its share of the checksums; all agree on the checkpoint
        found, notes = checkpoint.find_resumable_parallel(self.run_dir.checkpoints)
        for note in notes:
            _print0(f"WARNING: {note}")
        obj = [str(found) if found else None]
        if not obj[0]:
            return 0, 0
        meta = checkpoint.read_meta(obj[0])
        check_resume_compatible(self.cfg, meta)  # every rank raises the same ConfigError
        meta = checkpoint.load(obj[0], self.model, self.optimizer)
        set_step(self.scheduler, meta["iteration"])
        _print0(f"resumed from {obj[0]} (saved under {meta.get('layout')}): step {meta['iteration']}, "
                f"{meta['consumed_samples']} samples consumed")
        return meta["iteration"], meta["consumed_samples"]

    def _run_batches(self, dataset, start: int, forward_only: bool, inject: bool = False) -> tuple[float, float]:
        from pretrain.data import load_microbatches

        cfg, layout = self.cfg, self.layout
        batches, wait_s = load_microbatches(dataset, start, cfg, self.dp_rank, layout.dp, self.device)

        def forward_step(data_iterator, chunk):
            batch = next(data_iterator)
            out = chunk(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])

            def loss_func(per_token):
                mask = batch["loss_mask"].float()
                loss = (per_token.float() * mask).sum() / mask.sum()
                if inject:  # fault injection (train.inject_nonfinite_at): a NaN loss and NaN gradients
                    loss = loss * float("nan")
                return loss, {"lm loss": loss.detach().clone()}

            return out, loss_func

        iters = [iter(batches) for _ in self.model]  # each model chunk (VPP) walks the same micro-batches
        losses = self.forward_backward(
            forward_step_func=forward_step, data_iterator=iters if len(self.model) > 1 else iters[0],
            model=self.model if len(self.model) > 1 else self.model[0], num_microbatches=layout.num_microbatches,
            seq_length=cfg.model.seq_length, micro_batch_size=layout.micro_batch_size, forward_only=forward_only)
        return _global_mean_loss(losses, self.device), wait_s

    def _account(self, result: StepResult) -> None:
        if result.applied:
            self.nonfinite_in_a_row = 0
        else:
            self.nonfinite_in_a_row += 1
            self.skipped_total += 1
            _print0(f"WARNING: step {self.iteration}: loss {result.loss} / grad norm {result.grad_norm} not "
                    f"finite; update skipped ({self.nonfinite_in_a_row} in a row)")

    def _record(self, r: StepResult, step_time: float) -> dict:
        from pretrain.flops import flops_per_token
        from pretrain.metrics import peak_tflops

        tokens = self.consumed * self.cfg.model.seq_length
        fpt = flops_per_token(self.cfg.model, self.vocab)
        tps = self.tokens_per_step / step_time
        tflops = fpt * tps / self.layout.world_size / 1e12
        causal = flops_per_token(self.cfg.model, self.vocab, causal=True) / fpt
        peak = peak_tflops(self.cfg.logging.peak_tflops)
        return {"step": self.iteration, "tokens": tokens, "flops": fpt * tokens, "loss": r.loss, "lr": r.lr,
                "grad_norm": r.grad_norm, "tokens_per_s": tps, "tflops_per_device": tflops,
                "mfu": tflops / peak if peak else None, "mfu_causal": tflops * causal / peak if peak else None,
                "step_time_s": step_time,
                "data_wait_frac": r.data_wait_s / step_time, "peak_mem_mb": _peak_memory_mb(self.device),
                "skipped": int(not r.applied), "skipped_total": self.skipped_total}

    def _log(self, record: dict) -> None:
        step = record["step"]
        if step % self.cfg.train.log_interval and step != self.total and "val_loss" not in record \
                and not record["skipped"]:
            return
        self.metrics.log(record)
        by_source = ", ".join(f"{k.removeprefix('val_loss/')} {v:.4f}" for k, v in record.items()
                              if k.startswith("val_loss/"))
        _print0(f"step {step:6d}/{self.total} | tokens {record['tokens']:>11,d} | loss {record['loss']:.4f}"
                + (f" | val {record['val_loss']:.4f}" if "val_loss" in record else "")
                + (f" ({by_source})" if by_source else "")
                + f" | lr {record['lr']:.2e} | {record['tokens_per_s']:,.0f} tok/s"
                + (" | SKIPPED" if record["skipped"] else ""))

    def _agreed_signal(self, stop: _StopFlag) -> int:
        flag = torch.tensor([float(stop.signum)], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())

    def _stop(self, code: int, message: str) -> tuple[int, str]:
        self._wait_for_checkpoint()
        self.metrics.close()
        _print0(f"{message}; exit {code}")
        return code, message

    def _diverged_message(self) -> str:
        from pretrain import checkpoint

        self._wait_for_checkpoint()
        last, _ = checkpoint.find_resumable_parallel(self.run_dir.checkpoints)
        first = self.iteration - self.nonfinite_in_a_row + 1
        msg = (f"stopped: {self.nonfinite_in_a_row} steps in a row ({first}-{self.iteration}) had a non-finite "
               f"loss or grad norm (train.max_nonfinite_in_a_row); none reached the weights. Last good checkpoint: "
               f"{last or 'none saved yet'}. Fix: lower optim.lr or raise optim.warmup_iters, check the data, "
               "and restart (the run resumes from that checkpoint)")
        self.metrics.close()
        _print0(f"{msg}; exit {EXIT_DIVERGED}")
        return msg


def build_model_and_optimizer(cfg: C.PretrainConfig, layout: Layout, vocab: int, bf16: bool,
                              device: torch.device) -> tuple[list, object]:
    """megatron-core GPT chunks (initialised by global name), wrapped in its DDP (or SingleProcessModel, see
    uses_megatron_ddp), and its optimizer."""
    from megatron.core.distributed import (DistributedDataParallel, DistributedDataParallelConfig,
                                           finalize_model_grads)
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    from pretrain.model import SingleProcessModel, build_model_chunks, init_weights
    from pretrain.optimizer_state import fuse_cpu_adam

    chunks = build_model_chunks(cfg.model, cfg.parallel, vocab, bf16)
    init_weights(chunks, cfg.model, cfg.run.seed)
    if bf16:
        from megatron.core.transformer.module import Float16Module

        chunks = [Float16Module(c.config, c) for c in chunks]
    for c in chunks:
        c.to(device)
    tcfg = chunks[0].config
    par = cfg.parallel
    ddp_cfg = DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=par.overlap_grad_reduce,
                                            overlap_param_gather=par.overlap_param_gather,
                                            use_distributed_optimizer=layout.distributed_optimizer)
    if uses_megatron_ddp(cfg, layout, bf16):
        model = [DistributedDataParallel(tcfg, ddp_cfg, c, disable_bucketing=(i > 0)) for i, c in enumerate(chunks)]
    else:
        model = [SingleProcessModel(tcfg, c, ddp_cfg) for c in chunks]
    tcfg.finalize_model_grads_func = finalize_model_grads
    tcfg.no_sync_func = [m.no_sync for m in model] if len(model) > 1 else model[0].no_sync
    o = cfg.optim
    optimizer = get_megatron_optimizer(OptimizerConfig(
        optimizer="adam", lr=o.lr, min_lr=o.min_lr, weight_decay=o.weight_decay, adam_beta1=o.beta1,
        adam_beta2=o.beta2, adam_eps=o.eps, clip_grad=o.clip_grad, bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=layout.distributed_optimizer), model)
    fuse_cpu_adam(optimizer)
    return model, optimizer


def uses_megatron_ddp(cfg: C.PretrainConfig, layout: Layout, bf16: bool) -> bool:
    """megatron's DistributedDataParallel wraps the chunks whenever there is something to reduce or shard
    (world size > 1, the distributed optimizer), with parallel.ddp=always, and when bf16 micro-batches
    accumulate (its fp32 buffer sums them exactly; bf16 `.grad`s would round every partial sum). Otherwise
    pretrain.model.SingleProcessModel: the same updates with no gradient buffer held through the forward."""
    if cfg.parallel.ddp == "always" or layout.world_size > 1 or layout.distributed_optimizer:
        return True
    return bf16 and layout.num_microbatches > 1


@torch.no_grad()
def guarded_update(optimizer, loss: float, clip_grad: float) -> tuple[bool, float | None]:
    """megatron's optimizer.step() (prepare grads, global grad norm, clip, update) with one more check: a
    non-finite loss or grad norm skips the update, so NaN/inf never reaches the weights or Adam's state.
    Returns (applied, grad norm)."""
    from pretrain.optimizer_state import sub_optimizers

    found_inf = optimizer.prepare_grads()
    grad_norm = float(optimizer.get_grad_norm())
    if found_inf or not math.isfinite(loss) or not math.isfinite(grad_norm):
        return False, grad_norm
    if clip_grad > 0:
        for opt in sub_optimizers(optimizer):
            if getattr(opt, "is_stub_optimizer", False):
                continue
            attr = "decoupled_grad" if opt.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8 else "grad"
            clip_by_total_norm_([getattr(p, attr, None) for p in opt.get_parameters()], clip_grad, grad_norm)
    return bool(optimizer.step_with_ready_grads()), grad_norm


def clip_by_total_norm_(grads: list, max_norm: float, total_norm: float) -> None:
    """megatron's clip_grad_by_total_norm_fp32 (the same coefficient, the same products), scaling the grads in
    place with one foreach multiply; its fallback without apex or Transformer Engine multiplies each grad into
    a new tensor and copies it back. None entries (parameters without a grad) are skipped."""
    coeff = max_norm / (total_norm + 1.0e-6)
    grads = [g for g in grads if g is not None]
    if coeff < 1.0 and grads:
        torch._foreach_mul_(grads, coeff)


def _past(cfg: C.PretrainConfig) -> dict:
    """The config values that define what a run has already trained on (see PAST_KEYS)."""
    from omegaconf import OmegaConf

    from data_pipeline.samples import file_sha256
    from pathlib import Path

    flat = OmegaConf.to_container(OmegaConf.structured(cfg))
    out = {}
    for key in PAST_KEYS:
        value = flat
        for part in key.split("."):
            value = value[part]
        out[key] = [str(v) for v in value] if isinstance(value, list) else value
    out["tokenizer_sha256"] = file_sha256(Path(cfg.data.tokenizer_model))
    model = asdict(cfg.model)
    for key in ("name", "attention"):  # a label, and a kernel choice that computes the same function
        model.pop(key, None)
    out["model"] = model
    return out


def check_resume_compatible(cfg: C.PretrainConfig, meta: dict) -> None:
    """Refuse to resume under a config that changes what was already trained, unless run.force_resume."""
    from pretrain.schedule import schedule_spec

    changes = []
    saved_past, now_past = meta.get("past"), _past(cfg)
    if saved_past is not None:
        for key, now in now_past.items():
            if key == "model":
                for k, v in now.items():
                    if saved_past["model"].get(k) != v:
                        changes.append(f"model.{k}: {saved_past['model'].get(k)} -> {v}")
            elif saved_past.get(key) != now:
                changes.append(f"{key}: {saved_past.get(key)} -> {now}")
    saved_sched, now_sched = meta.get("schedule"), schedule_spec(cfg)
    hint = ""
    if saved_sched is not None and saved_sched != now_sched:
        diff = [k for k in now_sched if saved_sched.get(k) != now_sched[k]]
        changes += [f"LR schedule {k}: {saved_sched.get(k)} -> {now_sched[k]}" for k in diff]
        if "decay_iters" in diff and cfg.optim.decay_iters is None:
            hint = (f" To extend the run keeping its schedule, set optim.decay_iters={saved_sched['decay_iters']} "
                    "(the added steps train at optim.min_lr).")
    if changes and not cfg.run.force_resume:
        C.fail("run.resume", f"the checkpoint at step {meta['iteration']} in {cfg.run.dir} was trained under a "
               f"different config ({'; '.join(changes)}), which would change steps already trained",
               "restore those values, start a new run.dir, or set run.force_resume=true to apply the change from "
               f"step {meta['iteration'] + 1} on." + hint)
    if changes:
        _print0(f"WARNING: run.force_resume=true: resuming under changed config: {'; '.join(changes)}")


def _config_dict(cfg: C.PretrainConfig) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg))


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

    import conf

    conf.precheck(sys.argv[1:], C.load, EXIT_CONFIG, "config error")
    C.register_configs()

    @hydra.main(config_path=C.CONF_DIR, config_name="config", version_base="1.3")
    def _entry(dcfg) -> None:
        try:
            cfg = C.to_dataclass(dcfg)
            code = run(cfg)
        except C.ConfigError as e:
            print(f"config error: {e}", file=sys.stderr, flush=True)
            code = EXIT_CONFIG
        sys.exit(code)

    _entry()
