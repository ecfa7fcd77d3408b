"""Executors: local processes and Slurm job arrays (datatrove's), and MPI ranks (ours, on mpi4py).

A stage is one or more pipelines run in order, each with its own task count (stages/). All three run the
same datatrove tasks: task r reads shard r of the input (files[r::tasks]), so the same
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

    def __init__(self, pipeline, tasks: int, logging_dir, output_dir: str, skip_completed: bool = True,
                 manifest: bool = True):
        super().__init__(pipeline, logging_dir, skip_completed)
        self.tasks = tasks
        self.output_dir = output_dir
        self.manifest = manifest

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
            if self.manifest:
                write_manifest(self.output_dir)
        comm.Barrier()


class ManifestSlurmExecutor(SlurmPipelineExecutor):
    """datatrove's Slurm executor whose stats-merging job (chained ``afterok`` on the array) also writes
    manifest.json; with ``wait`` the submitting command blocks until that job has ended."""

    def __init__(self, *args, output_dir: str, python: str = sys.executable, manifest: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.output_dir = output_dir
        self.manifest = manifest
        self.python = python
        self.manifest_job_id = None

    def get_sbatch_args(self, max_array: int = 1) -> dict:
        args = super().get_sbatch_args(max_array)
        if self.mem_per_cpu_gb <= 0:  # executor.mem_per_cpu_gb=0: ask for no memory (clusters without it)
            args.pop("mem-per-cpu", None)
        return args

    def launch_merge_stats(self):
        if not self.manifest:  # an earlier pipeline of the stage: the manifest job reads its per-task stats
            return
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


def run_stage(cfg: StageConfig) -> str | None:
    """Check the config against a half-done stage, then run the stage's pipelines in order on the executor.
    Returns the Slurm manifest job's id when it submitted one and did not wait for it."""
    from data_pipeline.stages import get_stage
    from data_pipeline.stages.base import check_or_record_state, logs_dir, redo_broken_tasks
    from data_pipeline.stages.inputs import input_listing

    if cfg.executor.kind == "mpi":
        # MPI must initialise before the filters load their native libraries: across Slurm nodes under
        # `srun --mpi=pmi2`, MPICH's PMI2/UCX start-up fails when it comes after them.
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        error = pipelines = None
        if comm.Get_rank() == 0:
            try:
                pipelines = get_stage(cfg.stage).pipelines(cfg)
                check_or_record_state(cfg, pipelines, input_listing(cfg))
                redo_broken_tasks(cfg, pipelines)
            except Exception as exc:  # noqa: BLE001 - every rank must stop with the same message
                error = str(exc)
        error = comm.bcast(error, root=0)
        if error:
            raise SystemExit(f"error: {error}")
        if comm.Get_rank() != 0:
            pipelines = get_stage(cfg.stage).pipelines(cfg)
    else:
        pipelines = get_stage(cfg.stage).pipelines(cfg)
        check_or_record_state(cfg, pipelines, input_listing(cfg))
        redo_broken_tasks(cfg, pipelines)
    return run_pipelines(cfg, pipelines, [logs_dir(cfg, p) for p in pipelines])


def run_pipelines(cfg: StageConfig, pipelines: list, logging_dirs: list[str]) -> str | None:
    """Run the pipelines one after the other (each waits for every task of the one before), then the manifest."""
    ex = cfg.executor
    if ex.kind == "local":
        for pipeline, logging_dir in zip(pipelines, logging_dirs):
            if pipeline.skip is not None and pipeline.skip():
                continue
            LocalPipelineExecutor(pipeline.steps, tasks=pipeline.tasks, workers=ex.workers, logging_dir=logging_dir,
                                  start_method="fork").run()
        write_manifest(cfg.output.dir)
    elif ex.kind == "mpi":
        from mpi4py import MPI

        for i, (pipeline, logging_dir) in enumerate(zip(pipelines, logging_dirs)):
            if pipeline.skip is not None and pipeline.skip():  # every rank sees the same files (shared disk)
                continue
            MpiPipelineExecutor(pipeline.steps, tasks=pipeline.tasks, logging_dir=logging_dir,
                                output_dir=cfg.output.dir, manifest=i == len(pipelines) - 1).run()
            MPI.COMM_WORLD.Barrier()
    elif ex.kind == "slurm":
        venv = os.path.join(sys.prefix, "bin", "activate")
        executor = None
        for i, (pipeline, logging_dir) in enumerate(zip(pipelines, logging_dirs)):
            last = i == len(pipelines) - 1
            executor = ManifestSlurmExecutor(
                pipeline.steps, tasks=pipeline.tasks, time=ex.time, partition=ex.partition,
                cpus_per_task=ex.cpus_per_task, mem_per_cpu_gb=ex.mem_per_cpu_gb, workers=ex.workers,
                job_name=ex.job_name if len(pipelines) == 1 else f"{ex.job_name}_{pipeline.name}", qos=ex.qos or "",
                venv_path=venv if os.path.exists(venv) else None, sbatch_args=dict(ex.sbatch_args),
                logging_dir=logging_dir, output_dir=os.path.abspath(cfg.output.dir) if "://" not in cfg.output.dir
                else cfg.output.dir, mail_type="NONE", requeue=False, depends=executor, manifest=last,
            )
        try:
            executor.run()  # datatrove launches the pipelines this one depends on first, chained afterok
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"sbatch failed (exit {exc.returncode}); its message is above. Check "
                               f"executor.partition, executor.time and executor.mem_per_cpu_gb (0: request no "
                               f"memory) against `sinfo -o '%P %l %m %c'`") from None
        if executor.job_id in (None, -1):  # every task already done: just (re)write the manifest
            write_manifest(cfg.output.dir)
            return None
        print(f"submitted job array {executor.job_id} and manifest job {executor.manifest_job_id}", flush=True)
        if not ex.wait:
            return executor.manifest_job_id
        wait_for_slurm_job(executor.manifest_job_id, executor.job_id)
        write_manifest(cfg.output.dir)  # raises with a clear message if tasks failed
    return None
