"""THE linear probe on frozen features: CoG's protocol, the ``linear`` / ``ci`` presets of K12 and iNat18, and the
Fashion-MNIST probe (tasks/classification/fashion_mnist.py).

1. Features of the frozen backbone (by default the mean of the final-normed patch tokens, see
   benchmark.features.pool_features) for every image of a split, extracted ONCE and cached on disk under a key of
   (checkpoint sha256, dataset fingerprint, split, the exact image list, transform, pooling) (``cache_key``,
   ``cached_extract``). Other seeds, trial counts or search ranges reuse them. ``extract`` reads a ``Split``
   (image files or arrays, through a PIL eval transform); ``extract_features`` reads an in-memory uint8 array
   through a batched tensor transform.
2. L2-normalised features (``normalize``); multinomial logistic regression (a linear layer, SGD momentum 0.9,
   coupled weight decay, cosine lr, ``epochs`` epochs of ``batch_size``) — VOC2007 uses one logistic output per
   label (BCE; difficult labels masked).
3. lr and weight decay chosen on a stratified hold-out of train (``stratified_split``) by ``search``, either
   * Optuna (TPE, seeded) over lr in ``lr_range`` and wd in ``wd_range`` (both log; default [0.1, 100] and
     [1e-12, 1e-4]) for ``trials`` trials, asked for in rounds of ``parallel`` so TPE sees every finished round
     before it proposes the next; or
   * ``grid=(lrs, wds)``: exactly the points of lrs × wds (lr-major), in rounds of ``parallel``.
   Each round's trials are trained *together* as one batched model (a (trials, D, C) weight tensor,
   ``train_batched``) on the features' device; a diverged trial scores -inf, and only a search where every trial
   diverged fails.
4. Retrain with the best (lr, wd) on all of train; score test with the task's metric (``fit_and_score``).

Seeds (the runner's ``--seed``) change the hold-out split, the sampler and the initialisation; the leaderboard
reports mean ± std over them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.errors import BenchmarkError, TaskFailed
from benchmark.features import eval_transform as timm_eval_transform
from benchmark.features import pool_features
from benchmark.files import atomic_path
from tasks.semantic import metrics as M
from tasks.semantic.common import CorruptCounter, CorruptImage, Split

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- subsets

def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, holdout) with ``fraction`` of each class held out (none of a class with one sample)."""
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


# ---------------------------------------------------------------------------------------------- features

def cache_key(*parts: object) -> str:
    """A short digest of everything that determines a cached tensor (JSON of the parts)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cached_extract(cache_dir: Path, key: str, compute: Callable[[], tuple[torch.Tensor, np.ndarray]]
                   ) -> tuple[torch.Tensor, np.ndarray, bool]:
    """(features, kept indices, hit): from ``cache_dir/key.pt`` or ``compute()``d once and stored there atomically.

    Read back with ``weights_only=True``: a tampered cache file cannot run code."""
    path = Path(cache_dir) / f"{key}.pt"
    if path.exists():
        blob = torch.load(path, weights_only=True)
        return blob["features"], blob["kept"].numpy(), True
    feats, kept = compute()
    feats = feats.clone()  # a normal tensor, not an inference-mode one
    kept = np.asarray(kept, dtype=np.int64)
    with atomic_path(path) as tmp:
        torch.save({"features": feats, "kept": torch.from_numpy(kept)}, tmp)
    return feats, kept, False


def _autocast(device: str):
    """bf16 autocast for extraction on CUDA; full precision elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda") else nullcontext()


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
    """The shared eval transform (benchmark.features.eval_transform) at the backbone's input size."""
    return timm_eval_transform(int(model.mim_meta["img_size"]), crop_pct)


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
    for batch in loader:
        for _, _, exc in batch:
            if exc is not None:
                counter.add(exc)
        good = [(i, x) for i, x, exc in batch if exc is None]
        if good:
            x = torch.stack([t for _, t in good]).to(device, non_blocking=True)
            with _autocast(device):
                feats.append(pool_features(model, x, pool).float().cpu())
            kept.extend(i for i, _ in good)
        done += len(batch)
        if progress:
            progress(done / len(split))
    if counter.bad:
        log.warning("%s: %d unreadable images skipped", split.name, len(counter.bad))
    return torch.cat(feats), np.asarray(kept, dtype=np.int64)


@torch.inference_mode()
def extract_features(model, images: np.ndarray, transform: Callable[[torch.Tensor], torch.Tensor], *,
                     batch_size: int = 256, device: str = "cpu", pool: str = "avg",
                     progress: Callable[[float], None] | None = None) -> torch.Tensor:
    """Features (N, D) float32 on the CPU of in-memory uint8 images (N, H, W[, C]); ``transform`` maps a uint8
    batch tensor to the model's input batch. On CUDA under bf16 autocast, as ``extract``."""
    model.eval().to(device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = transform(torch.tensor(images[start:start + batch_size])).to(device)  # a copy: IDX arrays are read-only
        with _autocast(device):
            out.append(pool_features(model, batch, pool).float().cpu())
        if progress:
            progress(min(1.0, (start + batch_size) / len(images)))
    return torch.cat(out)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalised float32 rows: the probe's input."""
    return F.normalize(x.float(), dim=1)


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
    """``metric`` (top1, mean_per_class_accuracy or map11), in percent, of logits (N, C); -inf if any is not finite."""
    if not np.isfinite(logits).all():
        return -math.inf
    if metric == "map11":
        return M.map11(logits, labels)[0]
    pred = logits.argmax(1)
    return M.top1(pred, labels) if metric == "top1" else M.mean_per_class_accuracy(pred, labels)


def _grid_points(grid: tuple[Sequence[float], Sequence[float]]) -> list[tuple[float, float]]:
    """The (lr, wd) points of lrs × wds, lr-major; a grid that cannot be trained is a BenchmarkError."""
    lrs, wds = (list(g) for g in grid)
    try:
        lrs, wds = [float(v) for v in lrs], [float(v) for v in wds]
    except (TypeError, ValueError):
        lrs, wds = [], []
    if not lrs or not wds or not all(math.isfinite(v) and v > 0 for v in lrs) \
            or not all(math.isfinite(v) and v >= 0 for v in wds):
        raise BenchmarkError(f"linear-probe grid lrs={grid[0]!r} x wds={grid[1]!r} is not two non-empty lists of "
                             "positive learning rates and non-negative weight decays",
                             "set e.g. --set lrs=[1.0,3.0,10.0] --set wds=[0.0,1e-5]")
    return list(itertools.product(lrs, wds))


def search(x: torch.Tensor, y: torch.Tensor, class_ids: np.ndarray, num_classes: int, *, metric: str,
           trials: int | None = None, parallel: int = 10, epochs: int, batch_size: int, holdout: float, seed: int,
           lr_range=(0.1, 100.0), wd_range=(1e-12, 1e-4),
           grid: tuple[Sequence[float], Sequence[float]] | None = None, multilabel: bool = False,
           progress: Callable[[float, str], None] | None = None) -> dict:
    """Choose (lr, wd) on a stratified hold-out of (x, y); returns the best parameters and the trial history.

    Without ``grid``: ``trials`` Optuna TPE trials over ``lr_range`` × ``wd_range`` (log). With
    ``grid=(lrs, wds)``: exactly the points of lrs × wds, in that order (lr-major; ``trials`` must not be given).
    Either way trials are trained ``parallel`` at a time as one batched model on the same fit / hold-out split,
    and the first trial with the best hold-out score wins.
    """
    if grid is not None:
        if trials is not None:
            raise ValueError("search: give either trials (Optuna) or grid, not both")
        points = _grid_points(grid)
        trials, study = len(points), None
    elif trials is None or trials < 1:
        raise ValueError(f"search: trials must be a positive number of Optuna trials (got {trials!r})")
    else:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    parallel = max(1, int(parallel))
    fit, hold = stratified_split(class_ids, holdout, seed)
    fit_t, hold_t = torch.from_numpy(fit).to(x.device), torch.from_numpy(hold).to(x.device)
    y_hold = y[hold_t].cpu().numpy()
    history: list[dict] = []
    while len(history) < trials:
        n = min(parallel, trials - len(history))
        if study is None:
            asked = [None] * n
            lrs, wds = (torch.tensor(v, dtype=torch.float64) for v in zip(*points[len(history):len(history) + n]))
        else:
            asked = [study.ask() for _ in range(n)]
            lrs = torch.tensor([t.suggest_float("lr", *lr_range, log=True) for t in asked], dtype=torch.float64)
            wds = torch.tensor([t.suggest_float("wd", *wd_range, log=True) for t in asked], dtype=torch.float64)
        w, b = train_batched(x[fit_t], y[fit_t], num_classes, lrs, wds, epochs=epochs, batch_size=batch_size,
                             seed=seed, multilabel=multilabel)
        with torch.no_grad():
            logits = torch.baddbmm(b.unsqueeze(1), x[hold_t].unsqueeze(0).expand(n, -1, -1), w).cpu()
        for t, lg, lr, wd in zip(asked, logits.numpy(), lrs.tolist(), wds.tolist()):
            s = score(lg, y_hold, metric)
            if study is not None:
                study.tell(t, s if math.isfinite(s) else -1.0)
            history.append({"lr": lr, "wd": wd, "holdout": s})
        if progress:
            best = max(h["holdout"] for h in history)
            what = "grid points" if study is None else "trials"
            progress(len(history) / trials, f"search {len(history)}/{trials} {what}, best hold-out {best:.2f}")
    best = max(history, key=lambda h: h["holdout"])
    if not math.isfinite(best["holdout"]):
        raise TaskFailed("every linear-probe trial diverged",
                         "lower the largest lr of the preset's lrs grid (--set lrs=[...])" if study is None else
                         "lower the upper end of the preset's lr_range (--set lr_range=[0.1,10])")
    return {"lr": best["lr"], "wd": best["wd"], "holdout": best["holdout"], "trials": history}


def fit_and_score(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: np.ndarray,
                  num_classes: int, *, lr: float, wd: float, metric: str, epochs: int, batch_size: int, seed: int,
                  multilabel: bool) -> dict[str, float]:
    """Retrain on all of train with the chosen (lr, wd); the task metric (and top-1 for single-label) on test.

    ``metric="mean_per_class_accuracy"`` therefore reports both single-label accuracies."""
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
