"""slurm/pretrain.sbatch on the local cluster (2 nodes x 2 tasks, gloo): multi-node training, preemption with
requeue, a killed rank, resharding between layouts, and a truncated newest checkpoint.

Every job is a real `sbatch` of the script users submit. One uninterrupted reference run (single node, torchrun,
4 processes, TP2 x DP2, checkpoints every 5 steps) is shared by the tests that compare against it. The jobs that
need nothing from another job are submitted together at the start (`jobs`), and a watcher thread preempts or
kills them mid-run, so the cluster's waits (requeue delays, process start-up) overlap.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from pretrain.checkpoint_reader import LATEST, iter_dir_name

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "slurm" / "pretrain.sbatch")
ITERS = 20
SAVE = 5
TRAIN = [f"train.iters={ITERS}", "train.global_batch_size=8", "train.micro_batch_size=2",
         "train.eval_interval=1000", "train.log_interval=1", "optim.warmup_iters=2", "logging.wandb.mode=disabled",
         "model=tiny", "run.seed=1234"]
JOB_TIMEOUT = 600

pytestmark = pytest.mark.slurm


# ----------------------------------------------------------------------------------------------------------
# helpers


def submit(cluster, run_dir: Path, overrides: list[str], nodes: int = 2, tasks_per_node: int = 2,
           launcher: str = "srun", extra_env: dict | None = None) -> str:
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    env = {"PYTHON": sys.executable, "LAUNCHER": launcher, "SLURMTRAIN_HOME": str(REPO), **(extra_env or {})}
    if launcher == "torchrun":
        env["NPROC_PER_NODE"] = str(tasks_per_node)
        tasks_per_node = 1
    return cluster.sbatch(f"-N{nodes}", f"--ntasks-per-node={tasks_per_node}", f"--output={run_dir}.out",
                          SCRIPT, *overrides, f"run.dir={run_dir}", env=env, cwd=REPO)


def log_of(run_dir: Path) -> str:
    out = Path(f"{run_dir}.out")
    return out.read_text(errors="replace")[-6000:] if out.exists() else "(no job output)"


def finish(cluster, job: str, run_dir: Path) -> dict:
    info = cluster.wait(job, JOB_TIMEOUT)
    assert info["JobState"] == "COMPLETED", f"job {job} ended {info.get('JobState')}:\n{log_of(run_dir)}"
    assert (run_dir / "finished.json").exists(), log_of(run_dir)
    return info


def segments(run_dir: Path) -> list[dict[int, float]]:
    """metrics.jsonl split into attempts (a step that does not increase starts a new one): [{step: loss}]."""
    out: list[dict[int, float]] = []
    last = None
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" not in rec or rec["loss"] is None:
            continue
        if last is None or rec["step"] <= last:
            out.append({})
        out[-1][rec["step"]] = rec["loss"]
        last = rec["step"]
    return out


def losses(run_dir: Path) -> dict[int, float]:
    """The loss of each step as the run finally trained it (a resumed step replaces the interrupted one)."""
    merged: dict[int, float] = {}
    for seg in segments(run_dir):
        merged.update(seg)
    return merged


def attempts(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "slurm_attempts.jsonl").read_text().splitlines()]


def checkpoint_iters(run_dir: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in (run_dir / "checkpoints").glob("iter_*") if p.is_dir())


def latest_is(run_dir: Path, iteration: int) -> bool:
    """Whether the newest committed checkpoint (the `latest` pointer) is `iteration`'s."""
    pointer = run_dir / "checkpoints" / LATEST
    return pointer.is_file() and pointer.read_text().strip() == iter_dir_name(iteration)


def rank_pid(run_dir: Path, rank: int) -> int:
    """PID of the trainer process with SLURM_PROCID=rank for this run (srun launch: one process per rank)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pretrain" in cmd and f"run.dir={run_dir}".encode() in cmd and f"SLURM_PROCID={rank}".encode() in env:
            return int(proc.name)
    raise AssertionError(f"no process for rank {rank} of {run_dir}")


def assert_same(actual: dict[int, float], expected: dict[int, float], steps, rel: float = 0.0) -> None:
    for s in steps:
        assert s in actual, f"step {s} missing (have {sorted(actual)})"
        assert actual[s] == pytest.approx(expected[s], rel=rel, abs=0), f"step {s}: {actual[s]} != {expected[s]}"


# ----------------------------------------------------------------------------------------------------------
# shared runs


class Run:
    """One submitted job and its run directory."""

    def __init__(self, cluster, run_dir: Path, overrides: list[str], **submit_args):
        self.cluster, self.dir = cluster, run_dir
        self.job = submit(cluster, run_dir, overrides, **submit_args)
        self.events: list[str] = []  # what the watcher did, for the failure messages

    def finished(self) -> dict:
        return finish(self.cluster, self.job, self.dir)

    def when_step(self, step: int, action, committed: int | None = None) -> None:
        """In a background thread: wait until the run has logged `step` (and, with `committed`, until its newest
        committed checkpoint is that iteration's), then call action(self)."""
        def watch():
            deadline = time.monotonic() + JOB_TIMEOUT
            while time.monotonic() < deadline:
                if (self.dir / "metrics.jsonl").exists() and max(losses(self.dir), default=0) >= step \
                        and (committed is None or latest_is(self.dir, committed)):
                    self.events.append(f"step {step} seen")
                    action(self)
                    self.events.append("acted")
                    return
                time.sleep(0.3)
            self.events.append(f"step {step} never seen")

        threading.Thread(target=watch, daemon=True).start()


def preempt(run: Run) -> None:
    run.cluster.signal_batch(run.job, "USR1")


def kill_rank_1(run: Run) -> None:
    os.kill(rank_pid(run.dir, 1), signal.SIGKILL)


@pytest.fixture(scope="module")
def jobs(local_slurm, tmp_path_factory, tiny_shards) -> dict[str, Run]:
    work = tmp_path_factory.mktemp("pretrain_slurm")
    base = [*TRAIN, *tiny_shards]
    tp2dp2 = [*base, "parallel.tp=2"]
    runs = {
        # uninterrupted, one node, torchrun with 4 processes, a checkpoint every 5 steps
        "reference": Run(local_slurm, work / "reference", [*tp2dp2, f"train.save_interval={SAVE}"], nodes=1,
                         tasks_per_node=4, launcher="torchrun"),
        "two_nodes": Run(local_slurm, work / "two_nodes", [*tp2dp2, "train.save_interval=1000"]),
        # no periodic checkpoints: a resume can only come from the checkpoint the signal asked for
        "preempted": Run(local_slurm, work / "preempted", [*tp2dp2, "train.save_interval=1000"],
                         launcher="torchrun"),
        "killed": Run(local_slurm, work / "killed", [*tp2dp2, f"train.save_interval={SAVE}"]),
        # a planned stop at step 10 (exit 98 through srun), requeued and continued to the end
        "exit_interval": Run(local_slurm, work / "exit_interval", [*tp2dp2, "train.save_interval=1000",
                                                                   "train.exit_interval=10"]),
        # NaN at steps 3 and 4, two in a row stop the run: exit 3, not requeued
        "diverged": Run(local_slurm, work / "diverged", [*base, "train.save_interval=1",
                                                         "train.inject_nonfinite_at=[3,4]",
                                                         "train.max_nonfinite_in_a_row=2"],
                        nodes=1, tasks_per_node=1),
        # uninterrupted under (TP, PP, DP) = (2, 2, 1), with the checkpoint the resharded runs start from
        "tp2pp2": Run(local_slurm, work / "tp2pp2", [*base, "parallel.tp=2", "parallel.pp=2",
                                                     "train.save_interval=10"]),
    }
    runs["preempted"].when_step(6, preempt)
    # killed once step 10's checkpoint is committed: saves are asynchronous (dcp), so at step 11 it may still be
    # in flight, and a resume from step 5's would then be right
    runs["killed"].when_step(2 * SAVE + 1, kill_rank_1, committed=2 * SAVE)
    yield runs
    for run in runs.values():
        local_slurm.cluster.run_client("scancel", run.job, check=False)


@pytest.fixture(scope="module")
def reference(jobs, local_slurm, tiny_shards) -> Path:
    ref = jobs["reference"]
    ref.finished()
    assert sorted(losses(ref.dir)) == list(range(1, ITERS + 1))
    jobs["truncated"] = resume_from_truncated(local_slurm, ref.dir, tiny_shards)  # starts now, checked last
    return ref.dir


def resume_from_truncated(cluster, reference: Path, tiny_shards: list[str]) -> Run:
    """The reference's checkpoints 10 and 15, with the newest (15) cut in half, resumed."""
    run_dir = reference.parent / "truncated"
    (run_dir / "checkpoints").mkdir(parents=True)
    for it in (10, 15):
        shutil.copytree(reference / "checkpoints" / f"iter_{it:07d}", run_dir / "checkpoints" / f"iter_{it:07d}")
    (run_dir / "checkpoints" / "latest").write_text("iter_0000015")
    victim = max((p for p in (run_dir / "checkpoints" / "iter_0000015").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return Run(cluster, run_dir, [*TRAIN, *tiny_shards, "parallel.tp=2", "train.save_interval=1000"])


# ----------------------------------------------------------------------------------------------------------
# tests


def test_two_node_job_matches_single_node_run(jobs, reference):
    run = jobs["two_nodes"]
    run.finished()
    info = json.loads((run.dir / "run_info.json").read_text())
    assert (info["world_size"], info["tp"], info["pp"], info["dp"]) == (4, 2, 1, 2)
    assert [a["outcome"] for a in attempts(run.dir)] == ["finished"]
    assert attempts(run.dir)[0]["nodes"] == "node[1-2]"
    assert_same(losses(run.dir), losses(reference), range(1, ITERS + 1))


def test_usr1_checkpoints_requeues_and_resumes_identically(jobs, reference):
    """Preemption through torchrun on 2 nodes: USR1 after step 6, checkpoint, requeue, resume."""
    run = jobs["preempted"]
    info = run.finished()
    assert run.events == ["step 6 seen", "acted"]
    assert int(info["Restarts"]) == 1
    assert [a["outcome"] for a in attempts(run.dir)] == ["preempted-requeued", "finished"]
    saved = [i for i in checkpoint_iters(run.dir) if i < ITERS]  # the checkpoint the signal asked for
    assert len(saved) == 1 and saved[0] >= 6, checkpoint_iters(run.dir)
    logged = [step for seg in segments(run.dir) for step in seg]
    assert all(logged.count(s) == 1 for s in range(1, saved[0] + 1)), logged  # resumed, not restarted
    assert_same(losses(run.dir), losses(reference), range(1, ITERS + 1))


def test_exit_interval_is_requeued_and_continues(jobs, reference):
    run = jobs["exit_interval"]
    info = run.finished()
    assert int(info["Restarts"]) == 1
    outcome = attempts(run.dir)
    assert [a["outcome"] for a in outcome] == ["exit-interval-requeued", "finished"], outcome
    # The second attempt resumed from the checkpoint written at the exit step and retrained nothing: the steps
    # form one increasing run (a retrained step would start a new segment).
    assert [sorted(seg) for seg in segments(run.dir)] == [list(range(1, ITERS + 1))]
    assert checkpoint_iters(run.dir)[0] == 10, checkpoint_iters(run.dir)
    assert "resumed from" in Path(f"{run.dir}.out").read_text(errors="replace")
    assert_same(losses(run.dir), losses(reference), range(1, ITERS + 1))


def test_divergence_is_not_requeued(jobs):
    run = jobs["diverged"]
    info = run.cluster.wait(run.job, JOB_TIMEOUT)
    assert info["JobState"] == "FAILED" and int(info["Restarts"]) == 0, log_of(run.dir)
    assert [a["outcome"] for a in attempts(run.dir)] == ["diverged"]
    assert json.loads((run.dir / "exit.json").read_text())["code"] == 3
    assert "not requeued" in log_of(run.dir) and "iter_0000002" in log_of(run.dir)


def test_killed_rank_fails_job_and_requeue_resumes_from_last_checkpoint(jobs, reference):
    run = jobs["killed"]
    info = run.finished()
    assert run.events == [f"step {2 * SAVE + 1} seen", "acted"]
    assert int(info["Restarts"]) == 1
    outcome = attempts(run.dir)
    assert [a["outcome"] for a in outcome] == ["failed-requeued", "finished"] and outcome[0]["rc"] != 0
    first, second = segments(run.dir)
    resumed_from = 2 * SAVE  # the newest committed checkpoint when rank 1 was killed
    assert max(first) > resumed_from and min(second) == resumed_from + 1, (sorted(first), sorted(second))
    assert_same(second, losses(reference), range(resumed_from + 1, ITERS + 1))


@pytest.fixture(scope="module")
def resharded(jobs, local_slurm, tiny_shards):
    """Saved under (2, 2, 1) at step 10, resumed under (1, 1, 4) and (2, 1, 2), both jobs at once."""
    source = jobs["tp2pp2"]
    source.finished()
    runs = {}
    for tp, pp in [(1, 1), (2, 1)]:
        run_dir = source.dir.parent / f"resharded_tp{tp}pp{pp}"
        (run_dir / "checkpoints").mkdir(parents=True)
        shutil.copytree(source.dir / "checkpoints" / "iter_0000010", run_dir / "checkpoints" / "iter_0000010")
        (run_dir / "checkpoints" / "latest").write_text("iter_0000010")
        runs[(tp, pp)] = Run(local_slurm, run_dir, [*TRAIN, *tiny_shards, f"parallel.tp={tp}",
                                                    f"parallel.pp={pp}", "train.save_interval=1000"])
    return source.dir, runs


@pytest.mark.parametrize("tp,pp", [(1, 1), (2, 1)], ids=["tp1pp1dp4", "tp2pp1dp2"])
def test_resume_under_another_layout_continues_the_losses(resharded, tp, pp):
    """Weights, optimizer state and the data position carry over: steps 11..20 follow the unchanged run."""
    source, runs = resharded
    run = runs[(tp, pp)]
    run.finished()
    info = json.loads((run.dir / "run_info.json").read_text())
    assert (info["tp"], info["pp"], info["dp"]) == (tp, pp, 4 // (tp * pp))
    resumed = losses(run.dir)
    assert min(resumed) == 11
    assert_same(resumed, losses(source), range(11, ITERS + 1), rel=1e-4)


def test_truncated_newest_checkpoint_falls_back_to_previous(jobs, reference):
    run = jobs["truncated"]
    run.finished()
    out = Path(f"{run.dir}.out").read_text(errors="replace")
    assert "iter_0000015" in out and "iter_0000010" in out, out  # the warning names both
    resumed = losses(run.dir)
    assert min(resumed) == 11
    assert_same(resumed, losses(reference), range(11, ITERS + 1))


def test_dry_run_prints_topology_and_a_bad_layout_fails_before_launch(local_slurm, tmp_path, tiny_shards):
    env = {"PYTHON": sys.executable, "SLURMTRAIN_HOME": str(REPO)}
    out = tmp_path / "dry.out"
    job = local_slurm.sbatch("-N2", "--ntasks-per-node=2", f"--output={out}", SCRIPT, "--dry-run", *TRAIN,
                             *tiny_shards, "parallel.tp=2", f"run.dir={tmp_path / 'dry'}", env=env, cwd=REPO)
    assert local_slurm.wait(job, 120)["JobState"] == "COMPLETED", out.read_text()
    text = out.read_text()
    assert "world size 4 = 2 node(s) x 2 task(s); TP=2 PP=1 DP=2" in text
    assert "node2: rank 2 (tp 0, pp 0, dp 1); rank 3 (tp 1, pp 0, dp 1)" in text
    assert "launch: srun --kill-on-bad-exit=1" in text
    assert not (tmp_path / "dry").exists()  # nothing trained, nothing written

    bad = tmp_path / "bad.out"
    job = local_slurm.sbatch("-N2", "--ntasks-per-node=2", f"--output={bad}", SCRIPT, *TRAIN, *tiny_shards,
                             "parallel.tp=3", f"run.dir={tmp_path / 'bad'}", env=env, cwd=REPO)
    info = local_slurm.wait(job, 120)
    assert info["JobState"] == "FAILED" and int(info["Restarts"]) == 0, bad.read_text()
    assert "parallel.tp" in bad.read_text() and "not launching" in bad.read_text()
    assert not (tmp_path / "bad").exists()
