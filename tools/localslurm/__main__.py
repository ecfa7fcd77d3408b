"""Command line: start, stop, status and env of the local Slurm cluster (see tools/localslurm/__init__.py)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from tools.localslurm.cluster import LocalSlurm, LocalSlurmError
from tools.localslurm.config import ClusterSpec

REPO_ROOT = Path(__file__).resolve().parents[2]


def _cluster(args) -> LocalSlurm:
    d = Path(args.dir)
    saved = d / "spec.json"
    if args.command != "start" and saved.exists():  # stop/status/env use the shape the cluster started with
        return LocalSlurm(ClusterSpec(dir=d, **json.loads(saved.read_text())))
    return LocalSlurm(ClusterSpec(dir=d, nodes=args.nodes, cpus_per_node=args.cpus_per_node, port=args.port))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.localslurm", description=__doc__)
    p.add_argument("command", choices=["start", "stop", "status", "env"])
    p.add_argument("--dir", default=str(REPO_ROOT / ".localslurm"), help="config, state and logs [%(default)s]")
    p.add_argument("--nodes", type=int, default=2, help="number of slurmd nodes [%(default)s]")
    p.add_argument("--cpus-per-node", type=int, default=4, help="CPUs each node declares [%(default)s]")
    p.add_argument("--port", type=int, default=17817, help="slurmctld port; nodes use the next ones [%(default)s]")
    args = p.parse_args(argv)
    cluster = _cluster(args)
    try:
        if args.command == "start":
            cluster.start()
            s = cluster.spec
            (Path(args.dir) / "spec.json").write_text(json.dumps(
                {"nodes": s.nodes, "cpus_per_node": s.cpus_per_node, "port": s.port}))
            print(f"local Slurm cluster up: {s.nodes} nodes {s.nodelist} x {s.cpus_per_node} CPUs, "
                  f"state in {cluster.dir}", file=sys.stderr)
            where = "" if Path(args.dir).resolve() == (REPO_ROOT / ".localslurm") else f" --dir {args.dir}"
            print(f"use it with:  eval \"$(python -m tools.localslurm env{where})\"", file=sys.stderr)
        elif args.command == "stop":
            cluster.stop()
            print("local Slurm cluster stopped", file=sys.stderr)
        elif args.command == "status":
            if not cluster.running():
                print("not running")
                return 1
            print(cluster.run_client("sinfo", "-N", "-l").stdout, end="")
            print(cluster.run_client("squeue").stdout, end="")
        elif args.command == "env":
            print(f"export SLURM_CONF={shlex.quote(cluster.env()['SLURM_CONF'])}")
            print(f"export PATH={shlex.quote(cluster.env()['PATH'])}")
    except LocalSlurmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
