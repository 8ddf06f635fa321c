"""Linear probe on frozen features (CoG's protocol; selectable for K12 and iNat18).

1. Features of the frozen backbone (mean of the final-normed patch tokens, see linear_probe.pool_features) for every
   image of a split, extracted ONCE and cached on disk under a key of (checkpoint sha256, dataset fingerprint,
   split, the exact image list, transform, pooling). Other seeds, trial counts or search ranges reuse them.
2. L2-normalised features; multinomial logistic regression (a linear layer, SGD momentum 0.9, cosine lr, batch
   1024, ``epochs`` epochs) — VOC2007 uses one logistic output per label (BCE; difficult labels masked).
3. Optuna (TPE, seeded) searches lr in [0.1, 100] and weight decay in [1e-12, 1e-4] (both log) on a stratified 20%
   hold-out of train. Trials are asked for in rounds of ``parallel`` and trained *together* as one batched model
   (a (trials, D, C) weight tensor) on the features' device, 10 trials for the price of a few; TPE sees every
   finished round before it proposes the next.
4. Retrain with the best (lr, wd) on all of train; score test with the task's metric.

Seeds (the runner's ``--seed``; the ``linear`` preset runs 5) change the hold-out split, the sampler and the
initialisation; the leaderboard reports mean ± std over them.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.errors import TaskFailed
from tasks.classification import linear_probe as lp
from tasks.semantic import metrics as M
from tasks.semantic.common import CorruptCounter, CorruptImage, Split

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- features

class _Images(torch.utils.data.Dataset):
    """Split images through an eval transform; unreadable ones come back as None (counted by the collate)."""

    def __init__(self, split: Split, transform: Callable):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        try:
            return i, self.transform(self.split.load(i)), None
        except CorruptImage as exc:
            return i, None, exc


def _collate(batch):
    return batch


def eval_transform(model, crop_pct: float = 0.875) -> Callable:
    """The shared eval transform (linear_probe.eval_transform) at the backbone's input size."""
    return lp.eval_transform(int(model.mim_meta["img_size"]), crop_pct)


@torch.inference_mode()
def extract(model, split: Split, transform: Callable, *, device: str = "cpu", batch_size: int = 256,
            workers: int = 0, pool: str = "avg", progress: Callable[[float], None] | None = None
            ) -> tuple[torch.Tensor, np.ndarray]:
    """(features (N_kept, D) float32 on the CPU, kept image indices). Unreadable images are skipped and counted."""
    loader = torch.utils.data.DataLoader(_Images(split, transform), batch_size=batch_size, num_workers=workers,
                                         collate_fn=_collate)
    counter = CorruptCounter(split.name, len(split))
    model.eval().to(device)
    feats, kept, done = [], [], 0
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda") else nullcontext()
    for batch in loader:
        for _, _, exc in batch:
            if exc is not None:
                counter.add(exc)
        good = [(i, x) for i, x, exc in batch if exc is None]
        if good:
            x = torch.stack([t for _, t in good]).to(device, non_blocking=True)
            with amp:
                feats.append(lp.pool_features(model, x, pool).float().cpu())
            kept.extend(i for i, _ in good)
        done += len(batch)
        if progress:
            progress(done / len(split))
    if counter.bad:
        log.warning("%s: %d unreadable images skipped", split.name, len(counter.bad))
    return torch.cat(feats), np.asarray(kept, dtype=np.int64)


def cached_extract(cache_dir: Path, key: str, compute: Callable[[], tuple[torch.Tensor, np.ndarray]]
                   ) -> tuple[torch.Tensor, np.ndarray, bool]:
    """(features, kept indices, hit): from the feature cache or computed once and stored there."""
    hit = (Path(cache_dir) / f"{key}.pt").exists()

    def packed() -> dict[str, torch.Tensor]:
        feats, kept = compute()
        return {"features": feats, "kept": torch.from_numpy(kept)}

    blob = lp.cached_features(cache_dir, key, packed)
    return blob["features"], blob["kept"].numpy(), hit


# ---------------------------------------------------------------------------------------------- classifier

def _targets(labels: torch.Tensor, multilabel: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not multilabel:
        return labels, None
    return (labels == 1).float(), (labels != 0).float()  # difficult (0) masked out of the loss


def train_batched(x: torch.Tensor, y: torch.Tensor, num_classes: int, lrs: torch.Tensor, wds: torch.Tensor, *,
                  epochs: int, batch_size: int, seed: int, multilabel: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Train T independent logistic regressions at once (T = len(lrs)); returns weights (T, D, C) and bias (T, C).

    Plain SGD with momentum 0.9 and coupled weight decay, as torch.optim.SGD, on a cosine schedule; every model sees
    the same mini-batches. The per-model losses are summed, so each model gets exactly its own gradient.
    """
    dev, T, D = x.device, len(lrs), x.shape[1]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    w = (torch.randn(D, num_classes, generator=gen) / math.sqrt(D)).to(dev).expand(T, -1, -1).clone()
    b = torch.zeros(T, num_classes, device=dev)
    w.requires_grad_(True)
    b.requires_grad_(True)
    buf_w, buf_b = torch.zeros_like(w), torch.zeros_like(b)
    lrs, wds = lrs.to(dev).float(), wds.to(dev).float()
    target, mask = _targets(y, multilabel)
    steps_per_epoch = max(1, -(-len(x) // batch_size))
    total, step = epochs * steps_per_epoch, 0
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen).to(dev)
        for start in range(0, len(x), batch_size):
            idx = perm[start:start + batch_size]
            logits = torch.baddbmm(b.unsqueeze(1), x[idx].unsqueeze(0).expand(T, -1, -1), w)  # (T, B, C)
            if multilabel:
                per = F.binary_cross_entropy_with_logits(logits, target[idx].expand(T, -1, -1), reduction="none")
                loss_t = (per * mask[idx]).sum((1, 2)) / mask[idx].sum().clamp_min(1)
            else:
                loss_t = F.cross_entropy(logits.transpose(1, 2), target[idx].expand(T, -1),
                                         reduction="none").mean(1)
            gw, gb = torch.autograd.grad(loss_t.sum(), (w, b))
            with torch.no_grad():
                factor = 0.5 * (1 + math.cos(math.pi * step / total))
                gw.add_(w * wds.view(T, 1, 1))
                gb.add_(b * wds.view(T, 1))
                buf_w.mul_(0.9).add_(gw)
                buf_b.mul_(0.9).add_(gb)
                w.sub_(buf_w * (lrs * factor).view(T, 1, 1))
                b.sub_(buf_b * (lrs * factor).view(T, 1))
            step += 1
    with torch.no_grad():
        bad = ~(torch.isfinite(w).flatten(1).all(1) & torch.isfinite(b).all(1))
    w, b = w.detach(), b.detach()
    w[bad], b[bad] = float("nan"), float("nan")  # a diverged trial scores as the worst
    return w, b


def score(logits: np.ndarray, labels: np.ndarray, metric: str) -> float:
    if not np.isfinite(logits).all():
        return -math.inf
    if metric == "map11":
        return M.map11(logits, labels)[0]
    pred = logits.argmax(1)
    return M.top1(pred, labels) if metric == "top1" else M.mean_per_class_accuracy(pred, labels)


def search(x: torch.Tensor, y: torch.Tensor, class_ids: np.ndarray, num_classes: int, *, metric: str, trials: int,
           parallel: int, epochs: int, batch_size: int, holdout: float, seed: int, lr_range=(0.1, 100.0),
           wd_range=(1e-12, 1e-4), multilabel: bool = False,
           progress: Callable[[float, str], None] | None = None) -> dict:
    """Optuna TPE over (lr, wd) on a stratified hold-out; returns the best parameters and the trial history."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fit, hold = lp.stratified_split(class_ids, holdout, seed)
    fit_t, hold_t = torch.from_numpy(fit).to(x.device), torch.from_numpy(hold).to(x.device)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    history = []
    while len(history) < trials:
        batch = [study.ask() for _ in range(min(parallel, trials - len(history)))]
        lrs = torch.tensor([t.suggest_float("lr", *lr_range, log=True) for t in batch])
        wds = torch.tensor([t.suggest_float("wd", *wd_range, log=True) for t in batch])
        w, b = train_batched(x[fit_t], y[fit_t], num_classes, lrs, wds, epochs=epochs, batch_size=batch_size,
                             seed=seed, multilabel=multilabel)
        with torch.no_grad():
            logits = (torch.baddbmm(b.unsqueeze(1), x[hold_t].unsqueeze(0).expand(len(batch), -1, -1), w)).cpu()
        y_hold = y[hold_t].cpu().numpy()
        for t, lg, lr, wd in zip(batch, logits.numpy(), lrs.tolist(), wds.tolist()):
            s = score(lg, y_hold, metric)
            study.tell(t, s if math.isfinite(s) else -1.0)
            history.append({"lr": lr, "wd": wd, "holdout": s})
        if progress:
            best = max(h["holdout"] for h in history)
            progress(len(history) / trials, f"search {len(history)}/{trials} trials, best hold-out {best:.2f}")
    best = max(history, key=lambda h: h["holdout"])
    if not math.isfinite(best["holdout"]):
        raise TaskFailed("every linear-probe trial diverged", "lower the upper end of the preset's lr_range (--set lr_range=[0.1,10])")
    return {"lr": best["lr"], "wd": best["wd"], "holdout": best["holdout"], "trials": history}


def fit_and_score(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: np.ndarray,
                  num_classes: int, *, lr: float, wd: float, metric: str, epochs: int, batch_size: int, seed: int,
                  multilabel: bool) -> dict[str, float]:
    """Retrain on all of train with the chosen (lr, wd); the task metric (and top-1 for single-label) on test."""
    w, b = train_batched(train_x, train_y, num_classes, torch.tensor([lr]), torch.tensor([wd]), epochs=epochs,
                         batch_size=batch_size, seed=seed, multilabel=multilabel)
    with torch.no_grad():
        logits = torch.addmm(b[0], test_x, w[0]).cpu().numpy()
    if not np.isfinite(logits).all():
        raise TaskFailed(f"the final linear probe diverged (lr={lr:g}, wd={wd:g})", "lower the preset's lr range")
    out = {metric: score(logits, test_y, metric)}
    if not multilabel:
        out["top1"] = score(logits, test_y, "top1")
    return out


def normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=1)
