"""A throwaway single-node SLURM (munged, slurmctld, slurmd as root) in a temporary folder,
for tests/test_slurm.py and for trying `ltlab batch --executor slurm` by hand:

    python tests/slurm_cluster.py /tmp/slurm     # prints `export SLURM_CONF=...`; Ctrl-C stops it
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")


def unavailable() -> str | None:
    """Why a cluster cannot be started here, or None."""
    missing = [d for d in DAEMONS if not shutil.which(d) and not Path("/usr/sbin", d).exists()]
    if missing:
        return f"SLURM/munge not installed ({', '.join(missing)} missing; apt-get install slurm-wlm)"
    if os.geteuid() != 0:
        return "starting slurmd and slurmctld needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf(d: Path, host: str, cpus: int) -> str:
    return f"""ClusterName=ltlabtest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge.sock
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=3600
SchedulerParameters=sched_interval=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@contextlib.contextmanager
def single_node_slurm(d: Path, cpus: int | None = None, timeout: float = 60.0):
    """Start the daemons with a generated slurm.conf in `d`; yields the environment that
    points SLURM's commands at it; stops the daemons (by their pid files) on exit."""
    d = Path(d)
    for sub in ("state", "spool"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    (d / "slurm.conf").write_text(_conf(d, host, cpus or os.cpu_count() or 1))
    env = {**os.environ, "SLURM_CONF": str(d / "slurm.conf")}
    pids = []
    try:
        subprocess.run([_sbin("mungekey"), "--create", "--keyfile", str(d / "munge.key"), "--force"], check=True,
                       capture_output=True)
        os.chmod(d / "munge.key", 0o400)
        subprocess.run([_sbin("munged"), "--force", "--key-file", str(d / "munge.key"), "--socket",
                        str(d / "munge.sock"), "--pid-file", str(d / "munged.pid"), "--log-file", str(d / "munged.log"),
                        "--seed-file", str(d / "munged.seed")], check=True, capture_output=True)
        pids.append(d / "munged.pid")
        subprocess.run([_sbin("slurmctld"), "-c", "-i"], env=env, check=True, capture_output=True)
        pids.append(d / "slurmctld.pid")
        subprocess.run([_sbin("slurmd"), "-N", host], env=env, check=True, capture_output=True)
        pids.append(d / "slurmd.pid")
        deadline = time.time() + timeout
        while True:   # the node must register and be idle before jobs can start
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout.strip()
            if out in ("idle", "mixed", "allocated"):
                break
            if time.time() > deadline:
                raise RuntimeError(f"the SLURM node did not come up (sinfo: {out!r}); see {d}/slurmctld.log, slurmd.log")
            time.sleep(1)
        yield env
    finally:
        if len(pids) == 3:   # no job step may outlive its daemons
            subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True)
            time.sleep(1)
        for pidfile in reversed(pids):
            _stop(pidfile)


def _alive(pid: int) -> bool:
    """Running, not a zombie (a daemon reparented to a PID 1 that does not reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stop(pidfile: Path, wait: float = 15.0):
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().split()[0])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)
        deadline = time.time() + wait
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, 9)


if __name__ == "__main__":
    reason = unavailable()
    if reason:
        sys.exit(reason)
    with single_node_slurm(Path(sys.argv[1])) as env:
        print(f"export SLURM_CONF={env['SLURM_CONF']}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
