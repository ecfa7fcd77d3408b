#!/usr/bin/env bash
# The GPU check: what the CPU tests cannot see, in under 5 minutes on one GPU.
#
#   bash tools/gpu_check.sh DATA_PREFIX TOKENIZER_MODEL [extra trainer overrides...]
#
# 1. bf16 training of the 125m shape (seq 1024) on GPU/NCCL through megatron-core's Float16Module and its
#    mixed-precision optimizer (fp32 main weights), with whatever fused Adam megatron picks there (TE's or
#    apex's FusedAdam when installed: the step lives in the param group, pretrain/optimizer_state.py);
# 2. a planned stop at step 20 (train.exit_interval: exit 98, exit.json) and a resume to step 40 from the
#    checkpoint, which must continue the loss curve and Adam's step count;
# 3. one process with one bf16 micro-batch per step, where parallel.ddp=auto trains without megatron's DDP
#    (bf16 .grads straight into the fp32 main grads; the steps above keep DDP: 4 micro-batches accumulate);
# 4. with 2+ GPUs, the same shape under TP=2 (NCCL refuses two ranks on one GPU, so one GPU skips it);
# 5. with Transformer Engine installed, steps 1-20 again with model.attention=te (TE's layer spec: fused
#    norm + linear, fused attention, fused RoPE), whose losses must follow the SDPA run's (same initial weights
#    and batches; bf16 kernels differ, so within 5% relative at every step: a wiring error is far larger);
# then prints median tokens/s, TFLOP/s per GPU, MFU (exact device-name peak table, pretrain/metrics.py) and
# peak memory from metrics.jsonl, and fails on any non-finite or skipped step.
# Extra overrides pass through to every run (e.g. model.attention=local).
#
# GPU_CHECK_ON_CPU=1 runs the same steps on CPU/gloo with the tiny shape in fp32, TP=2 on two CPU ranks and no
# TE: it checks this script (exit codes, resume, the report), not the GPU stack (tests/tools/test_gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: tools/gpu_check.sh DATA_PREFIX TOKENIZER_MODEL [overrides]}
TOK=${2:?usage: tools/gpu_check.sh DATA_PREFIX TOKENIZER_MODEL [overrides]}
shift 2
PY=${PYTHON:-python3}
OUT=${GPU_CHECK_DIR:-/tmp/gpu_check}
rm -rf "$OUT"
mkdir -p "$OUT"
if [ "${GPU_CHECK_ON_CPU:-0}" = 1 ]; then
    NGPU=2  # ranks for the TP=2 run
    SHAPE=(model=tiny model.seq_length=128 train.bf16=false)
    TE=0
    echo "device: CPU (GPU_CHECK_ON_CPU=1: this script's plumbing only)"
else
    NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
    [ "$NGPU" -ge 1 ] || { echo "gpu_check: no CUDA device visible" >&2; exit 1; }
    "$PY" -c "import torch; print('device:', torch.cuda.get_device_name(), '| torch', torch.__version__)"
    SHAPE=(model=125m model.seq_length=1024 train.bf16=true)
    TE=$("$PY" -c "import importlib.util as u; print(int(u.find_spec('transformer_engine') is not None))")
fi

COMMON=("${SHAPE[@]}" train.iters=40 train.global_batch_size=32 train.micro_batch_size=8
        optim.warmup_iters=10 train.eval_interval=20 train.eval_iters=2 train.save_interval=20
        "data.paths=[$DATA]" "data.tokenizer_model=$TOK" logging.wandb.mode=disabled "$@")
RUNS=0
run() {  # run NAME NPROC EXPECTED_EXIT_CODE overrides...: any other exit code fails the check
    local name=$1 nproc=$2 expect=$3 rc=0
    shift 3
    RUNS=$((RUNS + 1))
    local log="$OUT/$RUNS-$name.log"
    local launch=("$PY" -m pretrain)  # one rank: the trainer's own exit code (torchrun reports every failure as 1)
    [ "$nproc" = 1 ] || launch=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$nproc" -m pretrain)
    "${launch[@]}" "${COMMON[@]}" "run.dir=$OUT/$name" "$@" > "$log" 2>&1 || rc=$?
    grep -E "^(training|resumed|finished|exiting|config error|WARN)" "$log" || true
    if [ "$rc" != "$expect" ]; then
        echo "gpu_check: run $name exited $rc, expected $expect; the end of $log:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
}

echo "== bf16, 1 GPU: steps 1-20, planned stop"
run bf16 1 98 train.exit_interval=20
"$PY" -c "import json,sys; e=json.load(open('$OUT/bf16/exit.json')); sys.exit(0 if e['code']==98 else f'exit.json: {e}')"
echo "== bf16, 1 GPU: resume to step 40"
run bf16 1 0
echo "== bf16, 1 GPU, one micro-batch per step: no megatron DDP (pretrain.model.SingleProcessModel)"
run single 1 0 train.iters=10 optim.warmup_iters=2 train.global_batch_size=8 train.micro_batch_size=8 \
    train.eval_interval=10 train.save_interval=10
if [ "$NGPU" -ge 2 ]; then
    echo "== bf16, TP=2 on 2 GPUs"
    run tp2 2 0 parallel.tp=2
else
    echo "== TP=2 skipped: one GPU (NCCL needs one GPU per rank)"
fi
if [ "$TE" = 1 ]; then
    echo "== bf16, 1 GPU, Transformer Engine (model.attention=te): steps 1-20 against the SDPA run's losses"
    run te 1 98 train.exit_interval=20 model.attention=te  # the same LR schedule as the bf16 run's
    "$PY" - "$OUT" <<'PY'
import sys
from pathlib import Path
from pretrain.rundir import RunDir
out = Path(sys.argv[1])
loss = {name: {r["step"]: r["loss"] for r in RunDir(out / name).metrics() if "tokens_per_s" in r}
        for name in ("bf16", "te")}
steps = sorted(s for s in loss["te"] if s <= 20 and s in loss["bf16"])
worst = max((abs(loss["te"][s] - loss["bf16"][s]) / abs(loss["bf16"][s]), s) for s in steps)
print(f"te against sdpa: {len(steps)} steps, largest relative loss difference {worst[0]:.2%} at step {worst[1]}")
sys.exit(0 if len(steps) == 20 and worst[0] <= 0.05 else "gpu_check: TE's losses do not follow SDPA's")
PY
else
    echo "== Transformer Engine not installed: model.attention=te skipped"
fi

"$PY" - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
from pretrain.rundir import RunDir
bad = 0
for run in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    rd = RunDir(run)
    rows = [r for r in rd.metrics() if "tokens_per_s" in r]
    if not rows:
        print(f"{run.name}: no metrics"); bad += 1; continue
    steady = rows[3:] or rows  # leave out warm-up steps

    def med(key):
        values = [r[key] for r in steady if r.get(key) is not None]
        return statistics.median(values) if values else None

    mfu, mfu_causal = med("mfu"), med("mfu_causal")
    skipped = sum(r.get("skipped", 0) for r in rows)
    finite = all(r.get("loss") is not None for r in rows)
    latest = rd.checkpoints / (rd.checkpoints / "latest").read_text().strip()
    meta = json.loads((latest / "meta.json").read_text())
    print(f"{run.name}: steps {rows[0]['step']}-{rows[-1]['step']}, loss {rows[0]['loss']:.3f} -> "
          f"{rows[-1]['loss']:.3f}, median {med('tokens_per_s'):,.0f} tok/s, "
          f"{med('tflops_per_device'):.1f} TFLOP/s/GPU, MFU {'n/a' if mfu is None else f'{mfu:.1%} (causal {mfu_causal:.1%})'}, "
          f"peak {max(r['peak_mem_mb'] for r in rows):,.0f} MiB, skipped {skipped}, "
          f"optimizer step {meta['optimizer_step']} at iteration {meta['iteration']}, "
          f"finished {rd.finished() is not None}")
    done = rd.finished() is not None or (run.name == "te" and (rd.read_exit() or {}).get("code") == 98)
    bad += (not finite) + (skipped > 0) + (not done) + (meta["optimizer_step"] != meta["iteration"])
sys.exit(1 if bad else 0)
PY
echo "gpu_check: OK"
