"""Executors: local processes and Slurm job arrays (datatrove's), and MPI ranks (ours, on mpi4py).

All three run the same datatrove tasks: task r reads shard r of the input (files[r::tasks]), so the same
task count gives byte-identical outputs whatever ran them. Each marks finished tasks in logs/completions/,
and a rerun skips them (resume). The manifest is written once every task is done: by the local process,
by MPI rank 0, or on Slurm by a job chained with ``afterok`` on the job array.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

from datatrove.executor.base import DistributedEnvVars, PipelineExecutor
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.executor.slurm import SlurmPipelineExecutor, launch_slurm_job

from data_pipeline.config import StageConfig
from data_pipeline.manifest import write_manifest


class MpiPipelineExecutor(PipelineExecutor):
    """Each mpi4py rank runs tasks rank, rank + size, ... ; rank 0 writes the manifest after all succeed.

    Start it with ``mpiexec -n 4 python -m data_pipeline ... executor=mpi`` or, under Slurm,
    ``srun --mpi=pmi2 -n 4 python -m data_pipeline ... executor=mpi``.
    """

    def __init__(self, pipeline, tasks: int, logging_dir, output_dir: str, skip_completed: bool = True):
        super().__init__(pipeline, logging_dir, skip_completed)
        self.tasks = tasks
        self.output_dir = output_dir

    @property
    def world_size(self) -> int:
        return self.tasks

    def get_distributed_env(self, node_rank: int = -1) -> DistributedEnvVars:
        return DistributedEnvVars(datatrove_node_ips="localhost", datatrove_cpus_per_task="1",
                                  datatrove_mem_per_cpu="-1", datatrove_gpus_on_node="0", datatrove_executor="MPI")

    def run(self):
        from copy import deepcopy

        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
        failure = None
        pipeline = self.pipeline
        mine = list(range(rank, self.tasks, size))
        try:
            for task in mine:
                self.pipeline = deepcopy(pipeline)  # fresh step stats per task, as the local executor does
                self._run_for_rank(task, local_rank=rank)
        except Exception as exc:  # noqa: BLE001 - reported to every rank below, then re-raised
            failure = f"rank {rank}: {type(exc).__name__}: {exc}"
        report = comm.allgather((failure, mine))
        failures = [f for f, _ in report if f]
        if failures:
            raise RuntimeError("MPI stage failed: " + "; ".join(failures))
        if rank == 0:
            with self.logging_dir.open("mpi.json", "wt") as f:  # who ran what, for the curious and the tests
                json.dump({"world_size": size, "tasks_by_rank": [tasks for _, tasks in report]}, f)
            write_manifest(self.output_dir)
        comm.Barrier()


class ManifestSlurmExecutor(SlurmPipelineExecutor):
    """datatrove's Slurm executor whose stats-merging job (chained ``afterok`` on the array) also writes
    manifest.json; with ``wait`` the submitting command blocks until that job has ended."""

    def __init__(self, *args, output_dir: str, python: str = sys.executable, **kwargs):
        super().__init__(*args, **kwargs)
        self.output_dir = output_dir
        self.python = python
        self.manifest_job_id = None

    def get_sbatch_args(self, max_array: int = 1) -> dict:
        args = super().get_sbatch_args(max_array)
        if self.mem_per_cpu_gb <= 0:  # executor.mem_per_cpu_gb=0: ask for no memory (clusters without it)
            args.pop("mem-per-cpu", None)
        return args

    def launch_merge_stats(self):
        command = (f"merge_stats {self.logging_dir.resolve_paths('stats')} "
                   f"-o {self.logging_dir.resolve_paths('stats.json')}\n"
                   f"{shlex.quote(self.python)} -m data_pipeline finalize {shlex.quote(self.output_dir)}")
        self.manifest_job_id = launch_slurm_job(
            self.get_launch_file_contents(
                {**self.get_sbatch_args(), "cpus-per-task": 1, "dependency": f"afterok:{self.job_id}",
                 "job-name": f"{self.job_name}_manifest"},
                command,
            ),
            self.job_id_retriever,
        )


def wait_for_slurm_job(job_id: str, array_job_id: str, poll_s: float = 2.0) -> None:
    """Block until the manifest job ``job_id`` has left the queue. If tasks of the array failed, Slurm keeps
    the ``afterok`` job pending for ever (DependencyNeverSatisfied): cancel it and say how to resume."""
    while True:
        out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T %r"], capture_output=True, text=True)
        if out.returncode != 0 or not out.stdout.strip():
            return
        if "DependencyNeverSatisfied" in out.stdout:
            subprocess.run(["scancel", str(job_id)], capture_output=True)
            raise RuntimeError(
                f"tasks of job array {array_job_id} failed (see logs/slurm_logs/ in the output dir); the manifest "
                "job was cancelled. Rerun the same command: finished tasks are skipped, failed ones run again."
            )
        time.sleep(poll_s)


def run_with_executor(cfg: StageConfig, pipeline: list, logging_dir: str) -> None:
    ex = cfg.executor
    if ex.kind == "local":
        LocalPipelineExecutor(pipeline, tasks=ex.tasks, workers=ex.workers, logging_dir=logging_dir,
                              start_method="fork").run()
        write_manifest(cfg.output.dir)
    elif ex.kind == "mpi":
        MpiPipelineExecutor(pipeline, tasks=ex.tasks, logging_dir=logging_dir, output_dir=cfg.output.dir).run()
    elif ex.kind == "slurm":
        venv = os.path.join(sys.prefix, "bin", "activate")
        executor = ManifestSlurmExecutor(
            pipeline, tasks=ex.tasks, time=ex.time, partition=ex.partition, cpus_per_task=ex.cpus_per_task,
            mem_per_cpu_gb=ex.mem_per_cpu_gb, workers=ex.workers, job_name=ex.job_name, qos=ex.qos or "",
            venv_path=venv if os.path.exists(venv) else None, sbatch_args=dict(ex.sbatch_args),
            logging_dir=logging_dir, output_dir=os.path.abspath(cfg.output.dir) if "://" not in cfg.output.dir
            else cfg.output.dir, mail_type="NONE", requeue=False,
        )
        try:
            executor.run()
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"sbatch failed (exit {exc.returncode}); its message is above. Check "
                               f"executor.partition, executor.time and executor.mem_per_cpu_gb (0: request no "
                               f"memory) against `sinfo -o '%P %l %m %c'`") from None
        if executor.job_id in (None, -1):  # every task already done: just (re)write the manifest
            write_manifest(cfg.output.dir)
            return
        print(f"submitted job array {executor.job_id} and manifest job {executor.manifest_job_id}", flush=True)
        if ex.wait:
            wait_for_slurm_job(executor.manifest_job_id, executor.job_id)
            write_manifest(cfg.output.dir)  # raises with a clear message if tasks failed
