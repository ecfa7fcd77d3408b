"""pytest fixture `local_slurm`: a real Slurm cluster (2 nodes x 8 CPUs) for the whole test session.

Use it from any conftest.py:  `from tools.localslurm.pytest_plugin import local_slurm  # noqa: F401`
(or `pytest_plugins = ["tools.localslurm.pytest_plugin"]` in the root conftest). However many conftests import
it, one cluster serves the session. While it runs, SLURM_CONF (and PATH with sbin) are exported in os.environ,
so sbatch/squeue/scontrol and datatrove's SlurmPipelineExecutor reach it.

Without Slurm installed the tests that use it skip, naming what is missing; with REQUIRE_SLURM=1 (CI) they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.localslurm.cluster import INSTALL_HINT, LocalSlurm, free_port_block, missing_binaries
from tools.localslurm.config import ClusterSpec

_STASH = pytest.StashKey["SlurmCluster"]()
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}


def require_slurm() -> None:
    missing = missing_binaries()
    if missing:
        reason = f"Slurm is not installed (missing: {', '.join(missing)}). Fix: {INSTALL_HINT}"
        if os.environ.get("REQUIRE_SLURM") == "1":
            pytest.fail(f"REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)


@dataclass
class SlurmCluster:
    """The running cluster, with the few client calls tests need."""

    cluster: LocalSlurm

    @property
    def nodes(self) -> list[str]:
        return self.cluster.spec.node_names

    def sbatch(self, *args: str, env: dict | None = None, cwd: Path | str | None = None) -> str:
        """Submit; return the job id."""
        proc = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True,
                              env={**os.environ, **self.cluster.env(), **(env or {})}, cwd=cwd, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...); empty when unknown."""
        proc = self.cluster.run_client("scontrol", "show", "job", "-o", job_id, check=False)
        if proc.returncode != 0:
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", proc.stdout))

    def wait(self, job_id: str, timeout: float, until=None) -> dict[str, str]:
        """Poll until the job reaches a final state (or `until(job)` holds); fail the test on timeout."""
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if until is not None and until(info):
                return info
            if until is None and info.get("JobState") in FINAL_STATES:
                return info
            time.sleep(1)
        self.cluster.run_client("scancel", job_id, check=False)
        pytest.fail(f"job {job_id} did not finish within {timeout:.0f} s (last state: {info.get('JobState')}, "
                    f"reason {info.get('Reason')}); cancelled it")

    def signal_batch(self, job_id: str, sig: str = "USR1") -> None:
        self.cluster.run_client("scancel", "--batch", f"--signal={sig}", job_id)


@pytest.fixture(scope="session")
def local_slurm(request) -> SlurmCluster:
    require_slurm()
    stash = request.config.stash
    if _STASH in stash:
        return stash[_STASH]
    # Not under pytest's tmp dir: munged wants every directory above its socket searchable by all users
    # (pytest's is 0700), and the socket path must stay short (sockaddr_un holds 108 bytes).
    top = Path(tempfile.mkdtemp(prefix="localslurm-"))
    top.chmod(0o755)
    spec = ClusterSpec(dir=top, nodes=2, cpus_per_node=8, port=free_port_block(3))
    cluster = LocalSlurm(spec)
    cluster.start()
    env = pytest.MonkeyPatch()
    for key, value in cluster.env().items():
        env.setenv(key, value)

    def stop():
        env.undo()
        cluster.stop()
        shutil.rmtree(top, ignore_errors=True)

    request.config.add_cleanup(stop)
    stash[_STASH] = SlurmCluster(cluster)
    return stash[_STASH]
