"""`benchmark run --jobs N`: tasks side by side on one machine, each its own worker process, with the same
bookkeeping (one DB row per result, Ctrl-C records the running ones as interrupted and stops their workers)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, make_ckpt, run_cli

PLUGINS = {"MIMBENCH_TASK_PATH": str(REPO / "tests" / "plugins")}


def _args(ckpt: Path, tmp_path: Path) -> list[str]:
    return ["run", "--ckpt", str(ckpt), "--tasks", "sleepy_task", "--seed", "0,1,2", "--jobs", "2", "--data", "mini",
            "--work-dir", str(tmp_path / "wd"), "--db", str(tmp_path / "r.db")]


def _runs(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT seed, status, error, started_at, finished_at FROM runs ORDER BY seed").fetchall()


def test_two_jobs_run_side_by_side_and_each_result_is_stored(tmp_path):
    ckpt = make_ckpt(tmp_path / "v.pth")
    out = run_cli(*_args(ckpt, tmp_path), env={**PLUGINS, "MIMBENCH_TEST_SLEEP_S": "3"})
    assert out.returncode == 0, out.stderr
    runs = _runs(tmp_path / "r.db")
    assert [(seed, status) for seed, status, *_ in runs] == [(0, "ok"), (1, "ok"), (2, "ok")]
    (_, _, _, start0, end0), (_, _, _, start1, end1), _ = runs
    assert start1 < end0 and start0 < end1  # seeds 0 and 1 overlapped in time
    assert "started sleepy_task seed 1" in out.stderr and "[3/3] sleepy_task seed" in out.stderr
    again = run_cli(*_args(ckpt, tmp_path), env=PLUGINS)
    assert again.returncode == 0 and again.stderr.count("skipped, ") == 3  # resume and skip work as before


def test_ctrl_c_stops_every_running_worker_and_records_them_interrupted(tmp_path):
    """Ctrl-C or SIGTERM (as `kill` and Slurm send it) stop both running workers; the third never starts."""
    ckpt = make_ckpt(tmp_path / "v.pth")
    env = {**os.environ, **PLUGINS, "MIMBENCH_TEST_SLEEP_S": "120", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "benchmark.cli", *_args(ckpt, tmp_path)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(pids := list((tmp_path / "wd").rglob("pid"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    # SIGTERM takes Ctrl-C's path (the CLI turns it into KeyboardInterrupt); SIGINT itself would be ignored when
    # the test run was started in the background by a non-interactive shell
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted: finished results are saved" in stderr, stderr
    assert [(seed, status, error) for seed, status, error, *_ in _runs(tmp_path / "r.db")] == \
        [(0, "failed", "interrupted"), (1, "failed", "interrupted")]  # seed 2 never started
    for pid in (int(p.read_text()) for p in pids):
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), pid


def test_jobs_is_refused_with_a_slurm_launcher_and_below_one(tmp_path):
    ckpt = make_ckpt(tmp_path / "v.pth")
    for extra, expect in ((["--jobs", "2", "--launcher", "submitit"], "--jobs runs tasks side by side on this machine"),
                          (["--jobs", "0"], "--jobs must be >= 1")):
        out = run_cli("run", "--ckpt", ckpt, "--tasks", "sleepy_task", *extra, "--work-dir", tmp_path / "wd",
                      "--db", tmp_path / "r.db", env=PLUGINS)
        errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
        assert out.returncode == 2 and len(errors) == 1 and expect in errors[0], out.stderr


def test_each_parallel_slot_gets_its_own_gpus():
    from benchmark.runner import slot_devices

    assert [slot_devices(k, 1, "0,1,2,3") for k in range(4)] == ["0", "1", "2", "3"]
    assert [slot_devices(k, 2, "4,5,6,7") for k in range(2)] == ["4,5", "6,7"]  # --nproc 2: two GPUs per task


def test_with_jobs_the_tasks_that_took_longest_before_start_first():
    import pandas as pd

    from benchmark import registry
    from benchmark.runner import RunOptions, _longest_first

    class Store:  # stored runs: coco_det slow, nyu_depth quick; a failure and another preset do not count
        def runs(self):
            return pd.DataFrame({"task": ["nyu_depth", "coco_det", "coco_det", "nyu_depth", "lasot"],
                                 "status": ["ok", "ok", "ok", "failed", "ok"],
                                 "preset": ["ci", "ci", "ci", "ci", "paper"], "subset": [0] * 5,
                                 "wall_s": [20.0, 190.0, 170.0, 999.0, 999.0]})

    specs = {n: registry.get_task(n) for n in ("k12_dtd", "nyu_depth", "lasot", "coco_det")}
    plan = [(specs[n], 0) for n in ("k12_dtd", "nyu_depth", "lasot", "coco_det")]
    opts = RunOptions(ckpt=Path("x.pth"), tasks=list(specs.values()), jobs=2)
    order = [spec.name for spec, _ in _longest_first(plan, Store(), opts)]
    assert order == ["coco_det", "nyu_depth", "k12_dtd", "lasot"]  # never-timed ones keep their order, after
