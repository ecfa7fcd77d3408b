"""Process-group initialisation from torchrun's environment or from srun's, and device selection.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. Under `srun` without torchrun each task
has SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; the master is the first host of SLURM_JOB_NODELIST and the port
is MASTER_PORT or derived from SLURM_JOB_ID. A plain `python -m pretrain` is a world of one.
NCCL on GPU, gloo on CPU (where pretrain.cpu makes megatron-core run).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta

import torch


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # torchrun | srun | single


def first_host(nodelist: str) -> str:
    """First hostname of a Slurm nodelist: 'node[01-04,07],gpu3' -> 'node01'."""
    nodelist = nodelist.strip()
    m = re.match(r"^([^,\[]+)(\[([^\]]+)\])?", nodelist)
    if not m:
        raise ValueError(f"cannot parse SLURM_JOB_NODELIST={nodelist!r}")
    prefix, ranges = m.group(1), m.group(3)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def dist_env(environ: dict | None = None) -> DistEnv:
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                       env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500)), "torchrun")
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) > 1:
        job = int(env.get("SLURM_JOB_ID", "0"))
        port = int(env.get("MASTER_PORT", 20000 + job % 20000))
        addr = env.get("MASTER_ADDR") or first_host(env.get("SLURM_JOB_NODELIST", "localhost"))
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                       addr, port, "srun")
    return DistEnv(0, 1, 0, "127.0.0.1", int(env.get("MASTER_PORT", 29500)), "single")


def use_cuda() -> bool:
    return torch.cuda.is_available()


def init_distributed(env: DistEnv, timeout_s: int = 600) -> torch.device:
    """Start the default process group (a group of one for a single process) and pick the device."""
    if use_cuda():
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
        device, backend = torch.device("cuda", torch.cuda.current_device()), "nccl"
    else:
        from pretrain import cpu

        cpu.enable()
        device, backend = torch.device("cpu"), "gloo"
    if not torch.distributed.is_initialized():
        if env.launcher == "torchrun":  # torchrun's own store (its agent serves it, also for one process)
            init_method = "env://"
        elif env.launcher == "single":  # a world of one: any free local port, so parallel runs never collide
            init_method = f"tcp://127.0.0.1:{_free_port()}"
        else:
            init_method = f"tcp://{env.master_addr}:{env.master_port}"
        torch.distributed.init_process_group(
            backend=backend, init_method=init_method, rank=env.rank,
            world_size=env.world_size, timeout=timedelta(seconds=timeout_s))
    return device


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def destroy() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
