"""Two-process DDP on the CPU (torchrun + gloo): training runs, the lr scales with the world size, and both
replicas end with identical weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_pretrain_train import REPO, env

pytestmark = pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
                                reason="Fashion-MNIST not installed (make setup)")


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    cfg = tmp_path / "ddp_cfg.py"
    base = REPO / "pretrain" / "configs" / "simmim_vit_tiny_fmnist.py"
    cfg.write_text(f"_base_ = ['{base}']\n"
                   "custom_hooks = [dict(type='SimMIMRunHook'), dict(type='SimMIMWeightsDigestHook')]\n"
                   "env_cfg = dict(dist_cfg=dict(backend='gloo'))\n")
    wd = tmp_path / "wd"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "pretrain.train", "--config", str(cfg), "--launcher", "pytorch", "--work-dir", str(wd),
                          "--cfg-options", "simmim.iters=8", "simmim.checkpoint_interval=4",
                          "train_dataloader.batch_size=8"],
                         cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "world size 2, total batch 16, lr 0.00025" in out  # 8e-3 × (8 × 2) / 512
    h0, h1 = ((wd / f"weights_rank{r}.sha256").read_text().strip() for r in (0, 1))
    assert len(h0) == 64 and h0 == h1
    iters = [json.loads(line)["iter"] for line in (wd / "loss_log.jsonl").read_text().splitlines()]
    assert iters == list(range(1, 9))
    assert (wd / "iter_8.pth").exists() and (wd / "mim.pth").exists()
