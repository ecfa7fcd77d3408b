"""Train a planned ladder locally: each run as `python -m pretrain <its overrides>`, one after another.

Runs that already have finished.json are skipped, so an interrupted ladder continues where it stopped (the
trainer itself resumes a half-done run from its latest checkpoint). The Slurm array runs the same lines of
<ladder>/runs.txt, one per task.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from pretrain.rundir import EXIT_INTERVAL, EXIT_PREEMPTED, RunDir
from tools.scaling.config import ScalingConfig
from tools.scaling.plan import read_plan



def run_dir_of(run: dict) -> Path:
    for o in run["overrides"]:
        if o.startswith("run.dir="):
            return Path(o.split("=", 1)[1])
    raise ValueError(f"planned run {run['name']} has no run.dir override")


def train_run(python: str, overrides: list[str], run_dir: Path) -> int:
    """`python -m pretrain <overrides>`, output appended to <run_dir>/ladder_stdout.log; returns the exit code."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "ladder_stdout.log").open("ab") as out:
        return subprocess.call([python, "-m", "pretrain", *overrides], stdout=out, stderr=subprocess.STDOUT)


def run_ladder(cfg: ScalingConfig, log=print) -> list[str]:
    """Train every planned run that has not finished; returns the names of the runs that failed."""
    plan = read_plan(Path(cfg.ladder))
    python = cfg.python or sys.executable
    failed = []
    for i, run in enumerate(plan["runs"]):
        rd = run_dir_of(run)
        if RunDir(rd).finished() is not None:
            log(f"[{i + 1}/{len(plan['runs'])}] {run['name']}: finished already, skipped")
            continue
        t0 = time.time()
        rc = train_run(python, run["overrides"], rd)
        status = "done" if rc == 0 else f"FAILED (exit {rc}; see {rd / 'ladder_stdout.log'})"
        if rc in (EXIT_PREEMPTED, EXIT_INTERVAL):
            status = f"stopped after a checkpoint (exit {rc}); run again to resume"
        log(f"[{i + 1}/{len(plan['runs'])}] {run['name']}: {status} in {time.time() - t0:.0f} s")
        if rc != 0:
            failed.append(run["name"])
    return failed
