"""Official single-object tracking metrics: GOT-10k (AO, SR0.5, SR0.75) and LaSOT (success AUC, precision,
normalized precision).

Boxes are float64 arrays of shape (N, 4) holding ``x, y, w, h`` (top-left corner, width, height), one row per
frame, frame 1 first. Every score is returned in percent (AO 70.8, not 0.708).

IoU (:func:`iou`)
    Continuous coordinates: a box covers ``[x, x + w) x [y, y + h)``. ``IoU = I / (U + eps)`` with
    ``eps = np.finfo(float).eps``, clipped to [0, 1], so two zero-area boxes give 0 (not NaN) and rounding can never
    push a perfect box above 1. This is the GOT-10k toolkit's ``rect_iou``; the LaSOT MATLAB toolkit's pixel
    convention (right edge ``x + w - 1``, intersection ``+ 1``) gives the same intersection, so one function serves
    both. With ``bound=(W, H)`` both boxes are first clipped exactly as the GOT-10k toolkit does it:
    ``x <- clip(x, 0, W)``, ``w <- clip(w, 0, W - x_clipped)`` (same for y, h). Note that a box starting left of
    the image is *shifted* to x = 0 with its width kept (then capped at W), not intersected with the image:
    (-10, 0, 20, 10) becomes (0, 0, 20, 10). That is the official rule and we keep it.

GOT-10k (:func:`got10k_scores`, the toolkit's ``ExperimentGOT10k.report`` on val)
    * Frame 1 (the initialisation) is never scored.
    * Of frames 2..N only those with ``cover > 0`` count (cover.label, 0 = target fully occluded or out of view;
      absence.label is not read by the toolkit). Without ``cover`` the ``visible`` mask is used instead (on
      GOT-10k ``absence == 1`` exactly where ``cover == 0``); without either, every frame after the first counts.
    * Boxes are clipped to the image with ``resolution`` (W, H) from meta_info.ini; without it nothing is clipped.
    * The IoUs of all counted frames of all sequences, and of all repetitions of a sequence (several
      :class:`SequenceResult` with the same name), are pooled: AO = mean IoU over the pooled frames (a long
      sequence weighs more; this is not the mean of per-sequence AOs), SR50 = fraction with IoU > 0.5, SR75 =
      fraction with IoU > 0.75 (strictly greater; the toolkit reports only SR0.5, SR0.75 uses the same rule).
    * ``per_sequence`` is each sequence's AO over its own pooled frames (NaN for a sequence with no counted frame,
      as the toolkit's mean of nothing).
    * Failed trackers: the toolkit refuses a result whose shape differs from the ground truth (as we do, with a
      BenchmarkError) and has no special case for NaN: a NaN box gives a NaN IoU, which makes AO (and that
      sequence's AO) NaN while SR counts the frame as a failure (NaN > t is false). We mirror that, so a NaN
      shows up loudly as AO = nan; :func:`tasks.tracking.submission.write_got10k_submission` refuses NaN boxes.
      A tracker that lost the target should report a box anyway (a zero-size box scores IoU 0).

LaSOT (:func:`lasot_scores`, the LaSOT MATLAB toolkit, with pytracking's analysis code as the second reference)
    Per sequence of N frames:

    * A prediction longer than the ground truth is cut to N frames (both toolkits do this, for monkey-17); a
      shorter one is refused.
    * Invalid predictions in frames 2..N (a NaN, or ``w <= 0`` or ``h <= 0``) are replaced, in frame order, by the
      previous frame's (already replaced) prediction, as the MATLAB toolkit does (pytracking raises on NaN and on
      negative sizes instead). Frame 2 copies the tracker's own frame-1 output, as in both toolkits.
    * Then frame 1 is set to the ground truth.
    * A frame is valid when the target is visible (``visible``: not full_occlusion and not out_of_view) and its
      ground truth has ``w > 0`` and ``h > 0``. Invalid frames are failures for every measure at every threshold
      (IoU = -1, centre error = inf); the ground truth of absent frames is never used. Every rate is divided by
      ALL N frames, so absent frames lower the score.
    * success(t) = fraction of the N frames with IoU > t, for the 21 thresholds t = 0, 0.05, ..., 1
      (``np.linspace(0, 1, 21)``; the MATLAB ``0:0.05:1`` differs only in the last bit).
    * Centre = ``(x + (w - 1) / 2, y + (h - 1) / 2)`` (the MATLAB toolkit's; pytracking uses the same). The -1/2
      cancels in every difference, so the ``x + w / 2`` convention gives identical errors.
    * precision(d) = fraction of the N frames with centre error <= d pixels, d = 0, 1, ..., 50.
    * normalized precision(d) = fraction of the N frames with ``|| c_pred / wh_gt - c_gt / wh_gt || <= d``
      (each centre divided per axis by the ground-truth w and h), d = 0, 0.01, ..., 0.50.

    Over the dataset every curve is the mean of the per-sequence curves (each sequence weighs the same).
    ``success_auc`` = mean of the 21-point success curve; ``precision`` = the precision curve at 20 px;
    ``norm_precision`` = the normalized curve at 0.20 (the standard number, not the mean over the curve).

    Deviations from the MATLAB toolkit, on edge cases only (the IoU's eps and [0, 1] clip change nothing but the
    last bits and keep frame 1 from passing t = 1 by rounding):
    MATLAB marks a visible frame invalid when any of its ground-truth x, y, w, h is <= 0 (so a box on the image's
    left or top edge at 0 counts as a failure for IoU but as a success for precision, its error being set to -1);
    we follow pytracking: x, y <= 0 are scored normally and a frame whose ground-truth w or h is <= 0 fails every
    measure (pytracking fails it for IoU and precision but, by the same -1 trick, not for normalized precision).
    MATLAB drops a sequence whose whole curve is 0 from the mean; with frame 1 set to the ground truth that needs
    frame 1 to be absent, so we never drop one. NaN ground truth is refused (both toolkits reject or never meet it).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from benchmark.errors import BenchmarkError

SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)
PRECISION_THRESHOLDS = np.arange(51, dtype=np.float64)  # pixels
NORM_PRECISION_THRESHOLDS = np.arange(51, dtype=np.float64) / 100.0
PRECISION_AT = 20  # index of 20 px in PRECISION_THRESHOLDS and of 0.20 in NORM_PRECISION_THRESHOLDS
_EPS = np.finfo(float).eps


@dataclass
class SequenceResult:
    """One tracker run on one sequence. Repetitions of a non-deterministic tracker (GOT-10k) are several results
    with the same ``name``."""

    name: str
    pred: np.ndarray  # (N, 4) x, y, w, h
    gt: np.ndarray  # (N, 4)
    visible: np.ndarray | None = None  # (N,) bool: LaSOT not (full_occlusion or out_of_view); GOT-10k absence == 0
    cover: np.ndarray | None = None  # (N,) int 0..8 (GOT-10k cover.label)
    resolution: tuple[int, int] | None = None  # (W, H) from GOT-10k's meta_info.ini


def _boxes(a, what: str) -> np.ndarray:
    arr = np.array(a, dtype=np.float64, copy=True)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise BenchmarkError(f"{what}: expected an (N, 4) array of x, y, w, h, got shape {arr.shape}",
                             "pass one row per frame, frame 1 first")
    return arr


def _frame_mask(values, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise BenchmarkError(f"{what}: expected one value per frame ({n}), got shape {arr.shape}",
                             "pass the per-frame labels of the same sequence as the ground truth")
    return arr


def iou(pred: np.ndarray, gt: np.ndarray, bound: tuple[float, float] | None = None) -> np.ndarray:
    """Per-frame IoU (N,) of two (N, 4) box arrays in continuous coordinates; with ``bound=(W, H)`` both are first
    clipped to the image the GOT-10k way (see the module docstring). The inputs are not modified."""
    a = _boxes(pred, "iou: pred")
    b = _boxes(gt, "iou: gt")
    if a.shape != b.shape:
        raise BenchmarkError(f"iou: pred has {len(a)} boxes and gt {len(b)}", "pass one box per frame for both")
    if bound is not None:
        width, height = float(bound[0]), float(bound[1])
        for r in (a, b):
            r[:, 0] = np.clip(r[:, 0], 0, width)
            r[:, 1] = np.clip(r[:, 1], 0, height)
            r[:, 2] = np.clip(r[:, 2], 0, width - r[:, 0])
            r[:, 3] = np.clip(r[:, 3], 0, height - r[:, 1])
    iw = np.maximum(np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0)
    ih = np.maximum(np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0)
    inter = iw * ih
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.clip(inter / (union + _EPS), 0.0, 1.0)


def centers(boxes: np.ndarray) -> np.ndarray:
    """Box centres (N, 2) in the LaSOT toolkit's pixel convention: x + (w - 1) / 2, y + (h - 1) / 2."""
    b = np.asarray(boxes, dtype=np.float64)
    return b[:, :2] + (b[:, 2:] - 1.0) / 2.0


def _mean_or_nan(values: np.ndarray) -> float:
    # the toolkit's np.mean of an empty array is NaN (with a RuntimeWarning we do not want in logs)
    return float(np.mean(values)) if values.size else float("nan")


def got10k_scores(results: list[SequenceResult]) -> dict:
    """GOT-10k AO, SR50, SR75 in percent over the pooled frames of all results, plus ``per_sequence`` {name: AO%}
    and ``frames`` (how many frames were pooled)."""
    if not results:
        raise BenchmarkError("got10k_scores: no results", "pass one SequenceResult per sequence and repetition")
    per_seq: dict[str, list[np.ndarray]] = defaultdict(list)
    for r in results:
        pred = _boxes(r.pred, f"{r.name}: pred")
        gt = _boxes(r.gt, f"{r.name}: gt")
        if pred.shape != gt.shape:
            raise BenchmarkError(f"{r.name}: {len(pred)} predicted boxes for {len(gt)} ground-truth frames",
                                 "write one box per frame, frame 1 (the initialisation box) included")
        n = len(gt)
        if r.cover is not None:
            keep = _frame_mask(r.cover, n, f"{r.name}: cover")[1:] > 0
        elif r.visible is not None:
            keep = _frame_mask(r.visible, n, f"{r.name}: visible")[1:].astype(bool)
        else:
            keep = np.ones(max(n - 1, 0), dtype=bool)
        per_seq[r.name].append(iou(pred[1:], gt[1:], bound=r.resolution)[keep])

    seq_ious = {name: np.concatenate(chunks) for name, chunks in per_seq.items()}
    pooled = np.concatenate(list(seq_ious.values()))
    if pooled.size == 0:
        raise BenchmarkError("got10k_scores: no frame to score (every frame after the first has cover 0)",
                             "check that cover.label was read for the right sequences")
    return {
        "AO": 100.0 * float(np.mean(pooled)),
        "SR50": 100.0 * float(np.mean(pooled > 0.5)),
        "SR75": 100.0 * float(np.mean(pooled > 0.75)),
        "per_sequence": {name: 100.0 * _mean_or_nan(v) for name, v in seq_ious.items()},
        "frames": int(pooled.size),
    }


def _carry_forward_invalid(pred: np.ndarray) -> np.ndarray:
    """Replace each invalid box of frames 2..N (NaN, w <= 0 or h <= 0) by the previous frame's box."""
    with np.errstate(invalid="ignore"):
        bad = np.isnan(pred).any(axis=1) | (pred[:, 2] <= 0) | (pred[:, 3] <= 0)
    bad[0] = False  # frame 1 is the source of last resort, whatever it holds (it is replaced by the GT later)
    source = np.where(bad, 0, np.arange(len(pred)))
    return pred[np.maximum.accumulate(source)]


def _lasot_sequence(r: SequenceResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame IoU, centre error (px) and normalized centre error of one sequence; failures are -1 / inf."""
    gt = _boxes(r.gt, f"{r.name}: gt")
    pred = _boxes(r.pred, f"{r.name}: pred")
    n = len(gt)
    if n == 0:
        raise BenchmarkError(f"{r.name}: empty ground truth", "pass the sequence's groundtruth.txt boxes")
    if len(pred) < n:
        raise BenchmarkError(f"{r.name}: {len(pred)} predicted boxes for {n} ground-truth frames",
                             "write one box per frame, frame 1 included")
    if np.isnan(gt).any():
        raise BenchmarkError(f"{r.name}: NaN in the ground truth", "check the groundtruth.txt parser")
    pred = _carry_forward_invalid(pred[:n])
    pred[0] = gt[0]
    visible = np.ones(n, bool) if r.visible is None else _frame_mask(r.visible, n, f"{r.name}: visible").astype(bool)
    valid = visible & (gt[:, 2] > 0) & (gt[:, 3] > 0)

    overlap = np.full(n, -1.0)
    err = np.full(n, np.inf)
    norm_err = np.full(n, np.inf)
    if valid.any():
        p, g = pred[valid], gt[valid]
        overlap[valid] = iou(p, g)
        cp, cg = centers(p), centers(g)
        err[valid] = np.sqrt(((cp - cg) ** 2).sum(axis=1))
        wh = g[:, 2:]
        norm_err[valid] = np.sqrt(((cp / wh - cg / wh) ** 2).sum(axis=1))
    # NaN (a NaN frame 1 carried forward) fails every comparison below, i.e. counts as a failure
    return overlap, err, norm_err


def lasot_scores(results: list[SequenceResult]) -> dict:
    """LaSOT success AUC, precision at 20 px and normalized precision at 0.20, in percent, plus the curves (percent,
    with their thresholds) and ``per_sequence`` {name: success AUC%}."""
    if not results:
        raise BenchmarkError("lasot_scores: no results", "pass one SequenceResult per sequence")
    names = [r.name for r in results]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise BenchmarkError(f"lasot_scores: sequences given more than once: {', '.join(dup[:5])}",
                             "LaSOT is one run per sequence: pass each sequence once")
    succ, prec, norm = [], [], []
    for r in results:
        overlap, err, norm_err = _lasot_sequence(r)
        succ.append((overlap[:, None] > SUCCESS_THRESHOLDS[None, :]).mean(axis=0))
        prec.append((err[:, None] <= PRECISION_THRESHOLDS[None, :]).mean(axis=0))
        norm.append((norm_err[:, None] <= NORM_PRECISION_THRESHOLDS[None, :]).mean(axis=0))
    succ_curve = np.mean(succ, axis=0)
    prec_curve = np.mean(prec, axis=0)
    norm_curve = np.mean(norm, axis=0)
    return {
        "success_auc": 100.0 * float(np.mean(succ_curve)),
        "precision": 100.0 * float(prec_curve[PRECISION_AT]),
        "norm_precision": 100.0 * float(norm_curve[PRECISION_AT]),
        "curves": {
            "success": {"thresholds": SUCCESS_THRESHOLDS.tolist(), "values": (100.0 * succ_curve).tolist()},
            "precision": {"thresholds": PRECISION_THRESHOLDS.tolist(), "values": (100.0 * prec_curve).tolist()},
            "norm_precision": {"thresholds": NORM_PRECISION_THRESHOLDS.tolist(),
                               "values": (100.0 * norm_curve).tolist()},
        },
        "per_sequence": {r.name: 100.0 * float(np.mean(s)) for r, s in zip(results, succ)},
    }
