#!/bin/bash
# One srun task per node runs this: torchrun for this node's GPUs, rendezvous (c10d) hosted by the first node.
# Usage (from slurm/pretrain.sbatch): srun --ntasks-per-node=1 bash slurm/lib/torchrun_node.sh HEAD PORT NPROC PYTHON args...
set -euo pipefail
head=$1 port=$2 nproc=$3 python=$4
shift 4
# USR1 is the trainer's "checkpoint and stop" signal. `scancel --signal=USR1` reaches every process of the step;
# torchrun's agent must ignore it (its default action would kill the agent and its workers without a
# checkpoint). The trainer installs its own handler, replacing the inherited "ignore".
trap '' USR1
is_host=0
[ "${SLURM_NODEID:-0}" = 0 ] && is_host=1
exec "$python" -m torch.distributed.run \
    --nnodes="${SLURM_JOB_NUM_NODES:-1}" --nproc-per-node="$nproc" \
    --rdzv-backend=c10d --rdzv-endpoint="$head:$port" --rdzv-id="${SLURM_JOB_ID:-local}" \
    --rdzv-conf="is_host=$is_host" --max-restarts=0 \
    "$@"
