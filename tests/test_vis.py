"""`--vis-backend tensorboard`: a trained task and SimMIM pre-training write TensorBoard event files through
mmengine's visualizer, read back here with TensorBoard's own event reader."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def _scalars(root: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(root.rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {root}"
    acc = EventAccumulator(str(events[-1].parent))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_a_trained_task_writes_loss_and_lr_curves(tmp_path, tiny_vit_ckpt):
    out = run_cli("run", "--ckpt", tiny_vit_ckpt, "--tasks", "nyu_depth", "--data", "mini", "--vis-backend",
                  "tensorboard", "--work-dir", tmp_path / "wd", "--db", tmp_path / "r.db")
    assert out.returncode == 0, out.stderr[-3000:]
    curves = _scalars(next((tmp_path / "wd").rglob("nyu_depth/*/runner")))
    assert len(curves["loss"]) >= 2 and len(curves["lr"]) == len(curves["loss"]), sorted(curves)
    assert all(v == v for v in curves["loss"])  # finite numbers, not NaN


def test_pretraining_writes_loss_and_lr_curves(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "pretrain.train", "--config", "simmim_vit_tiny_fmnist", "--work-dir",
                          str(tmp_path / "wd"), "--out", str(tmp_path / "mim.pth"), "--vis-backend", "tensorboard",
                          "--cfg-options", "simmim.iters=20", "simmim.checkpoint_interval=20"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    curves = _scalars(tmp_path / "wd")
    assert curves["loss"] and curves["lr"], sorted(curves)
