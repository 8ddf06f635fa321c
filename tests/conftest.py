"""Shared fixtures: tiny canonical checkpoints (a few layers, 32–64 px) so the whole suite runs in minutes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import checkpoint

pytest_plugins = ["tests.slurm_cluster"]
REPO = Path(__file__).resolve().parent.parent
TINY_VIT = ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4, "depth": 2, "embed_dim": 64, "num_heads": 2})
TINY_SWIN = ("swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 4, "depths": (1, 1, 1, 1),
                                              "embed_dim": 32, "num_heads": (1, 2, 2, 4)})


def make_ckpt(path: Path, arch_kwargs=TINY_VIT, seed: int = 0) -> Path:
    sd, meta = checkpoint.create_random(arch_kwargs[0], dict(arch_kwargs[1]), seed=seed)
    return checkpoint.save_canonical(path, sd, meta)


@pytest.fixture(scope="session")
def tiny_vit_ckpt(tmp_path_factory) -> Path:
    return make_ckpt(tmp_path_factory.mktemp("ckpt") / "tiny_vit.pth")


@pytest.fixture(scope="session")
def tiny_swin_ckpt(tmp_path_factory) -> Path:
    return make_ckpt(tmp_path_factory.mktemp("ckpt") / "tiny_swin.pth", TINY_SWIN)


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess, as a user runs it (``env``: extra variables)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "benchmark.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=timeout)


def run_cli_together(*commands: list, timeout: int = 600) -> list[subprocess.CompletedProcess]:
    """Several CLI commands at once, one thread each (the CI machine has 2 cores): independent runs that a test
    compares, e.g. the same fine-tuning from two checkpoints."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: run_cli(*args, timeout=timeout, env={"OMP_NUM_THREADS": "1"}), commands))


PLANNED_SPEC = """name: planned_task
suite: semantic
description: a task declared in the registry whose adapter is not written yet
dataset: {name: Planned, subdir: planned, layout: [train]}
metrics:
  - {name: top1, direction: up, primary: true}
presets:
  ci: {}
"""


def db_results(db: Path, columns: str = "task, preset, metric, value"):
    """The results table of a results DB as a DataFrame."""
    import pandas as pd

    with sqlite3.connect(db) as conn:
        return pd.read_sql(f"SELECT {columns} FROM results", conn)


def db_runs(db: Path, columns: str = "task, preset, status, error"):
    """The runs table (every attempt, in order) as a DataFrame."""
    import pandas as pd

    with sqlite3.connect(db) as conn:
        return pd.read_sql(f"SELECT {columns} FROM runs ORDER BY id", conn)


def db_extra(db: Path, task: str, preset: str = "ci") -> dict:
    """The ``extra`` facts of the newest successful run of ``task`` under ``preset``."""
    with sqlite3.connect(db) as conn:
        (extra,) = conn.execute("SELECT extra FROM runs WHERE task = ? AND preset = ? AND status = 'ok' "
                                "ORDER BY id DESC LIMIT 1", (task, preset)).fetchone()
    return json.loads(extra)


def planned_task_dir(tmp_path: Path) -> Path:
    """A spec folder (for $MIMBENCH_TASK_PATH) with one declared task without an adapter: ``planned_task``."""
    folder = tmp_path / "planned_specs"
    folder.mkdir(exist_ok=True)
    (folder / "planned_task.yaml").write_text(PLANNED_SPEC)
    return folder


_FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report) -> None:
    # setup + call + teardown per test file, so the end of every run says where the minutes went
    path = report.nodeid.split("::", 1)[0]
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    if not _FILE_SECONDS:
        return
    terminalreporter.section("seconds per test file (setup + call + teardown)")
    for path, seconds in sorted(_FILE_SECONDS.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:8.1f}  {path}")
