"""Linear probe on frozen features: extraction with an on-disk cache, logistic regression, hyper-parameter search.

The protocol (CoG's, also used for the demo): features of the frozen backbone (its pooled pre-logits), L2-normalised;
a linear layer trained with SGD (momentum 0.9, cosine lr) on cross-entropy; lr and weight decay chosen on a
stratified hold-out of the training split; then retrained on the whole training split and scored on the test
split. Features are extracted once per (checkpoint, dataset, split, transform) and cached, so other seeds or
search settings never re-extract.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import TaskFailed


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def pool_features(model: nn.Module, x: torch.Tensor, pool: str = "avg") -> torch.Tensor:
    """Global features of a timm backbone.

    ``avg`` (default): mean of the final-normed patch tokens — the usual probe for MIM models, whose CLS token
    (if any) is never trained by the pre-text task. ``token``: the model's own pooled pre-logits.
    """
    if pool == "token":
        return model(x)
    feats = model.forward_features(x)
    if feats.ndim == 4:  # Swin: (B, H, W, C)
        return feats.mean(dim=(1, 2))
    return feats[:, getattr(model, "num_prefix_tokens", 0):].mean(dim=1)


@torch.inference_mode()
def extract_features(model: nn.Module, images: np.ndarray, transform: Callable[[torch.Tensor], torch.Tensor],
                     *, batch_size: int = 256, device: str = "cpu", pool: str = "avg",
                     progress: Callable[[float], None] | None = None) -> torch.Tensor:
    """Pooled features of a frozen timm backbone for uint8 images (N, H, W[, C])."""
    model.eval().to(device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = transform(torch.from_numpy(images[start:start + batch_size])).to(device)
        out.append(pool_features(model, batch, pool).float().cpu())
        if progress:
            progress(min(1.0, (start + batch_size) / len(images)))
    return torch.cat(out)


def cached_features(cache_dir: Path, key: str, compute: Callable[[], torch.Tensor | dict[str, torch.Tensor]]):
    """Load ``compute()``'s tensor (or dict of tensors) from ``cache_dir/key.pt``, or compute and store it atomically.

    Read back with ``weights_only=True``: a tampered cache file cannot run code."""
    path = Path(cache_dir) / f"{key}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    out = compute()  # cloned below: normal tensors, not inference-mode ones
    out = out.clone() if torch.is_tensor(out) else {k: v.clone() for k, v in out.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(out, tmp)
    os.replace(tmp, path)
    return out


def eval_transform(size: int, crop_pct: float = 0.875) -> Callable:
    """timm's eval transform: resize (short side size / crop_pct, bicubic), centre crop, ImageNet mean/std — the
    normalisation of SimMIM pre-training and fine-tuning (timm's per-arch pretrained_cfg says 0.5/0.5 for ViTs and
    describes timm's own weights, not the checkpoint's)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

    return create_transform(int(size), is_training=False, crop_pct=crop_pct, interpolation="bicubic",
                            mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, holdout) with ``fraction`` of each class held out."""
    rng = np.random.default_rng(seed)
    train, hold = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_hold = max(1, int(round(fraction * len(idx)))) if len(idx) > 1 else 0
        hold.append(idx[:n_hold])
        train.append(idx[n_hold:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(hold))


def stratified_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Deterministic, class-balanced subset of ``n`` indices (all of them when n <= 0 or n >= len)."""
    if n <= 0 or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    order = [idx[i] for i in range(max(map(len, per_class))) for idx in per_class if i < len(idx)]
    return np.sort(np.asarray(order[:n]))


def train_linear(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, *, lr: float, wd: float,
                 epochs: int, batch_size: int, seed: int) -> nn.Linear:
    """Multinomial logistic regression by mini-batch SGD (momentum 0.9) with a cosine schedule."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = nn.Linear(feats.shape[1], num_classes)
    opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    steps = epochs * max(1, -(-len(feats) // batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for _ in range(epochs):
        perm = torch.randperm(len(feats), generator=gen)
        for start in range(0, len(feats), batch_size):
            idx = perm[start:start + batch_size]
            loss = F.cross_entropy(clf(feats[idx]), labels[idx])
            if not torch.isfinite(loss):
                raise TaskFailed(f"linear probe loss became {loss.item()} (lr={lr}, wd={wd})",
                                 "lower the lr grid of the preset")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return clf


@torch.no_grad()
def accuracy_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """top-1 and mean per-class accuracy, in percent."""
    pred = logits.argmax(1)
    correct = (pred == labels).float()
    per_class = [correct[labels == c].mean().item() for c in range(num_classes) if (labels == c).any()]
    return {"top1": 100.0 * correct.mean().item(), "mean_per_class_acc": 100.0 * float(np.mean(per_class))}


def probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
          num_classes: int, *, lrs: Sequence[float], wds: Sequence[float], epochs: int, batch_size: int,
          holdout: float, seed: int, select_metric: str = "top1",
          progress: Callable[[float, str], None] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Grid search (lr, wd) on a hold-out of train, retrain on all of train, score test.

    Returns (test metrics, chosen hyper-parameters with their hold-out score).
    """
    train_x, test_x = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    fit_idx, hold_idx = stratified_split(train_y.numpy(), holdout, seed)
    grid = list(itertools.product(lrs, wds))
    best = None
    for i, (lr, wd) in enumerate(grid):
        clf = train_linear(train_x[fit_idx], train_y[fit_idx], num_classes, lr=lr, wd=wd, epochs=epochs,
                           batch_size=batch_size, seed=seed)
        score = accuracy_metrics(clf(train_x[hold_idx]), train_y[hold_idx], num_classes)[select_metric]
        if best is None or score > best[0]:
            best = (score, lr, wd)
        if progress:
            progress((i + 1) / (len(grid) + 1), f"search lr={lr:g} wd={wd:g} hold-out {score:.2f}")
    score, lr, wd = best
    clf = train_linear(train_x, train_y, num_classes, lr=lr, wd=wd, epochs=epochs, batch_size=batch_size, seed=seed)
    with torch.no_grad():
        metrics = accuracy_metrics(clf(test_x), test_y, num_classes)
    return metrics, {"lr": lr, "wd": wd, "holdout_score": score}
