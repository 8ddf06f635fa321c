"""Kill-and-resume: a killed pre-training run continues from its last checkpoint with the same iteration count;
resuming a work dir with a different model is refused with both named."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmark.workdir import load_own_checkpoint
from tests.test_pretrain_train import REPO, env, train

pytestmark = pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
                                reason="Fashion-MNIST not installed (make setup)")

ARGS = ["--config", "simmim_vit_tiny_fmnist", "--cfg-options", "simmim.iters=120", "simmim.checkpoint_interval=20",
        "train_dataloader.batch_size=16", "simmim.max_keep_ckpts=10"]


@pytest.mark.slow
def test_kill_and_resume_continues_from_last_checkpoint(tmp_path):
    wd = tmp_path / "wd"
    proc = subprocess.Popen([sys.executable, "-m", "pretrain.train", "--work-dir", str(wd), *ARGS], cwd=REPO,
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (wd / "last_checkpoint").exists():
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # a crash: no clean-up of any kind
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    last = Path((wd / "last_checkpoint").read_text().strip())
    killed_at = int(last.stem.split("_")[1])
    assert 20 <= killed_at < 120 and not (wd / "iter_120.pth").exists()

    res = train("--work-dir", wd, *ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert f"resuming from {last}" in out
    assert f"resumed epoch: 0, iter: {killed_at}" in out
    # the loss log holds every iteration exactly once: 1..killed_at from the first run, the rest from the second
    iters = [json.loads(line)["iter"] for line in (wd / "loss_log.jsonl").read_text().splitlines()]
    assert iters == list(range(1, 121))
    # the second run did only the remaining iterations: its log's first train line is past the checkpoint
    first_logged = next(int(line.split("[")[1].split("/")[0]) for line in out.splitlines() if "Iter(train) [" in line)
    assert killed_at < first_logged <= killed_at + 20
    ckpt = load_own_checkpoint(wd / "iter_120.pth", map_location="cpu")
    assert ckpt["meta"]["iter"] == 120
    # the lr schedule continued where it stopped: every logged lr is the unbroken schedule's value
    from pretrain.engine import SimMIMLR

    rows = [json.loads(line) for line in (wd / "loss_log.jsonl").read_text().splitlines()]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=8e-3 * 16 / 512)
    ref = SimMIMLR(opt, total_iters=120, warmup_iters=20, warmup_ratio=1e-3, min_ratio=1e-2)
    assert [r["lr"] for r in rows] == pytest.approx([opt.param_groups[0]["initial_lr"] * ref.factor(i)
                                                     for i in range(120)], rel=1e-9)
    assert (wd / "mim.pth").exists()

    # a different model in the same work dir: refused, both named, one line
    res = train("--work-dir", wd, *ARGS, "model.arch_kwargs.depth=2")
    err = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 2 and err.startswith("error: cannot resume:"), res.stderr[-2000:]
    assert "'depth': 4" in err and "'depth': 2" in err and "iter_120.pth" in err
    # --resume none starts over (and is allowed)
    res = train("--work-dir", wd, *ARGS[:2], "--resume", "none", "--cfg-options", "simmim.iters=2",
                "model.arch_kwargs.depth=2", "simmim.vis.num=0")
    assert res.returncode == 0, res.stderr[-2000:]
