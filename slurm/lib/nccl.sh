# NCCL and CUDA settings for multi-node GPU training, in one place; sourced by slurm/*.sbatch.
# Every value is a default: a variable already set in the submitting shell (or by the site) wins.
# On CPU (gloo) these are unused and harmless.

# Megatron's tensor-parallel communication overlap needs a single CUDA work queue.
export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}
# Fail fast instead of hanging when a rank dies: NCCL errors abort the process group, the job ends, and
# slurm/pretrain.sbatch requeues it from the last checkpoint.
export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}
export TORCH_NCCL_DUMP_ON_TIMEOUT=${TORCH_NCCL_DUMP_ON_TIMEOUT:-0}
# WARN prints init problems without flooding the log; use INFO (and NCCL_DEBUG_SUBSYS=INIT,NET) to debug.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# InfiniBand / RoCE: a longer timeout and retries ride out short fabric hiccups on large jobs.
export NCCL_IB_TIMEOUT=${NCCL_IB_TIMEOUT:-22}
export NCCL_IB_RETRY_CNT=${NCCL_IB_RETRY_CNT:-10}
# Site-specific, left to the cluster: the NIC for bootstrap traffic and the IB HCAs, e.g.
#   export NCCL_SOCKET_IFNAME=ib0        export GLOO_SOCKET_IFNAME=ib0
#   export NCCL_IB_HCA=mlx5_0,mlx5_1     export NCCL_NET_GDR_LEVEL=PHB
# One thread per rank unless the job asks for more CPUs per task (the dataloader has its own workers).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
