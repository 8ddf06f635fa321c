"""Supervised counterpart of a SimMIM run: the same backbone, data, augmentation, batch and iteration budget, trained
with labels (cross-entropy on a linear head over mean-pooled tokens). Used by ``benchmark reproduce-analysis`` to
compare a MIM model with a supervised one, as the Dark Secrets paper does (its supervised models are ImageNet-1K
ViT/Swin; here both see the real Fashion-MNIST).

The head is discarded; the trunk is written as a canonical checkpoint with method 'supervised'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark import fashion_mnist
from benchmark.checkpoint import build_model, make_meta, save_canonical
from benchmark.errors import TaskFailed
from benchmark.features import pool_features

from .data import FASHION_MNIST_ROOT, SimMIMFashionMNIST


def train_supervised(arch: str, arch_kwargs: dict, out: Path, *, iters: int, batch_size: int, lr: float,
                     warmup_iters: int, min_lr: float, weight_decay: float = 0.05, limit: int = 20000,
                     smoothing: float = 0.1, seed: int = 0,
                     log: Callable[[str], None] = print) -> Path:
    """Train ``arch`` on Fashion-MNIST train (first ``limit`` images, SimMIM's augmentation) and export the trunk."""
    torch.manual_seed(seed)
    meta = make_meta(arch, arch_kwargs, method="supervised",
                     source=f"pretrain.supervised (Fashion-MNIST, {iters} it, batch {batch_size})")
    model = build_model(meta)
    head = nn.Linear(model.num_features, 10)
    data = SimMIMFashionMNIST(split="train", img_size=int(meta["img_size"]), limit=limit)
    labels = torch.from_numpy(fashion_mnist.load_split(Path(FASHION_MNIST_ROOT), "train")[1][:len(data)])
    params = [{"params": [p for n, p in model.named_parameters() if p.ndim > 1], "weight_decay": weight_decay},
              {"params": [p for n, p in model.named_parameters() if p.ndim <= 1], "weight_decay": 0.0},
              {"params": head.parameters(), "weight_decay": weight_decay}]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999))
    rng = np.random.default_rng(seed)
    model.train()
    for it in range(iters):
        # SimMIM's warm-up + cosine, on the same budget
        cur = lr * (it + 1) / warmup_iters if it < warmup_iters else \
            min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (it - warmup_iters) / max(1, iters - warmup_iters)))
        for g in opt.param_groups:
            g["lr"] = cur
        idx = rng.integers(0, len(data), size=batch_size)
        x = torch.stack([data[int(i)]["inputs"] for i in idx])
        loss = F.cross_entropy(head(pool_features(model, x)), labels[idx], label_smoothing=smoothing)
        if not torch.isfinite(loss):
            raise TaskFailed(f"supervised training loss became {loss.item()} at iteration {it}", "lower the lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(list(model.parameters()) + list(head.parameters()), 5.0)
        opt.step()
        if (it + 1) % 50 == 0 or it + 1 == iters:
            log(f"supervised: iteration {it + 1}/{iters} loss {loss.item():.4f} lr {cur:.2e}")
    return save_canonical(out, {k: v.detach().clone() for k, v in model.state_dict().items()}, meta)
