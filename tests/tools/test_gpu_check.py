"""tools/gpu_check.sh, run through on CPU (GPU_CHECK_ON_CPU=1): its runs, exit-code checks, resume and report
work before a GPU is lent to run it. What it proves on a GPU (bf16, NCCL, TE) no CPU test can show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _gpu_check(tiny_shards: list[str], out: Path, *overrides: str) -> subprocess.CompletedProcess:
    data = tiny_shards[0].removeprefix("data.paths=[").removesuffix("]")
    tok = tiny_shards[1].removeprefix("data.tokenizer_model=")
    env = dict(os.environ, GPU_CHECK_ON_CPU="1", GPU_CHECK_DIR=str(out), PYTHON=sys.executable,
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(["bash", "tools/gpu_check.sh", data, tok, *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def test_gpu_check_runs_through_on_cpu(tiny_shards, tmp_path):
    proc = _gpu_check(tiny_shards, tmp_path / "check")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "exiting at step 20 (train.exit_interval)" in out and "resumed from" in out
    report = {line.split(":")[0]: line for line in out.splitlines()
              if line.split(":")[0] in ("bf16", "single", "tp2")}
    assert set(report) == {"bf16", "single", "tp2"}, out
    assert "steps 1-40" in report["bf16"] and "optimizer step 40 at iteration 40" in report["bf16"]
    assert "optimizer step 10 at iteration 10" in report["single"]
    assert "optimizer step 40 at iteration 40" in report["tp2"]
    assert all("skipped 0" in line and "finished True" in line for line in report.values())
    assert "SingleProcessModel" in out and "tp 2 x pp 1" in out
    assert out.rstrip().endswith("gpu_check: OK")


def test_gpu_check_fails_when_a_run_does_not_exit_as_planned(tiny_shards, tmp_path):
    """A run that fails (here a config error: 10 warmup steps in a 5-step run) stops the check with the run's
    exit code, the code it expected and the end of the run's log, instead of a report on what did run."""
    proc = _gpu_check(tiny_shards, tmp_path / "check", "train.iters=5")
    assert proc.returncode == 1
    assert "gpu_check: run bf16 exited 2, expected 98" in proc.stderr
    assert "optim.warmup_iters" in proc.stderr  # the log's end: the config error names the key
    assert "gpu_check: OK" not in proc.stdout
