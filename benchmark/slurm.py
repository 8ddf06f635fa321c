"""`benchmark run --launcher submitit`: every (task, seed) still to do becomes one Slurm job (one job array per
command), submitted through submitit; this process watches the jobs and is the only writer of the results DB.

* Jobs run the same worker as a local run (``benchmark.worker``) in their run dir on the shared work dir: rank 0
  appends to ``worker.log`` and writes ``result.json``; the submitter stores each result in SQLite as its job ends,
  so SQLite is never written from the compute nodes (it must not be, over NFS).
* ``slurm_job.json`` in each run dir names its job. A re-run of the same command attaches to jobs still pending or
  running instead of submitting them again, stores results that finished while no submitter watched, and submits
  only what is left; ``--force`` cancels a live job and submits anew. Ctrl-C leaves the jobs running.
* Pre-emption and time limits: a job is a submitit ``Checkpointable``: Slurm's warning signal makes submitit requeue
  it, and the requeued worker resumes from its last mmengine checkpoint (the run dir is the same). The number of
  requeues, the job id and the node are stored with the run (``runs.extra``: ``slurm_requeues``, ``slurm_job_id``,
  ``slurm_node``).
* Multi-GPU: ``--nproc N`` Slurm tasks per node (one process per GPU), ``--nodes M``; the worker's process group is
  built from the SLURM_* variables (nccl on GPUs, gloo on CPUs).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BenchmarkError

# Slurm states of a job that is not over yet (sacct / squeue names)
LIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING", "RESIZING",
        "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD", "UNKNOWN", "PREEMPTED"}
REASONS = {"TIMEOUT": "Slurm time limit reached (raise --timeout-min)", "OUT_OF_MEMORY": "out of memory (raise --mem)",
           "NODE_FAIL": "node failure", "CANCELLED": "cancelled", "BOOT_FAIL": "node boot failure",
           "DEADLINE": "deadline reached", "FAILED": "failed"}
RECORD = "slurm_job.json"


@dataclass
class SlurmOptions:
    partition: str | None = None
    nodes: int = 1
    gpus_per_task: int = 0
    cpus_per_task: int | None = None
    mem: str | None = None  # Slurm syntax: 32G, 64000M
    timeout_min: int = 24 * 60
    slurm_opts: dict[str, str] = field(default_factory=dict)  # extra #SBATCH KEY=VALUE
    max_parallel: int = 256  # jobs of the array running at once
    poll_s: float = 5.0


def _client(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def preflight(sopts: SlurmOptions) -> None:
    """Slurm reachable, partition known: else one clear error before anything is submitted."""
    try:
        import submitit  # noqa: F401
    except ImportError as exc:
        raise BenchmarkError("submitit is not installed", "run `make setup` (it pins submitit)") from exc
    if shutil.which("sbatch") is None or shutil.which("sacct") is None:
        raise BenchmarkError("Slurm not found: sbatch / sacct are not on PATH",
                             "run on a login node of the cluster (or put Slurm's bin folder on PATH); without "
                             "Slurm use --launcher none")
    try:  # a missing or wrong slurm.conf makes sinfo retry for a minute: a login node answers in a second
        out = _client(["sinfo", "-h", "-o", "%P"], timeout=15)
    except subprocess.TimeoutExpired:
        out = subprocess.CompletedProcess(["sinfo"], 1, "", "no answer within 15 s")
    if out.returncode != 0:
        conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
        first = (out.stderr.strip().splitlines() or ["no answer"])[0]
        raise BenchmarkError(f"Slurm does not answer (sinfo: {first}; config {conf})",
                             "set SLURM_CONF to your cluster's slurm.conf, or check that slurmctld runs")
    partitions = [p.rstrip("*") for p in out.stdout.split()]
    if sopts.partition and sopts.partition not in partitions:
        raise BenchmarkError(f"unknown Slurm partition '{sopts.partition}' (this cluster has: "
                             f"{', '.join(partitions) or 'none'})", "pass one of them with --partition")


def job_state(job_id: str) -> str:
    """The job's state from sacct, '' when sacct does not know it (yet)."""
    out = _client(["sacct", "-n", "-X", "-P", "-o", "State", "-j", str(job_id)])
    words = out.stdout.split()
    return words[0] if words else ""


def states(job_ids: list[str]) -> dict[str, tuple[str, str, float]]:
    """{job id: (state, node list, elapsed seconds)} from sacct, else squeue; ``GONE`` for a job in neither.

    sacct lags squeue by about a second and does not list array elements that have not started; an element cancelled
    while pending never appears in sacct at all, so a job that squeue no longer shows either has ended without
    running (the caller confirms over a few polls, as sacct may lag a job that just finished)."""
    out = _client(["sacct", "-n", "-X", "-P", "-o", "JobID,State,NodeList,ElapsedRaw", "-j", ",".join(job_ids)])
    found: dict[str, tuple[str, str, float]] = {}
    for line in out.stdout.splitlines():
        if line.count("|") == 3:
            jid, state, nodes, elapsed = line.split("|")
            state = state.split()[0] if state else ""  # "CANCELLED by 0"
            found[jid] = (state, "" if nodes in ("None assigned", "(null)") else nodes, float(elapsed or 0))
    missing = [j for j in job_ids if j not in found]
    if missing:
        queue = _client(["squeue", "-h", "-a", "-r", "-o", "%i|%T|%N"])
        queued = {}
        for line in queue.stdout.splitlines():
            if line.count("|") == 2:
                jid, state, nodes = line.split("|")
                queued[jid] = (state, nodes, 0.0)
        for job_id in missing:
            found[job_id] = queued.get(job_id, ("GONE", "", 0.0)) if queue.returncode == 0 else ("", "", 0.0)
    return {j: found[j] for j in job_ids}


def _in_range(index: int, spec: str) -> bool:
    """``index`` in a Slurm array range list such as ``0-3,5,7-9%2``."""
    for part in spec.split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and int(lo) <= index <= int(hi or lo):
            return True
    return False


def live_record(run_dir: Path) -> dict | None:
    """The Slurm job recorded for ``run_dir`` if it is still pending or running."""
    try:
        record = json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None
    state = job_state(record["job_id"])
    if state in LIVE - {"UNKNOWN"} or (not state and time.time() - record.get("submitted_at", 0) < 60):
        return record  # sacct may not know a job submitted seconds ago
    return None


def cancel(job_id: str) -> None:
    _client(["scancel", str(job_id)])


class SlurmTask:
    """What a Slurm job runs (in each of its tasks): the suite's worker on one job file. Checkpointable: on
    pre-emption or at the time limit submitit requeues the same call, which resumes from the run dir."""

    def __call__(self, job_path: str) -> int:
        import submitit

        env = submitit.JobEnvironment()
        job = json.loads(Path(job_path).read_text())
        if not str(job["device"]).startswith("cuda"):
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        # one rendezvous port per job: two jobs on one node must not share one
        os.environ.setdefault("MASTER_PORT", str(20000 + int(str(env.job_id).split("_")[0]) % 20000))
        if env.global_rank == 0:  # rank 0 speaks in worker.log, as a local run's worker does
            with open(job["log"], "a") as log:
                log.write(f"===== attempt started {time.strftime('%Y-%m-%d %H:%M:%S')} in Slurm job {env.job_id} "
                          f"on {env.hostname} (requeues: {os.environ.get('SLURM_RESTART_COUNT', '0')}) =====\n")
            sys.stdout.flush()
            sys.stderr.flush()
            fd = os.open(job["log"], os.O_WRONLY | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        from benchmark.worker import main

        return main([job_path])

    def checkpoint(self, job_path: str) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmTask(), job_path)


def submit(jobs: list[dict], sopts: SlurmOptions, nproc: int, folder: Path) -> list[Any]:
    """All ``jobs`` as one job array; returns submitit's job objects in the same order (nothing is submitted when
    Slurm refuses the array)."""
    import submitit

    executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=3)
    params: dict[str, Any] = dict(nodes=int(sopts.nodes), ntasks_per_node=int(nproc), time=int(sopts.timeout_min),
                                  array_parallelism=int(sopts.max_parallel), job_name="benchmark",
                                  additional_parameters=dict(sopts.slurm_opts))
    if sopts.partition:
        params["partition"] = sopts.partition
    if sopts.gpus_per_task:
        params["gpus_per_task"] = int(sopts.gpus_per_task)
    if sopts.cpus_per_task:
        params["cpus_per_task"] = int(sopts.cpus_per_task)
    if sopts.mem:
        params["mem"] = str(sopts.mem)
    executor.update_parameters(**params)
    try:
        with executor.batch():
            handles = [executor.submit(SlurmTask(), job["job_path"]) for job in jobs]
    except Exception as exc:  # sbatch's refusal arrives as various submitit / subprocess errors
        text = str(exc).strip()
        lines = [ln.strip() for ln in text.splitlines() if "error" in ln.lower()] or text.splitlines() or [""]
        raise BenchmarkError(f"Slurm refused the job array, nothing was submitted: {lines[-1][:300]}",
                             "check --partition, --gpus-per-task, --mem, --timeout-min and --slurm-opt against "
                             "the cluster's limits (sinfo, scontrol show partition)") from exc
    return handles


def write_record(run_dir: Path, job_id: str, folder: Path) -> None:
    (run_dir / RECORD).write_text(json.dumps({"job_id": str(job_id), "folder": str(folder),
                                              "submitted_at": time.time()}) + "\n")


def failure_reason(state: str, log: Path) -> str:
    """Why a job ended without a result: the task's own last error line, else Slurm's state."""
    error = ""
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("error: "):
                error = line[len("error: "):].strip()
    slurm = REASONS.get(state, state.lower() or "ended without a result")
    if state in ("COMPLETED", "") and error:
        return error
    return f"Slurm job {slurm}" + (f"; last task error: {error}" if error else "")
