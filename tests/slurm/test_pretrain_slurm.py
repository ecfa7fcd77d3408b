"""slurm/pretrain.sbatch on the local cluster (2 nodes x 2 tasks, gloo): multi-node training, preemption with
requeue, a killed rank, resharding between layouts, and a truncated newest checkpoint.

Every job is a real `sbatch` of the script users submit. One uninterrupted reference run (single node, torchrun,
4 processes, TP2 x DP2, checkpoints every 5 steps) is shared by the tests that compare against it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "slurm" / "pretrain.sbatch")
ITERS = 20
SAVE = 5
TRAIN = [f"train.iters={ITERS}", "train.global_batch_size=8", "train.micro_batch_size=2",
         "train.eval_interval=1000", "train.log_interval=1", "optim.warmup_iters=2", "logging.wandb.mode=disabled",
         "model=tiny", "run.seed=1234"]
JOB_TIMEOUT = 240

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


def wait_for_step(run_dir: Path, step: int, job: str, cluster, timeout: float = JOB_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "metrics.jsonl").exists() and max(losses(run_dir), default=0) >= step:
            return
        if cluster.job(job).get("JobState") not in ("PENDING", "RUNNING", "CONFIGURING"):
            break
        time.sleep(0.5)
    pytest.fail(f"run {run_dir} never logged step {step}:\n{log_of(run_dir)}")


def checkpoint_iters(run_dir: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in (run_dir / "checkpoints").glob("iter_*") if p.is_dir())


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


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("pretrain_slurm")


@pytest.fixture(scope="module")
def overrides(tiny_shards) -> list[str]:
    return [*TRAIN, *tiny_shards]


@pytest.fixture(scope="module")
def reference(local_slurm, work, overrides) -> Path:
    """Uninterrupted: one node, torchrun with 4 processes, TP2 x DP2, a checkpoint every 5 steps."""
    run = work / "reference"
    job = submit(local_slurm, run, [*overrides, "parallel.tp=2", f"train.save_interval={SAVE}"], nodes=1,
                 tasks_per_node=4, launcher="torchrun")
    finish(local_slurm, job, run)
    assert sorted(losses(run)) == list(range(1, ITERS + 1))
    return run


@pytest.fixture(scope="module")
def reference_221(local_slurm, work, overrides) -> Path:
    """Uninterrupted under (TP, PP, DP) = (2, 2, 1) on 2 nodes, with a checkpoint at step 10."""
    run = work / "tp2pp2"
    job = submit(local_slurm, run, [*overrides, "parallel.tp=2", "parallel.pp=2", "train.save_interval=10"])
    finish(local_slurm, job, run)
    return run


# ----------------------------------------------------------------------------------------------------------
# tests


def test_two_node_job_matches_single_node_run(local_slurm, work, overrides, reference):
    run = work / "two_nodes"
    job = submit(local_slurm, run, [*overrides, "parallel.tp=2", "train.save_interval=1000"])
    finish(local_slurm, job, run)
    info = json.loads((run / "run_info.json").read_text())
    assert (info["world_size"], info["tp"], info["pp"], info["dp"]) == (4, 2, 1, 2)
    assert [a["outcome"] for a in attempts(run)] == ["finished"]
    assert attempts(run)[0]["nodes"] == "node[1-2]"
    assert_same(losses(run), losses(reference), range(1, ITERS + 1))


def test_usr1_checkpoints_requeues_and_resumes_identically(local_slurm, work, overrides, reference):
    """Preemption through torchrun on 2 nodes: no periodic checkpoints, so the resume can only come from the
    checkpoint the signal asked for."""
    run = work / "preempted"
    job = submit(local_slurm, run, [*overrides, "parallel.tp=2", "train.save_interval=1000"], launcher="torchrun")
    wait_for_step(run, 6, job, local_slurm)
    local_slurm.signal_batch(job, "USR1")
    info = finish(local_slurm, job, run)
    assert int(info["Restarts"]) == 1
    assert [a["outcome"] for a in attempts(run)] == ["preempted-requeued", "finished"]
    saved = [i for i in checkpoint_iters(run) if i < ITERS]  # the checkpoint the signal asked for
    assert len(saved) == 1 and saved[0] >= 6, checkpoint_iters(run)
    logged = [step for seg in segments(run) for step in seg]
    assert all(logged.count(s) == 1 for s in range(1, saved[0] + 1)), logged  # resumed, not restarted
    assert_same(losses(run), losses(reference), range(1, ITERS + 1))


def test_killed_rank_fails_job_and_requeue_resumes_from_last_checkpoint(local_slurm, work, overrides, reference):
    run = work / "killed"
    job = submit(local_slurm, run, [*overrides, "parallel.tp=2", f"train.save_interval={SAVE}"])
    wait_for_step(run, 2 * SAVE + 1, job, local_slurm)
    os.kill(rank_pid(run, 1), signal.SIGKILL)
    info = finish(local_slurm, job, run)
    assert int(info["Restarts"]) == 1
    outcome = attempts(run)
    assert [a["outcome"] for a in outcome] == ["failed-requeued", "finished"] and outcome[0]["rc"] != 0
    first, second = segments(run)
    resumed_from = max(i for i in range(SAVE, ITERS, SAVE) if i <= max(first))
    assert min(second) == resumed_from + 1, (sorted(first), sorted(second))
    assert_same(second, losses(reference), range(resumed_from + 1, ITERS + 1))


@pytest.mark.parametrize("tp,pp", [(1, 1), (2, 1)], ids=["tp1pp1dp4", "tp2pp1dp2"])
def test_resume_under_another_layout_continues_the_losses(local_slurm, work, overrides, reference_221, tp, pp):
    """Saved under (2, 2, 1) at step 10, resumed under (1, 1, 4) or (2, 1, 2): weights, optimizer state and
    the data position carry over, so steps 11..20 follow the unchanged run to 1e-4."""
    run = work / f"resharded_tp{tp}pp{pp}"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(reference_221 / "checkpoints" / "iter_0000010", run / "checkpoints" / "iter_0000010")
    (run / "checkpoints" / "latest").write_text("iter_0000010")
    job = submit(local_slurm, run, [*overrides, f"parallel.tp={tp}", f"parallel.pp={pp}",
                                    "train.save_interval=1000"])
    finish(local_slurm, job, run)
    info = json.loads((run / "run_info.json").read_text())
    assert (info["tp"], info["pp"], info["dp"]) == (tp, pp, 4 // (tp * pp))
    resumed = losses(run)
    assert min(resumed) == 11
    assert_same(resumed, losses(reference_221), range(11, ITERS + 1), rel=1e-4)


def test_truncated_newest_checkpoint_falls_back_to_previous(local_slurm, work, overrides, reference):
    run = work / "truncated"
    (run / "checkpoints").mkdir(parents=True)
    for it in (10, 15):
        shutil.copytree(reference / "checkpoints" / f"iter_{it:07d}", run / "checkpoints" / f"iter_{it:07d}")
    (run / "checkpoints" / "latest").write_text("iter_0000015")
    victim = max((p for p in (run / "checkpoints" / "iter_0000015").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    job = submit(local_slurm, run, [*overrides, "parallel.tp=2", "train.save_interval=1000"])
    finish(local_slurm, job, run)
    out = Path(f"{run}.out").read_text(errors="replace")
    assert "iter_0000015" in out and "iter_0000010" in out, out  # the warning names both
    resumed = losses(run)
    assert min(resumed) == 11
    assert_same(resumed, losses(reference), range(11, ITERS + 1))
