"""A real Slurm cluster on one host, for tests and developers: `python -m tools.localslurm start|stop|status|env`.

    python -m tools.localslurm start            # munged + slurmctld + 2 x slurmd, state in .localslurm/
    eval "$(python -m tools.localslurm env)"    # export SLURM_CONF for sbatch/srun/squeue/scontrol
    sbatch -N 2 --ntasks-per-node=2 slurm/pretrain.sbatch model=tiny ...
    python -m tools.localslurm stop             # cancels its jobs, ends the processes it started
"""

from tools.localslurm.cluster import LocalSlurm, LocalSlurmError, missing_binaries
from tools.localslurm.config import ClusterSpec

__all__ = ["ClusterSpec", "LocalSlurm", "LocalSlurmError", "missing_binaries"]
