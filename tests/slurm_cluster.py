"""A real single-node Slurm cluster (munged, MariaDB, slurmdbd, slurmctld, slurmd) under one folder, for tests.

Config, munge key, state, MariaDB data dir and logs live under ``root``; sockets, pid files and slurmd's spool in a
short folder in /tmp (linked as root/run) while it runs. Nothing in /etc is read or written. Daemons run as root
with private sockets and free ports, so two sessions on one machine do not clash. Accounting (slurmdbd + MariaDB) is
what lets ``sacct`` and therefore submitit see job states. Loaded as a pytest plugin
(``pytest_plugins = ["tests.slurm_cluster"]``) it provides the ``slurm_cluster`` fixture.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SLURM_BINARIES = ("slurmctld", "slurmd", "slurmdbd", "sbatch", "salloc", "srun", "scancel", "squeue", "sinfo",
                  "sacct", "sacctmgr", "munged")
# MariaDB renamed its programs; Debian ships both names, other systems may have only one.
MARIADB_BINARIES = (("mariadbd", "mysqld"), ("mariadb-install-db", "mysql_install_db"), ("mariadb", "mysql"))


def _which(name: str) -> str | None:
    # /usr/sbin is not on every PATH (e.g. a non-login shell), but the daemons live there.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _which_any(names: tuple[str, ...]) -> str | None:
    return next((p for p in map(_which, names) if p), None)


def cluster_unavailable_reason() -> str | None:
    """None when a cluster can be started here, else a one-line reason (for pytest.skip)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a private Slurm cluster needs root (its daemons run as root)"
    missing = [n for n in SLURM_BINARIES if not _which(n)]
    missing += [names[0] for names in MARIADB_BINARIES if not _which_any(names)]
    if missing:
        return f"Slurm/munge/MariaDB not installed ({', '.join(missing)} missing): run scripts/setup_slurm.sh"
    return None


def _free_ports(n: int) -> list[int]:
    # Hold all sockets until every port is chosen, so the n ports are distinct.
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _alive(pid: int) -> bool:
    # A zombie counts as gone: a container's PID 1 may reap orphaned daemons late, or never.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class SlurmCluster:
    """Start/stop a private Slurm cluster under ``root``; a context manager too."""

    def __init__(self, root: Path | str, name: str = "testcluster", partition: str = "debug"):
        self.root = Path(root).resolve()
        self.name = name
        self.partition = partition
        self.conf = self.root / "etc" / "slurm.conf"
        self.dbd_conf = self.root / "etc" / "slurmdbd.conf"
        self.logs = self.root / "log"
        self.host = socket.gethostname().split(".")[0]
        self.run: Path | None = None  # sockets, pid files, slurmd spool: a short path in /tmp while running
        self._mysqld: subprocess.Popen | None = None

    # ---- public API -------------------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment for Slurm clients and for a process that submits through submitit."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        self._prepare()
        self._start_munged(deadline)
        self._start_mariadb(deadline)
        self._start_slurmdbd(deadline)
        self._start_slurmctld(deadline)
        self._start_slurmd(deadline)

    def stop(self) -> None:
        """Cancel every job, then stop the daemons by their pid files (newest first) and wait for them to exit."""
        if self.run is None:
            return
        if self._daemon_pid("slurmctld", ("slurmctld",)):
            # A hung client must not keep the daemons alive: stopping them matters more.
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._cancel_all(timeout=30)
        for pidname, binaries in (("slurmd", ("slurmd",)), ("slurmctld", ("slurmctld",)), ("slurmdbd", ("slurmdbd",)),
                                  ("mariadb", MARIADB_BINARIES[0]), ("munged", ("munged",))):
            self._kill(pidname, binaries)
        if self._mysqld is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._mysqld.wait(timeout=5)
            self._mysqld = None
        shutil.rmtree(self.run, ignore_errors=True)
        self.run = None
        with contextlib.suppress(OSError):
            (self.root / "run").unlink()

    def wait_state(self, job_id: str, states: set[str], timeout: float) -> str:
        """Poll sacct (it lags squeue by about a second) until the job is in one of ``states``; return that state."""
        deadline = time.monotonic() + timeout
        state = ""
        while True:
            out = self.slurm("sacct", "-n", "-X", "-P", "-o", "State", "-j", str(job_id), check=False).stdout
            state = out.split()[0] if out.split() else ""  # "CANCELLED by 0" -> "CANCELLED"
            if state in states:
                return state
            if time.monotonic() > deadline:
                squeue = self.slurm("squeue", "-a", check=False).stdout
                raise TimeoutError(f"job {job_id}: sacct state {state!r} not in {sorted(states)} after {timeout} s;"
                                   f" squeue:\n{squeue}")
            time.sleep(0.2)

    def slurm(self, *cmd: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster."""
        out = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env(), timeout=timeout, **kw)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip() or out.stdout}")
        return out

    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- set-up -----------------------------------------------------------------------------------------------
    def _prepare(self) -> None:
        for sub in ("etc", "log", "munge", "state", "mysql"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        # Sockets, pid files and slurmd's spool (slurmstepd's sockets) go to a short folder in /tmp: a deep root
        # would overflow AF_UNIX paths (108 bytes), and munged wants its socket folder and all above it searchable
        # by everyone, which pytest's 0700 tmp dirs are not. root/run links to it, for debugging.
        self.run = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
        self.run.chmod(0o755)
        link = self.root / "run"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(self.run)
        self.munge_socket = self.run / "munge.sock"
        self.mysql_socket = self.run / "mysqld.sock"
        self.ctld_port, self.slurmd_port, self.dbd_port = _free_ports(3)
        self.db_pass = secrets.token_hex(8)
        self._write_confs()

    def _node_line(self) -> str:
        # The node's real shape (a mismatch drains the node); memory a bit below what slurmd sees.
        out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True,
                             env={**os.environ, "SLURM_CONF": "/dev/null"}).stdout
        shape = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0]))
        self.cpus = int(shape["CPUs"])
        self.mem_mb = int(int(shape["RealMemory"]) * 0.9)
        keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
        parts = " ".join(f"{k}={shape[k]}" for k in keys if k in shape)
        return (f"NodeName={self.host} NodeAddr=127.0.0.1 NodeHostname={self.host} {parts} "
                f"RealMemory={self.mem_mb} State=UNKNOWN")

    def _write_confs(self) -> None:
        node = self._node_line()
        # Without DefMemPerCPU a job gets the whole node's memory and jobs serialise.
        def_mem = min(2000, self.mem_mb // self.cpus)
        r, log, run = self.root, self.logs, self.run
        self.conf.write_text(f"""\
ClusterName={self.name}
SlurmctldHost={self.host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
AuthType=auth/munge
# cred_expire also holds a requeued job back before it may start again (default 120 s); 10 s keeps the
# pre-emption test short on this one-node cluster.
AuthInfo=socket={self.munge_socket},cred_expire=10
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={run}/spool
SlurmctldPidFile={run}/slurmctld.pid
SlurmdPidFile={run}/slurmd.pid
SlurmctldLogFile={log}/slurmctld.log
SlurmdLogFile={log}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Container-safe: no cgroups, no systemd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
DefMemPerCPU={def_mem}
ReturnToService=2
# Seconds from SIGTERM to SIGKILL on scancel; submitit's jobs ignore SIGTERM, so this is how long they linger.
KillWait=5
InactiveLimit=0
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
MailProg=/bin/true
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.dbd_port}
# The munge socket for connections to slurmdbd (AuthInfo alone is not used there).
AccountingStoragePass={self.munge_socket}
{node}
PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        # slurmdbd refuses a config readable by others; it finds it beside slurm.conf.
        self.dbd_conf.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost={self.host}
DbdAddr=127.0.0.1
DbdPort={self.dbd_port}
SlurmUser=root
PidFile={run}/slurmdbd.pid
LogFile={log}/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass={self.db_pass}
StorageLoc=slurm_acct_db
""")
        self.dbd_conf.chmod(0o600)

    # ---- daemons ----------------------------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        """Run a self-daemonising program; its output (before it opens its own log) goes to log/<name>.out."""
        with open(self.logs / f"{name}.out", "ab") as out:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env or self.env(),
                                  start_new_session=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed to start ({proc.returncode}): {self._tail(name)}")

    def _tail(self, name: str, n: int = 15) -> str:
        texts = []
        for f in (self.logs / f"{name}.out", self.logs / f"{name}.log"):
            if f.exists():
                texts += f.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(texts)

    def _wait(self, what: str, ready, deadline: float, log: str) -> None:
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready in time; log/{log}:\n{self._tail(log)}")
            time.sleep(0.1)

    def _start_munged(self, deadline: float) -> None:
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        self._spawn("munged", [_which("munged"), f"--key-file={key}", f"--socket={self.munge_socket}",
                               f"--pid-file={self.run}/munged.pid", f"--log-file={self.logs}/munged.log",
                               f"--seed-file={self.root}/munge/munged.seed"])
        self._wait("munged", lambda: self.munge_socket.exists(), deadline, "munged")

    def _mysql(self, sql: str) -> subprocess.CompletedProcess:
        client = _which_any(MARIADB_BINARIES[2])
        return subprocess.run([client, "--no-defaults", f"--socket={self.mysql_socket}", "-uroot", "-e", sql],
                              capture_output=True, text=True, timeout=30)

    def _start_mariadb(self, deadline: float) -> None:
        data = self.root / "mysql" / "data"
        # Small InnoDB files: a 22 MB data dir instead of 114 MB, and a faster cold start.
        tuning = ["--innodb-buffer-pool-size=64M", "--innodb-log-file-size=8M", "--skip-log-bin"]
        if not (data / "mysql").exists():
            out = subprocess.run([_which_any(MARIADB_BINARIES[1]), "--no-defaults", f"--datadir={data}",
                                  "--user=root", "--auth-root-authentication-method=socket", "--skip-test-db",
                                  *tuning], capture_output=True, text=True, timeout=120)
            (self.logs / "mariadb-install.log").write_text(out.stdout + out.stderr)
            if out.returncode != 0:
                raise RuntimeError(f"mariadb-install-db failed: {out.stderr[-2000:]}")
        # No TCP at all: slurmdbd reaches it through the socket (MYSQL_UNIX_PORT, see _start_slurmdbd).
        cmd = [_which_any(MARIADB_BINARIES[0]), "--no-defaults", f"--datadir={data}", "--user=root",
               "--skip-networking", f"--socket={self.mysql_socket}", f"--pid-file={self.run}/mariadb.pid",
               f"--log-error={self.logs}/mariadb.log", *tuning]
        with open(self.logs / "mariadb.out", "ab") as out:
            self._mysqld = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                            start_new_session=True)

        def ready() -> bool:
            if self._mysqld.poll() is not None:
                raise RuntimeError(f"mariadbd exited ({self._mysqld.returncode}): {self._tail('mariadb')}")
            return self.mysql_socket.exists() and self._mysql("SELECT 1").returncode == 0

        self._wait("MariaDB", ready, deadline, "mariadb")
        out = self._mysql(
            "CREATE DATABASE IF NOT EXISTS slurm_acct_db;"
            f"CREATE OR REPLACE USER 'slurm'@'localhost' IDENTIFIED BY '{self.db_pass}';"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';")
        if out.returncode != 0:
            raise RuntimeError(f"creating the accounting database failed: {out.stderr}")

    def _start_slurmdbd(self, deadline: float) -> None:
        # slurmdbd connects to StorageHost=localhost with no socket path, so the MariaDB client library takes it
        # from MYSQL_UNIX_PORT.
        self._spawn("slurmdbd", [_which("slurmdbd")], env={**self.env(), "MYSQL_UNIX_PORT": str(self.mysql_socket)})
        self._wait("slurmdbd", lambda: self.slurm("sacctmgr", "-n", "list", "cluster", check=False,
                                                  timeout=15).returncode == 0, deadline, "slurmdbd")
        # Register the cluster before slurmctld starts, so its first registration has a home.
        if self.name not in self.slurm("sacctmgr", "-n", "-P", "list", "cluster", "format=Cluster").stdout.split():
            self.slurm("sacctmgr", "-i", "add", "cluster", self.name)

    def _start_slurmctld(self, deadline: float) -> None:
        self._spawn("slurmctld", [_which("slurmctld")])
        self._wait("slurmctld", lambda: self.slurm("scontrol", "ping", check=False, timeout=10).returncode == 0,
                   deadline, "slurmctld")

    def _start_slurmd(self, deadline: float) -> None:
        self._spawn("slurmd", [_which("slurmd")])

        def ready() -> bool:
            state = self.slurm("sinfo", "-h", "-n", self.host, "-o", "%T", check=False, timeout=10).stdout.strip()
            if state.startswith(("drain", "down")) and time.monotonic() > deadline - 1:
                reason = self.slurm("sinfo", "-R", check=False).stdout
                raise RuntimeError(f"node {self.host} is {state}: {reason}")
            return state == "idle" and self.slurm("sacct", "-n", "-X", check=False, timeout=10).returncode == 0

        self._wait("slurmd (node idle)", ready, deadline, "slurmd")

    # ---- tear-down --------------------------------------------------------------------------------------------
    def _cancel_all(self, timeout: float) -> None:
        ids = self.slurm("squeue", "-h", "-o", "%i", check=False).stdout.split()
        if not ids:
            return
        self.slurm("scancel", *ids, check=False)
        deadline = time.monotonic() + timeout
        while self.slurm("squeue", "-h", "-o", "%i", check=False).stdout.split() and time.monotonic() < deadline:
            time.sleep(0.2)

    def _daemon_pid(self, pidname: str, binaries: tuple[str, ...]) -> int | None:
        """The pid in run/<pidname>.pid if that process is alive and runs one of ``binaries`` (not a recycled pid)."""
        try:
            pid = int((self.run / f"{pidname}.pid").read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) and Path(cmdline).name.startswith(binaries) else None

    def _kill(self, pidname: str, binaries: tuple[str, ...], grace: float = 15) -> None:
        pid = self._daemon_pid(pidname, binaries)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            if self._mysqld is not None and self._mysqld.pid == pid:
                self._mysqld.poll()  # reap our own child
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running cluster for the whole session; SLURM_CONF is exported while it is up (submitit reads os.environ)."""
    reason = cluster_unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    old = os.environ.get("SLURM_CONF")
    try:
        cluster.start()
        os.environ["SLURM_CONF"] = str(cluster.conf)
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
