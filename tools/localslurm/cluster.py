"""Start and stop a real Slurm cluster on this host: munged, slurmctld and one `slurmd -N nodeX` per node.

Everything lives in the cluster's own directory (ClusterSpec.dir): slurm.conf, a fresh munge key and socket,
controller state, node spools, logs, and `run/pids.json`, the processes this module started. `stop` cancels the
cluster's jobs and then ends exactly those processes, by PID, after checking that each PID still runs the
command it was started with. Clients reach the cluster through SLURM_CONF (see `env()`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tools.localslurm.config import ClusterSpec, render_slurm_conf
from tools.localslurm.hosts import ensure_hosts

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
INSTALL_HINT = ("install Slurm and munge: `sudo apt-get install slurm-wlm munge` (Debian/Ubuntu; the daemons are "
                "in /usr/sbin, so keep /usr/sbin on PATH)")


class LocalSlurmError(RuntimeError):
    """The local cluster cannot start or be reached. The message names the problem and the fix."""


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"):  # daemons are in sbin, often not on a user's PATH
        if os.access(f"{d}/{name}", os.X_OK):
            return f"{d}/{name}"
    return None


def missing_binaries() -> list[str]:
    return [b for b in DAEMONS + CLIENTS if find_binary(b) is None]


def free_port_block(count: int, start: int = 20000, stop: int = 60000) -> int:
    """First port p >= start such that p .. p+count-1 are all free on 127.0.0.1 (seeded by the PID so that
    parallel test sessions do not race for the same block)."""
    base = start + (os.getpid() * 37) % (stop - start - count)
    for offset in range(0, stop - start, count + 1):
        p = start + (base - start + offset) % (stop - start - count)
        if all(_port_free(q) for q in range(p, p + count)):
            return p
    raise LocalSlurmError(f"no block of {count} free ports in {start}..{stop}")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _exists(pid: int) -> bool:
    """The process runs (a child that exited stays a zombie until reaped: that counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _own_child(pid: int) -> bool:
    """A child of this process that has not been reaped (it may not have exec'd its daemon yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]) == os.getpid() and fields[0] != "Z"


@dataclass
class LocalSlurm:
    spec: ClusterSpec

    # ------------------------------------------------------------------------------------------------------
    # paths and environment

    @property
    def dir(self) -> Path:
        return self.spec.dir.resolve()

    @property
    def pids_file(self) -> Path:
        return self.dir / "run" / "pids.json"

    def env(self) -> dict[str, str]:
        """What a client needs: SLURM_CONF, and the sbin directory on PATH for scontrol's helpers."""
        path = os.environ.get("PATH", "")
        for b in ("sbatch", "slurmctld"):
            d = str(Path(find_binary(b) or "/usr/bin/x").parent)
            if d not in path.split(os.pathsep):
                path = f"{path}{os.pathsep}{d}" if path else d
        return {"SLURM_CONF": str(self.spec.conf_path.resolve()), "PATH": path}

    def run_client(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env()}
        proc = subprocess.run([find_binary(args[0]) or args[0], *args[1:]], env=env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise LocalSlurmError(f"`{' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    # ------------------------------------------------------------------------------------------------------
    # processes

    def _started(self) -> dict[str, dict]:
        if not self.pids_file.exists():
            return {}
        return json.loads(self.pids_file.read_text())

    @staticmethod
    def _alive(entry: dict) -> bool:
        """The PID runs and still is the process we started (same executable and arguments)."""
        try:
            cmdline = Path(f"/proc/{entry['pid']}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return [c.decode() for c in cmdline if c] == entry["argv"]

    def running(self) -> bool:
        started = self._started()
        return bool(started) and all(self._alive(e) for e in started.values())

    def _spawn(self, name: str, argv: list[str], started: dict) -> None:
        log = open(self.dir / "log" / f"{name}.out", "ab")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, **self.env()}, close_fds=True)
        log.close()
        started[name] = {"pid": proc.pid, "argv": argv}
        self.pids_file.write_text(json.dumps(started, indent=1))

    # ------------------------------------------------------------------------------------------------------
    # start / stop

    def start(self, timeout: float = 60) -> None:
        missing = missing_binaries()
        if missing:
            raise LocalSlurmError(f"Slurm is not installed here (missing: {', '.join(missing)}). Fix: "
                                  + INSTALL_HINT)
        if self.running():
            return
        if self._started():  # a previous cluster in this directory died: end what is left of it first
            self.stop()
        busy = [p for p in range(self.spec.port, self.spec.port + self.spec.nodes + 1) if not _port_free(p)]
        if busy:
            raise LocalSlurmError(f"ports {busy} are in use. Fix: choose another base port (--port), "
                                  f"or stop the cluster that uses them")
        ensure_hosts(self.spec.node_names)
        d = self.dir
        for sub in ("state", "spool"):  # a fresh cluster: no jobs or node state from an earlier one
            shutil.rmtree(d / sub, ignore_errors=True)
        for sub in ["state", "log", "run", "munge"] + [f"spool/{n}" for n in self.spec.node_names]:
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "munge", 0o755)  # munged requires the socket directory to be searchable by all
        key = d / "munge" / "munge.key"
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(128))
        self.spec.conf_path.write_text(render_slurm_conf(self.spec))
        (d / "plugstack.conf").write_text("")
        started: dict[str, dict] = {}
        m = d / "munge"
        self._spawn("munged", [find_binary("munged"), "-F", f"--socket={self.spec.munge_socket.resolve()}",
                               f"--key-file={key}", f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log",
                               f"--seed-file={m}/munged.seed"], started)
        self._wait(lambda: self.spec.munge_socket.exists(), 15, "munged did not create its socket", "munged")
        self._spawn("slurmctld", [find_binary("slurmctld"), "-D", "-f", str(self.spec.conf_path)], started)
        self._wait(lambda: self.run_client("sinfo", "-h", check=False, timeout=10).returncode == 0, timeout,
                   "slurmctld does not answer", "slurmctld")
        for node in self.spec.node_names:
            self._spawn(f"slurmd-{node}", [find_binary("slurmd"), "-D", "-N", node, "-f",
                                           str(self.spec.conf_path)], started)
        self._wait(self._all_idle, timeout, "the nodes did not come up idle", "slurmd-" + self.spec.node_names[0])

    def _all_idle(self) -> bool:
        proc = self.run_client("sinfo", "-h", "-N", "-o", "%N %T", check=False, timeout=10)
        states = dict(line.split() for line in proc.stdout.splitlines() if line.strip())
        return proc.returncode == 0 and all(states.get(n) == "idle" for n in self.spec.node_names)

    def _wait(self, ready, timeout: float, what: str, daemon: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            dead = [n for n, e in self._started().items() if not _exists(e["pid"])]
            if dead:
                break
            time.sleep(0.5)
        log = self.dir / "log" / f"{daemon}.out"
        if daemon == "munged" and not log.read_text(errors="replace").strip():
            log = self.dir / "munge" / "munged.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        self.stop()
        raise LocalSlurmError(f"{what} (after {timeout:.0f} s). Its log {log} ends with:\n{tail}\n"
                              f"Fix: see the log above; `python -m tools.localslurm stop` cleans up.")

    def stop(self, timeout: float = 30) -> None:
        started = self._started()
        if not started:
            return
        if "slurmctld" in started and self._alive(started["slurmctld"]):
            self._cancel_all_jobs(timeout)
        for name in reversed(list(started)):  # nodes, then the controller, then munged
            entry = started[name]
            if self._alive(entry) or _own_child(entry["pid"]):
                os.kill(entry["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(self._alive(e) for e in started.values()):
            time.sleep(0.2)
        for entry in started.values():
            if self._alive(entry) or _own_child(entry["pid"]):
                os.kill(entry["pid"], signal.SIGKILL)
            try:  # reap it when this process started it (in the same session), so no zombie stays behind
                os.waitpid(entry["pid"], 0)
            except ChildProcessError:
                pass
        self.pids_file.unlink(missing_ok=True)

    def _cancel_all_jobs(self, timeout: float) -> None:
        proc = self.run_client("squeue", "-h", "-o", "%A", check=False, timeout=10)
        jobs = proc.stdout.split()
        if not jobs:
            return
        self.run_client("scancel", *jobs, check=False, timeout=10)
        deadline = time.monotonic() + timeout  # let slurmstepd end the job steps before the slurmds go
        while time.monotonic() < deadline:
            left = self.run_client("squeue", "-h", "-t", "running,completing", "-o", "%A", check=False,
                                   timeout=10).stdout.split()
            if not left:
                return
            time.sleep(0.5)
