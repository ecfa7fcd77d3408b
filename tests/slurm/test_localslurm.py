"""tools/localslurm: a real multi-node Slurm cluster on one host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tools.localslurm.cluster import LocalSlurm, LocalSlurmError, free_port_block
from tools.localslurm.config import ClusterSpec, render_slurm_conf
from tools.localslurm.hosts import ensure_hosts, known_names
from tools.localslurm.pytest_plugin import require_slurm

JOB = """#!/bin/bash
srun bash -c 'echo "task $SLURM_PROCID of $SLURM_NTASKS on $SLURMD_NODENAME local $SLURM_LOCALID"'
srun --mpi=pmi2 bash -c 'echo "pmi $PMI_RANK of $PMI_SIZE"'
"""


@pytest.mark.slurm
def test_two_nodes_two_tasks_each_and_pmi2(local_slurm, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(JOB)
    out = tmp_path / "job.out"
    job = local_slurm.sbatch("-N", "2", "--ntasks-per-node=2", "-o", str(out), str(script))
    info = local_slurm.wait(job, timeout=60)
    assert info["JobState"] == "COMPLETED", out.read_text()
    lines = out.read_text().splitlines()
    tasks = sorted(line for line in lines if line.startswith("task "))
    assert tasks == [f"task {r} of 4 on node{1 + r // 2} local {r % 2}" for r in range(4)]
    assert sorted(line for line in lines if line.startswith("pmi ")) == [f"pmi {r} of 4" for r in range(4)]


@pytest.mark.slurm
def test_stop_ends_only_its_own_processes(local_slurm, tmp_path):
    """A second cluster in its own directory starts and stops; the session's cluster keeps working."""
    other = LocalSlurm(ClusterSpec(dir=local_slurm.cluster.dir / "c2", nodes=1, cpus_per_node=1, port=free_port_block(2)))
    other.start()
    try:
        started = other._started()
        assert set(started) == {"munged", "slurmctld", "slurmd-node1"}
        assert other.run_client("srun", "-N", "1", "hostname").returncode == 0
        with pytest.raises(LocalSlurmError, match="ports .* in use"):
            LocalSlurm(ClusterSpec(dir=local_slurm.cluster.dir / "c3", nodes=1, port=other.spec.port)).start()
    finally:
        other.stop()
    for entry in started.values():
        assert not Path(f"/proc/{entry['pid']}").exists()
    assert local_slurm.cluster.running()
    states = local_slurm.cluster.run_client("sinfo", "-h", "-N", "-o", "%N %T").stdout.split("\n")
    assert sorted(s.split()[0] for s in states if s) == ["node1", "node2"]
    assert not any("down" in s or "drain" in s for s in states), states


def test_hosts_file_gets_missing_names_once(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.0.0.5 node1 # comment node9")  # no final newline
    assert ensure_hosts(["node1", "node2", "node9"], hosts) == ["node2", "node9"]
    assert ensure_hosts(["node1", "node2", "node9"], hosts) == []
    assert known_names(hosts) == {"localhost", "node1", "node2", "node9"}
    assert hosts.read_text().splitlines()[-1].startswith("127.0.0.1 node2 node9")


def test_conf_describes_distinct_nodes(tmp_path):
    spec = ClusterSpec(dir=tmp_path, nodes=3, port=30000)
    conf = render_slurm_conf(spec)
    assert "JobRequeue=1" in conf and "SlurmctldPort=30000" in conf
    for i in (1, 2, 3):
        assert f"NodeName=node{i} NodeHostname=localhost NodeAddr=127.0.0.1 Port={30000 + i}" in conf
    with pytest.raises(ValueError, match="nodes must be >= 1"):
        ClusterSpec(dir=tmp_path, nodes=0)


def test_missing_slurm_skips_or_fails(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("tools.localslurm.cluster.find_binary", lambda name: None)
    monkeypatch.delenv("REQUIRE_SLURM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Slurm is not installed"):
        require_slurm()
    monkeypatch.setenv("REQUIRE_SLURM", "1")
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_SLURM=1"):
        require_slurm()
