"""The local cluster's shape and the slurm.conf that describes it.

Several `slurmd -N nodeX` daemons share one host: each node has its own name, its own port and its own spool,
log and pid file (the `%n` patterns below), and every node's address is 127.0.0.1. Accounting, cgroups and
task binding are off, so nothing outside the cluster's own directory is touched.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClusterSpec:
    dir: Path  # everything the cluster writes: conf, munge key and socket, state, spool, logs, pids
    nodes: int = 2
    cpus_per_node: int = 4  # declared CPUs; slurmd is told to trust the config (config_overrides), not the host
    port: int = 17817  # slurmctld's port; the nodes take port+1 .. port+nodes
    node_prefix: str = "node"
    cluster_name: str = "localslurm"
    partition: str = "debug"

    def __post_init__(self):
        if self.nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {self.nodes}")
        if self.cpus_per_node < 1:
            raise ValueError(f"cpus_per_node must be >= 1, got {self.cpus_per_node}")
        if not 1024 <= self.port <= 65535 - self.nodes:
            raise ValueError(f"port {self.port} out of range: choose 1024..{65535 - self.nodes}")

    @property
    def node_names(self) -> list[str]:
        return [f"{self.node_prefix}{i}" for i in range(1, self.nodes + 1)]

    @property
    def conf_path(self) -> Path:
        return self.dir / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.dir / "munge" / "munge.socket"

    @property
    def nodelist(self) -> str:
        return self.node_names[0] if self.nodes == 1 else f"{self.node_prefix}[1-{self.nodes}]"


def render_slurm_conf(spec: ClusterSpec) -> str:
    d = spec.dir.resolve()
    user = getpass.getuser()
    lines = [
        "# Written by tools/localslurm: a whole Slurm cluster on one host. Do not edit; restart instead.",
        f"ClusterName={spec.cluster_name}",
        "SlurmctldHost=localhost",
        f"SlurmctldPort={spec.port}",
        f"SlurmUser={user}",
        f"SlurmdUser={user}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={spec.munge_socket.resolve()},cred_expire=10",  # requeued jobs wait cred_expire s
        f"StateSaveLocation={d}/state",
        f"SlurmdSpoolDir={d}/spool/%n",
        f"SlurmctldPidFile={d}/run/slurmctld.pid",
        f"SlurmdPidFile={d}/run/slurmd-%n.pid",
        f"SlurmctldLogFile={d}/log/slurmctld.log",
        f"SlurmdLogFile={d}/log/slurmd-%n.log",
        f"PlugStackConfig={d}/plugstack.conf",  # empty: not the host's /etc/slurm/plugstack.conf
        "SlurmdParameters=config_overrides",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SwitchType=switch/none",
        "MpiDefault=none",  # `srun --mpi=pmi2` picks the PMI2 plugin per job
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=2,bf_interval=2",  # start requeued jobs promptly
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "JobRequeue=1",  # batch jobs may be requeued (`scontrol requeue`, `sbatch --requeue`)
        "ReturnToService=2",
        "MinJobAge=600",  # finished jobs stay visible to squeue/scontrol for 10 minutes
        "KillWait=10",
        "InactiveLimit=0",
        # Generous: on a loaded laptop or CI box a busy slurmd must not be declared down (its jobs would be
        # killed and requeued behind the user's back).
        "SlurmctldTimeout=300",
        "SlurmdTimeout=300",
        "MessageTimeout=30",
        "MailProg=/bin/true",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
    ]
    for i, name in enumerate(spec.node_names, start=1):
        lines.append(f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={spec.port + i} "
                     f"CPUs={spec.cpus_per_node} State=UNKNOWN")
    lines.append(f"PartitionName={spec.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"
