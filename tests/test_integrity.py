"""A full disk never aborts the suite or loses a finished result: the task is recorded as failed and the suite goes
on; a result whose DB write failed is kept in its result.json and stored by the next run without re-running."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmark import registry, runner
from benchmark.checkpoint import file_sha256
from benchmark.errors import BenchmarkError
from benchmark.store import ResultStore
from tests.conftest import run_cli


@contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of ``size`` at ``path`` (root only: skipped with the reason otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_work_dir_fails_each_task_with_its_reason_and_the_suite_goes_on(tmp_path, tiny_vit_ckpt):
    with small_disk(tmp_path / "full", "256k") as full:
        out = run_cli("run", "--ckpt", tiny_vit_ckpt, "--tasks", "fashion_mnist_probe,k12_dtd", "--data", "mini",
                      "--work-dir", full / "wd", "--db", tmp_path / "r.db")
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    with sqlite3.connect(tmp_path / "r.db") as conn:
        rows = conn.execute("SELECT task, status, error FROM runs ORDER BY id").fetchall()
    assert [(t, s) for t, s, _ in rows] == [("fashion_mnist_probe", "failed"), ("k12_dtd", "failed")]
    assert all("disk full" in e or "No space left" in e for _, _, e in rows), rows


def test_a_result_whose_db_write_failed_is_stored_by_the_next_run(tmp_path, tiny_vit_ckpt, monkeypatch):
    opts = runner.RunOptions(ckpt=tiny_vit_ckpt, tasks=[registry.get_task("fashion_mnist_probe")], seeds=[0],
                             mini=True, work_dir=tmp_path / "wd", db=tmp_path / "r.db")

    def full(self, *args, **kwargs):
        raise BenchmarkError(f"results DB {self.path}: database or disk is full", "free space")

    with monkeypatch.context() as m:
        m.setattr(ResultStore, "record_success", full)
        with pytest.raises(BenchmarkError, match="disk is full; the finished result is kept in .*result.json"):
            runner.run(opts)
    (kept,) = (tmp_path / "wd").rglob("result.json")
    trained_at = kept.stat().st_mtime
    (outcome,) = runner.run(opts)  # the DB works again: the kept result is stored, the task is not re-run
    assert outcome.status == "ok" and kept.stat().st_mtime == trained_at
    assert (kept.parent / "worker.log").read_text().count("===== attempt started") == 1
    key = runner.RunKey(file_sha256(tiny_vit_ckpt), "fashion_mnist_probe", "ci", 0, 0)
    assert ResultStore(tmp_path / "r.db").is_done(key)


def test_a_killed_runner_loses_no_log_line_and_collect_stores_what_its_worker_finished(tmp_path, tiny_vit_ckpt):
    """The worker writes its own log: SIGKILL of the runner (a lost login session) leaves the worker running to
    the end, its log complete; `benchmark collect` then stores the result and a re-run does not train it again."""
    import signal
    import sys
    import time

    wd, db = tmp_path / "wd", tmp_path / "r.db"
    cmd = [sys.executable, "-m", "benchmark.cli", "run", "--ckpt", str(tiny_vit_ckpt), "--tasks",
           "fashion_mnist_probe", "--data", "mini", "--seed", "0", "--work-dir", str(wd), "--db", str(db)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    logs: list[Path] = []
    while time.time() < deadline and not logs:
        logs = [p for p in wd.rglob("worker.log") if "##progress" in p.read_text()]
        time.sleep(0.2)
    assert logs, "the worker never reported progress"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (log,) = logs
    result = log.parent / "result.json"
    while time.time() < deadline and not result.exists():
        time.sleep(0.5)
    assert result.exists(), "the worker did not finish after its runner was killed"
    time.sleep(1.0)  # the worker's last lines follow the result file
    text = log.read_text()
    assert text.count("===== attempt started") == 1 and "##progress 1.0000 done" in text, text[-2000:]
    assert not db.exists() or ResultStore(db).results().empty

    out = run_cli("collect", "--work-dir", wd, "--db", db)
    assert out.returncode == 0 and "1 stored" in out.stdout, out.stdout + out.stderr
    assert set(ResultStore(db).results()["metric"]) == {"top1", "mean_per_class_acc"}
    again = run_cli("collect", "--work-dir", wd, "--db", db)
    assert "0 stored, 1 already in" in again.stdout, again.stdout
    rerun = run_cli("run", *cmd[4:])
    assert rerun.returncode == 0 and "already done" in rerun.stderr, rerun.stderr
    assert log.read_text().count("===== attempt started") == 1


def _stored(tmp_path, version: str, fingerprint: str) -> tuple[ResultStore, runner.RunKey]:
    store = ResultStore(tmp_path / "r.db")
    key = runner.RunKey("ab" * 32, "nyu_depth", "ci", 0, 0)
    store.record_success(runner.RunInfo(key=key, task_version=version, data_fingerprint=fingerprint,
                                        data_root="/old/nyu", finished_at=1.0), {"rmse": 1.0}, {"rmse": "down"})
    return store, key


def test_a_result_of_an_older_task_version_runs_again_and_other_data_is_flagged(tmp_path):
    from benchmark import data

    spec = registry.get_task("nyu_depth")
    opts = runner.RunOptions(ckpt=tmp_path / "c.pth", tasks=[spec], data_root=str(tmp_path / "data"))
    (tmp_path / "data" / "nyu").mkdir(parents=True)
    now = data.fingerprint(spec, tmp_path / "data" / "nyu")

    store, key = _stored(tmp_path / "a", "0", now)
    action, why = runner.stored_state(store, key, spec, opts)
    assert action == "rerun" and f"task version 0, the task is now version {spec.version}" in why

    store, key = _stored(tmp_path / "b", str(spec.version), now)
    assert runner.stored_state(store, key, spec, opts) == ("skip", "already done (--force re-runs it)")

    store, key = _stored(tmp_path / "c", str(spec.version), "0123456789abcdef")
    action, why = runner.stored_state(store, key, spec, opts)
    assert action == "skip" and "another fingerprint" in why and "--force re-runs it on the current data" in why

    opts.force = True
    assert runner.stored_state(store, key, spec, opts)[0] == "force"


def test_a_kept_result_json_of_another_task_version_is_not_stored(tmp_path):
    job = {"task": "nyu_depth", "task_version": "2", "ckpt_sha256": "x", "preset": "ci", "overrides": {},
           "subset": 0, "seed": 0, "result_path": str(tmp_path / "result.json")}
    (tmp_path / "result.json").write_text(json.dumps({"metrics": {"rmse": 1.0}, "job": {**job, "task_version": "1"}}))
    assert runner._finished_result(job) is None
    (tmp_path / "result.json").write_text(json.dumps({"metrics": {"rmse": 1.0}, "job": job}))
    assert runner._finished_result(job) is not None
