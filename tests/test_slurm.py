"""`benchmark run --launcher submitit` and `--launcher slurm` against a real single-node Slurm cluster
(tests/slurm_cluster.py: slurmctld, slurmd, slurmdbd + MariaDB, munge, started by the tests as root).

Cheap tasks (the Fashion-MNIST probe and two K12 linear probes on mini data) keep each job to seconds; every job is
a real sbatch array element running the suite's worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, db_runs, run_cli

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
TASKS = "fashion_mnist_probe,k12_cifar10,k12_dtd"
FAST = {"MIMBENCH_SLURM_POLL_S": "0.5"}
RUNS = "task, seed, status, error, extra"


def _start(*args) -> subprocess.Popen:
    """The CLI in the background (its own session, so a test can kill it like a lost login shell)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **FAST}
    return subprocess.Popen([sys.executable, "-m", "benchmark.cli", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _records(wd: Path) -> dict[str, str]:
    return {p.parent.parent.name: json.loads(p.read_text())["job_id"] for p in wd.rglob("slurm_job.json")}


def _wait_records(wd: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while len(found := _records(wd)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"only {found} submitted"
        time.sleep(0.2)
    return found


@pytest.fixture(scope="module")
def suite_on_slurm(slurm_cluster, tiny_vit_ckpt, tmp_path_factory):
    wd = tmp_path_factory.mktemp("slurm_suite")
    out = run_cli("run", "--ckpt", tiny_vit_ckpt, "--tasks", TASKS, "--data", "mini", "--work-dir", wd / "wd",
                  "--db", wd / "r.db", "--launcher", "submitit", "--partition", slurm_cluster.partition,
                  "--timeout-min", "5", "--cpus-per-task", "1", env=FAST, timeout=600)
    return wd, out


def test_a_suite_submitted_as_a_job_array_lands_in_the_db_and_leaderboard(suite_on_slurm):
    wd, out = suite_on_slurm
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted 3 Slurm job(s)" in out.stderr and "RUNNING" in out.stderr
    runs = db_runs(wd / "r.db", RUNS)
    assert sorted(runs.task) == sorted(TASKS.split(",")) and set(runs.status) == {"ok"}
    for extra in map(json.loads, runs.extra):
        assert "_" in extra["slurm_job_id"] and extra["slurm_node"] and extra["slurm_requeues"] == 0
    ids = {json.loads(e)["slurm_job_id"].split("_")[0] for e in runs.extra}
    assert len(ids) == 1  # one array
    board = run_cli("leaderboard", "--db", wd / "r.db", "--format", "csv", "--out", wd / "lb.csv")
    assert board.returncode == 0
    columns = {c.split()[0] for c in pd.read_csv(wd / "lb.csv").columns}  # "k12_dtd/top1 ↑"
    assert {"fashion_mnist_probe/top1", "k12_cifar10/top1", "k12_dtd/top1"} <= columns
    log = next((wd / "wd").rglob("k12_dtd/*/worker.log")).read_text()
    assert "in Slurm job" in log  # the job's own output is in the run dir, as for a local run


def test_a_cancelled_job_is_recorded_with_its_slurm_state_and_the_suite_goes_on(slurm_cluster, tiny_vit_ckpt,
                                                                                 tmp_path):
    # one job at a time: the second is still pending when it is cancelled
    proc = _start("run", "--ckpt", tiny_vit_ckpt, "--tasks", "fashion_mnist_probe,k12_dtd", "--data", "mini",
                  "--work-dir", tmp_path / "wd", "--db", tmp_path / "r.db", "--launcher", "submitit",
                  "--max-parallel", "1", "--timeout-min", "5")
    records = _wait_records(tmp_path / "wd", 2, proc)
    slurm_cluster.slurm("scancel", records["k12_dtd"])
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    runs = db_runs(tmp_path / "r.db", RUNS).set_index("task")
    assert runs.loc["fashion_mnist_probe", "status"] == "ok"
    assert runs.loc["k12_dtd", "status"] == "failed" and "cancelled" in runs.loc["k12_dtd", "error"]
    assert json.loads(runs.loc["k12_dtd", "extra"])["slurm_state"] == "CANCELLED"
    assert "failed: k12_dtd seed 0: Slurm job cancelled" in stdout


def test_a_killed_submitter_leaves_jobs_running_and_a_rerun_attaches_without_resubmitting(slurm_cluster,
                                                                                           tiny_vit_ckpt, tmp_path):
    two = "fashion_mnist_probe,k12_dtd"
    args = ["run", "--ckpt", tiny_vit_ckpt, "--tasks", two, "--data", "mini", "--work-dir", tmp_path / "wd",
            "--db", tmp_path / "r.db", "--launcher", "submitit", "--max-parallel", "1", "--timeout-min", "5"]
    proc = _start(*args)
    records = _wait_records(tmp_path / "wd", 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # a lost login session: no clean-up runs
    proc.wait()
    states = {t: slurm_cluster.slurm("sacct", "-n", "-X", "-P", "-o", "State", "-j", j).stdout.strip()
              for t, j in records.items()}
    assert any(s in ("PENDING", "RUNNING", "") for s in states.values()), states  # still queued after the kill
    out = run_cli(*args, env=FAST, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "Slurm job(s)" not in out.stderr and out.stderr.count("attached to Slurm job") + \
        out.stderr.count("stored from the finished Slurm job") == 2, out.stderr
    assert _records(tmp_path / "wd") == records  # nothing was submitted again
    runs = db_runs(tmp_path / "r.db", RUNS)
    assert sorted(runs.task) == sorted(two.split(",")) and set(runs.status) == {"ok"}


def test_collect_stores_what_jobs_finished_while_no_submitter_ran(slurm_cluster, tiny_vit_ckpt, tmp_path):
    proc = _start("run", "--ckpt", tiny_vit_ckpt, "--tasks", "fashion_mnist_probe", "--data", "mini",
                  "--work-dir", tmp_path / "wd", "--db", tmp_path / "r.db", "--launcher", "submitit",
                  "--timeout-min", "5")
    records = _wait_records(tmp_path / "wd", 1, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for job_id in records.values():
        assert slurm_cluster.wait_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=240) == "COMPLETED"
    out = run_cli("collect", "--work-dir", tmp_path / "wd", "--db", tmp_path / "r.db")
    assert out.returncode == 0, out.stderr
    runs = db_runs(tmp_path / "r.db", RUNS)
    ok = runs[runs.status == "ok"]
    assert sorted(ok.task) == ["fashion_mnist_probe"]
    assert {json.loads(e)["slurm_job_id"] for e in ok.extra} == set(records.values())


def test_ddp_under_srun_inside_salloc(slurm_cluster, tiny_vit_ckpt, tmp_path):
    """--launcher slurm inside an allocation: two Slurm tasks form the gloo process group."""
    cmd = ["salloc", "-n", "2", "--time=5", sys.executable, "-m", "benchmark.cli", "run", "--ckpt", tiny_vit_ckpt,
           "--tasks", "k12_dtd", "--preset", "ci_finetune", "--subset", "40", "--set", "iters=4", "--data", "mini",
           "--launcher",
           "slurm", "--work-dir", tmp_path / "wd", "--db", tmp_path / "r.db"]
    out = slurm_cluster.slurm(*map(str, cmd), check=False, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    log = next((tmp_path / "wd").glob("*/k12_dtd/*/worker.log")).read_text()
    assert "MMDistributedDataParallel" in log and "world size 2" in log
    assert set(db_runs(tmp_path / "r.db", RUNS).status) == {"ok"}


@pytest.mark.parametrize("case", ["no_slurm", "unknown_partition", "option_without_submitit", "bad_conf", "refused"])
def test_bad_slurm_input_is_one_line_and_exit_2(slurm_cluster, tiny_vit_ckpt, tmp_path, case):
    args = ["run", "--ckpt", tiny_vit_ckpt, "--tasks", "fashion_mnist_probe", "--data", "mini", "--work-dir",
            tmp_path / "wd", "--db", tmp_path / "r.db", "--launcher", "submitit"]
    env = dict(FAST)
    expect = {"no_slurm": "Slurm not found: sbatch / sacct are not on PATH",
              "unknown_partition": "unknown Slurm partition 'gpu-huge' (this cluster has: debug)",
              "option_without_submitit": "--partition only apply to Slurm jobs",
              "bad_conf": "Slurm does not answer",
              "refused": "Slurm refused the job array, nothing was submitted"}[case]
    if case == "no_slurm":
        env["PATH"] = str(Path(sys.executable).parent)
    elif case == "unknown_partition":
        args += ["--partition", "gpu-huge"]
    elif case == "option_without_submitit":
        args = args[:-2] + ["--partition", "debug"]
    elif case == "refused":
        args += ["--mem", "100000G"]  # more than the node has: sbatch refuses the array
    else:
        env["SLURM_CONF"] = str(tmp_path / "missing.conf")
    out = run_cli(*args, env=env)
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1 and expect in errors[0], out.stderr
    assert not (tmp_path / "wd").exists() or not _records(tmp_path / "wd")  # nothing submitted


def test_a_preempted_job_is_requeued_resumes_from_its_checkpoint_and_counts_the_requeue(slurm_cluster,
                                                                                      tiny_vit_ckpt, tmp_path):
    """Pre-emption as Slurm signals it (SIGTERM, then submitit's USR2): submitit requeues the job, the worker resumes
    from its last mmengine checkpoint in the same run dir, and the run records one requeue."""
    proc = _start("run", "--ckpt", tiny_vit_ckpt, "--tasks", "k12_dtd", "--preset", "ci_finetune", "--subset", "40",
                  "--set", "iters=120", "--set", "checkpoint_interval=10", "--data", "mini", "--work-dir",
                  tmp_path / "wd", "--db", tmp_path / "r.db", "--launcher", "submitit", "--timeout-min", "10")
    job_id = _wait_records(tmp_path / "wd", 1, proc)["k12_dtd"]
    deadline = time.monotonic() + 240
    while not list((tmp_path / "wd").rglob("k12_dtd/*/runner/iter_*.pth")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    slurm_cluster.slurm("scancel", "--signal", "SIGTERM", job_id)
    slurm_cluster.slurm("scancel", "--signal", "USR2", job_id)
    stdout, stderr = proc.communicate(timeout=480)
    assert proc.returncode == 0, stderr
    runs = db_runs(tmp_path / "r.db", RUNS)
    assert list(runs.status) == ["ok"] and json.loads(runs.extra[0])["slurm_requeues"] == 1, stderr
    log = next((tmp_path / "wd").rglob("k12_dtd/*/worker.log")).read_text()
    assert log.count("in Slurm job") == 2 and "requeues: 1" in log and "resumed" in log.lower(), log[-3000:]
