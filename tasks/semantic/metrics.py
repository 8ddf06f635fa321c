"""The K12 / CoG / iNat metrics, in percent (0..100).

* ``top1``: plain accuracy (Food-101, CIFAR, Birdsnap, SUN397, Cars, DTD, iNat18, CoG).
* ``mean_per_class_accuracy``: accuracy per class, then the unweighted mean over the classes that occur in ``y``
  (Aircraft, Pets, Caltech-101, Flowers-102): small classes count as much as large ones.
* ``map11``: PASCAL VOC2007 11-point interpolated average precision (VOCevalcls.m of the devkit), the mean over
  the 20 labels. sklearn's ``average_precision_score`` is the non-interpolated AP and gives different numbers.
"""

from __future__ import annotations

import numpy as np

# Recall thresholds 0, 0.1, ..., 1.0 as the nearest doubles to k/10, so that a recall of exactly k/10 (tp / npos is
# correctly rounded too) reaches threshold k/10. np.arange(0, 1.1, 0.1) gives 0.30000000000000004 and would not.
RECALL_POINTS = np.arange(11) / 10


def _as_ids(pred: np.ndarray) -> np.ndarray:
    """Predicted class ids (N,) from ids or from scores (N, C)."""
    pred = np.asarray(pred)
    return pred.argmax(1) if pred.ndim == 2 else pred


def top1(pred: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy in percent; ``pred`` is class ids (N,) or scores (N, C)."""
    return float(100.0 * np.mean(_as_ids(pred) == np.asarray(y)))


def mean_per_class_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean over the classes present in ``y`` of the per-class accuracy, in percent."""
    pred, y = _as_ids(pred), np.asarray(y)
    return float(100.0 * np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def ap11(scores: np.ndarray, labels: np.ndarray) -> float:
    """VOC2007 11-point AP of one class (0..1); labels 1 present, -1 absent, 0 difficult (ignored); NaN if no positive.

    As VOCevalcls.m: rank by descending score (stable on ties), precision at each rank, then for each recall
    threshold t the maximum precision at recall >= t (0 where recall never reaches t), averaged over the 11 t.
    """
    keep = labels != 0                      # difficult samples count neither as hits nor as false alarms
    scores, positive = np.asarray(scores, np.float64)[keep], labels[keep] > 0
    n_pos = positive.sum()
    if n_pos == 0:
        return float("nan")
    hits = positive[np.argsort(-scores, kind="stable")]
    tp = np.cumsum(hits)
    recall, precision = tp / n_pos, tp / np.arange(1, len(hits) + 1)
    return float(np.mean([precision[recall >= t].max(initial=0.0) for t in RECALL_POINTS]))


def map11(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """VOC2007 mAP in percent and the per-class 11-point APs in percent.

    scores: (N, C) float; labels: (N, C) with 1 / -1 / 0 (difficult) as in ImageSets/Main/<cls>_test.txt. A class
    without any positive sample has AP NaN and is left out of the mean.
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be (N, C)")
    aps = 100.0 * np.array([ap11(scores[:, j], labels[:, j]) for j in range(labels.shape[1])])
    if np.isnan(aps).all():
        raise ValueError("no class has a positive sample: mAP is undefined")
    return float(np.nanmean(aps)), aps
