"""A full disk never aborts the suite or loses a finished result: the task is recorded as failed and the suite goes
on; a result whose DB write failed is kept in its result.json and stored by the next run without re-running."""

from __future__ import annotations

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
