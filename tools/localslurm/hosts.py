"""Make the cluster's node names resolve: Slurm jobs see SLURM_JOB_NODELIST=node[1-2], and the trainer's
rendezvous connects to the first node by that name. On one host every node is 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

HOSTS_FILE = Path("/etc/hosts")
MARK = "# added by tools/localslurm"


def known_names(hosts_file: Path = HOSTS_FILE) -> set[str]:
    names: set[str] = set()
    for line in hosts_file.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        names.update(fields[1:])
    return names


def ensure_hosts(names: list[str], hosts_file: Path = HOSTS_FILE) -> list[str]:
    """Append `127.0.0.1 <names not yet listed>` to the hosts file; return the names added. The line stays
    after `stop` (another local cluster may use the same names); it only maps names to the loopback address."""
    missing = [n for n in names if n not in known_names(hosts_file)]
    if not missing:
        return []
    line = f"127.0.0.1 {' '.join(missing)} {MARK}\n"
    text = hosts_file.read_text()
    try:
        with open(hosts_file, "a") as f:
            f.write(line if not text or text.endswith("\n") else "\n" + line)
    except PermissionError as e:
        from tools.localslurm.cluster import LocalSlurmError

        raise LocalSlurmError(f"node names {missing} do not resolve and {hosts_file} is not writable. Fix: run "
                              f"`echo '{line.strip()}' | sudo tee -a {hosts_file}` once, then start again") from e
    return missing
