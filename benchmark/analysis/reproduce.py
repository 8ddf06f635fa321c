"""``benchmark reproduce-analysis --mini``: the paper's MIM-vs-supervised comparison at CPU scale.

1. SimMIM pre-training of a tiny ViT on the real Fashion-MNIST (pretrain/configs/simmim_vit_tiny_fmnist.py);
2. the same ViT trained supervised on the same images with the same batch, iterations and lr schedule
   (pretrain/supervised.py), at the same time as 1 (each on half the cores);
3. ``benchmark analyze`` of both on held-out Fashion-MNIST images;
4. the paper's findings checked one by one against the numbers, each stated as reproduced or not, appended to
   the report. Nothing is tuned to make a finding hold: the verdicts are whatever the measurements say.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pretrain.supervised import train_supervised

from ..errors import BenchmarkError
from .report import analyze

# the architecture of pretrain/configs/simmim_vit_tiny_fmnist.py
ARCH, ARCH_KWARGS = "vit_tiny_patch16_224", dict(img_size=32, patch_size=4, depth=4, embed_dim=64, num_heads=2)
BATCH, BASE_LR, WARMUP, MIN_LR = 64, 8e-3, 20, 8e-5  # the config's schedule; lr scaled by batch / 512 as SimMIM


def _late(df: pd.DataFrame) -> pd.DataFrame:
    """The last third of the layers (at least one): where the paper sees supervised attention go global."""
    layers = sorted(df.layer.unique())
    return df[df.layer.isin(layers[-max(1, len(layers) // 3):])]


def _cka_offdiag(path: Path) -> float:
    m = pd.read_csv(path, index_col=0).to_numpy(dtype=float)
    return float(m[~np.eye(len(m), dtype=bool)].mean())


def findings(out: Path, mim: str = "simmim", sup: str = "supervised") -> list[dict]:
    """The paper's three claims, measured on the analysis CSVs in ``out``."""
    rows = []
    dist = pd.read_csv(out / "attention_distance.csv")
    late = _late(dist).groupby("model").value.mean()
    rows.append(dict(
        finding="Locality: supervised attention goes global in the last layers, MIM's stays local "
                "(Dark Secrets Fig. 1)",
        measure="mean attention distance of the last third of the layers (px)",
        mim=late[mim], supervised=late[sup], reproduced=bool(late[sup] > late[mim])))
    div = pd.read_csv(out / "head_diversity.csv")
    late = _late(div).groupby("model").value.mean()
    rows.append(dict(
        finding="Diversity: supervised heads become alike in the last layers, MIM keeps them diverse (Fig. 2)",
        measure="mean KL between heads of the last third of the layers (nats)",
        mim=late[mim], supervised=late[sup], reproduced=bool(late[mim] > late[sup])))
    c_mim, c_sup = _cka_offdiag(out / f"cka_{mim}.csv"), _cka_offdiag(out / f"cka_{sup}.csv")
    rows.append(dict(
        finding="Similarity: MIM's layers are more alike each other than supervised ones (CKA, Fig. 4)",
        measure="mean off-diagonal linear CKA between layers",
        mim=c_mim, supervised=c_sup, reproduced=bool(c_mim > c_sup)))
    return rows


def findings_markdown(rows: list[dict], iters: int) -> str:
    lines = ["## Which of the paper's findings reproduce at this scale", "",
             f"Tiny ViT (4 blocks, 64 dims, 2 heads, 32 px, patch 4) trained {iters} iterations at batch {BATCH} on "
             "Fashion-MNIST, once with SimMIM and once supervised; analysed on held-out test images. The paper's "
             "models are ViT-B / Swin-B trained for hundreds of epochs on ImageNet: a verdict here says what this "
             "budget shows, not whether the paper is right.", "",
             "| finding | measure | SimMIM | supervised | reproduced here |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['finding']} | {r['measure']} | {r['mim']:.3f} | {r['supervised']:.3f} | "
                     f"{'yes' if r['reproduced'] else 'no'} |")
    n = sum(r["reproduced"] for r in rows)
    lines += ["", f"{n} of {len(rows)} findings reproduce at this scale."]
    return "\n".join(lines) + "\n"


def reproduce_mini(out: Path, iters: int = 1000, num_images: int = 128, log=print) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    mim, sup = out / "simmim.pth", out / "supervised.pth"
    simmim = None
    half = max(1, (os.cpu_count() or 1) // 2)  # the two trainings run at once, each on half the cores
    if not mim.exists():
        cmd = [sys.executable, "-m", "benchmark.cli", "pretrain", "--config", "simmim_vit_tiny_fmnist",
               "--work-dir", str(out / "pretrain_simmim"), "--out", str(mim), "--cfg-options",
               f"simmim.iters={iters}", f"simmim.checkpoint_interval={max(100, iters // 2)}"]
        sim_log = out / "pretrain_simmim.log"
        log(f"SimMIM pre-training (log: {sim_log}): " + " ".join(cmd[2:]))
        with open(sim_log, "w") as fh:  # OMP_NUM_THREADS, when set, wins
            simmim = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                      env={"OMP_NUM_THREADS": str(half), **os.environ})
    try:
        if not sup.exists():
            scale = BATCH / 512
            threads = torch.get_num_threads()
            if simmim is not None and "OMP_NUM_THREADS" not in os.environ:
                torch.set_num_threads(half)
            try:
                train_supervised(ARCH, ARCH_KWARGS, sup, iters=iters, batch_size=BATCH, lr=BASE_LR * scale,
                                 warmup_iters=WARMUP, min_lr=MIN_LR * scale, log=log)
            finally:
                torch.set_num_threads(threads)
    except BaseException:
        if simmim is not None:
            simmim.terminate()
            simmim.wait()
        raise
    if simmim is not None and simmim.wait() != 0:
        raise BenchmarkError("SimMIM pre-training of the tiny ViT failed", f"see {out / 'pretrain_simmim.log'}")
    report = analyze([mim, sup], out / "analysis", images=None, mini=True, num_images=num_images,
                     names=["simmim", "supervised"])
    rows = findings(out / "analysis")
    pd.DataFrame(rows).to_csv(out / "analysis" / "findings.csv", index=False)
    with open(report, "a") as fh:
        fh.write("\n" + findings_markdown(rows, iters))
    return report
