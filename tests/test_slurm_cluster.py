"""The private Slurm cluster fixture, through real daemons: batch jobs, submitit, cancellation, multi-task steps."""

from __future__ import annotations

import os
import sys
import time

import pytest

pytestmark = pytest.mark.slurm
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL"}


def test_sbatch_job_completes_in_accounting(slurm_cluster, tmp_path):
    out = slurm_cluster.slurm("sbatch", "--parsable", f"--output={tmp_path}/%j.out", "--wrap", "echo hello",
                              cwd=tmp_path)
    job_id = out.stdout.strip().split(";")[0]
    assert slurm_cluster.wait_state(job_id, TERMINAL, timeout=30) == "COMPLETED"
    assert (tmp_path / f"{job_id}.out").read_text().strip() == "hello"


def test_two_one_cpu_batch_jobs_run_at_once(slurm_cluster, tmp_path):
    # Each job waits until both have started: they finish only if the node runs them side by side (the default
    # memory per CPU keeps one job from taking the whole node).
    started = tmp_path / "started"
    started.mkdir()
    barrier = f"touch {started}/$SLURM_JOB_ID; until [ $(ls {started} | wc -l) -ge 2 ]; do sleep 0.1; done"
    ids = [slurm_cluster.slurm("sbatch", "--parsable", "-n", "1", "--time=1", "--output=/dev/null", "--wrap",
                               barrier).stdout.strip() for _ in range(2)]
    assert [slurm_cluster.wait_state(i, TERMINAL, timeout=45) for i in ids] == ["COMPLETED", "COMPLETED"]


def test_submitit_runs_a_function_and_returns_its_result(slurm_cluster, tmp_path):
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(timeout_min=2, slurm_partition=slurm_cluster.partition)

    def where(x):  # a local function: cloudpickle sends it by value, so the job need not import this module
        return x * 2, os.environ["SLURM_JOB_ID"], sys.executable

    job = executor.submit(where, 21)
    value, job_id, python = job.result()
    assert (value, job_id, python) == (42, job.job_id, sys.executable)
    # result() returns once the result file exists, a moment before the job leaves the queue.
    assert slurm_cluster.wait_state(job.job_id, TERMINAL, timeout=30) == "COMPLETED"


def test_scancel_shows_cancelled_in_sacct_and_submitit(slurm_cluster, tmp_path):
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(timeout_min=2, slurm_partition=slurm_cluster.partition)
    job = executor.submit(time.sleep, 300)
    squeue_state = ("squeue", "-h", "-o", "%T", "-j", job.job_id)
    deadline = time.monotonic() + 30  # squeue sees RUNNING seconds before sacct does
    while slurm_cluster.slurm(*squeue_state).stdout.strip() != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    slurm_cluster.slurm("scancel", job.job_id)
    assert slurm_cluster.wait_state(job.job_id, TERMINAL, timeout=30) == "CANCELLED"
    assert job.done(force_check=True)
    assert job.state.startswith("CANCELLED")
    # Leave the node free for the next test: the job holds its CPU until KillWait has passed.
    deadline = time.monotonic() + 30
    while slurm_cluster.slurm(*squeue_state).stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.2)


def test_allocation_with_two_tasks_runs_them_together(slurm_cluster, tmp_path):
    # Both tasks must be alive at once to pass the barrier; `timeout` turns a serialised run into a failure.
    step = f"touch {tmp_path}/$SLURM_PROCID; until [ -e {tmp_path}/0 ] && [ -e {tmp_path}/1 ]; do sleep 0.1; done;" \
           " echo $SLURM_PROCID $(hostname)"
    out = slurm_cluster.slurm("salloc", "-n", "2", "timeout", "30", "srun", "-n", "2", "bash", "-c", step, timeout=60)
    lines = sorted(out.stdout.split("\n")[:-1])
    assert [ln.split()[0] for ln in lines] == ["0", "1"]
    assert {ln.split()[1] for ln in lines} == {slurm_cluster.host}
