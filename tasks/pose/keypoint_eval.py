"""OKS keypoint evaluation of a COCO-format results file, on the code path of mmpose 1.3.2's ``CocoMetric``.

``CocoMetric._do_python_keypoint_eval`` does: ``xtcocotools.coco.COCO(ann_file)``, ``loadRes(results_file)``,
``xtcocotools.cocoeval.COCOeval(gt, dt, iou_type, sigmas, use_area)`` with the sigmas of the dataset's mmpose meta
file, ``params.useSegm = None``, evaluate / accumulate / summarize. This module does the same calls on a results
file already in the standard format (a JSON list of {image_id, category_id, keypoints [x, y, score]*K, score}),
so a score can be computed without a model or a runner (``CocoMetric`` itself adds its rescoring and OKS-NMS
before that point; a results file is taken as final).

* ``coco``: iouType 'keypoints', use_area=True (GT 'area'), 17 COCO sigmas → AP, AP50, AP75, AR.
* ``crowdpose``: iouType 'keypoints_crowd', use_area=False (0.53 × GT box area), 14 CrowdPose sigmas → also
  AP_easy / AP_medium / AP_hard over the images' crowdIndex bands < 0.2 / < 0.8 / >= 0.8; xtcocotools re-reads
  the GT JSON from its path for those.

Values are returned in percent. xtcocotools marks a statistic it cannot compute (no ground truth in it, e.g. an
empty crowd band) as -1; that is returned as NaN rather than -100.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.errors import DataError
from tasks.pose.layout import NUM_KEYPOINTS, load_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Kind:
    meta_file: str  # mmpose configs/_base_/datasets/<file>
    iou_type: str
    use_area: bool
    stats: dict[str, int]  # metric name -> index into COCOeval.stats


KINDS = {
    "coco": _Kind("coco.py", "keypoints", True, {"AP": 0, "AP50": 1, "AP75": 2, "AR": 5}),
    "crowdpose": _Kind("crowdpose.py", "keypoints_crowd", False,
                       {"AP": 0, "AP50": 1, "AP75": 2, "AR": 3, "AP_easy": 6, "AP_medium": 7, "AP_hard": 8}),
}


def dataset_sigmas(kind: str) -> np.ndarray:
    """The per-keypoint OKS sigmas from mmpose's dataset meta file (what CocoMetric gets as dataset_meta)."""
    import mmpose
    from mmpose.datasets.datasets.utils import parse_pose_metainfo

    # An absolute path: parse_pose_metainfo would first try a relative 'configs/...' against the CWD.
    meta = Path(mmpose.__file__).parent / ".mim" / "configs" / "_base_" / "datasets" / _kind(kind).meta_file
    return parse_pose_metainfo(dict(from_file=str(meta)))["sigmas"]


def evaluate_keypoints(ann_file: Path, results_file: Path, kind: str = "coco") -> dict[str, float]:
    """Score ``results_file`` against the GT ``ann_file``; returns {metric: percent}."""
    spec = _kind(kind)
    ann_file, results_file = Path(ann_file), Path(results_file)
    gt = load_json(ann_file, "ground-truth annotation file")
    _validate_gt(gt, ann_file, kind)
    results = load_json(results_file, "keypoint results file")
    _validate_results(results, results_file, {img["id"] for img in gt["images"]}, NUM_KEYPOINTS[kind])
    sigmas = dataset_sigmas(kind)

    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the COCO API prints its progress and summary table
        coco_gt = COCO(str(ann_file))  # a str: the crowd bands re-read the GT from this path
        coco_dt = coco_gt.loadRes(str(results_file))  # a str: loadRes takes anything else as the list itself
        ev = COCOeval(coco_gt, coco_dt, spec.iou_type, sigmas, spec.use_area)
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    log.debug("%s", printed.getvalue())
    return {name: _percent(ev.stats[i]) for name, i in spec.stats.items()}


def write_results(path: Path, preds: Iterable[Mapping]) -> Path:
    """Write predictions as a COCO keypoint results file.

    Each prediction: image_id, keypoints (K×3 or flat 3K: x, y, score), score, optional category_id (default 1).
    """
    out = []
    for p in preds:
        kps = np.asarray(p["keypoints"], dtype=np.float64).reshape(-1)
        out.append({"image_id": int(p["image_id"]), "category_id": int(p.get("category_id", 1)),
                    "keypoints": [float(v) for v in kps], "score": float(p["score"])})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out), encoding="utf-8")
    return path


def _kind(kind: str) -> _Kind:
    if kind not in KINDS:
        raise DataError(f"unknown keypoint evaluation kind {kind!r}", f"use one of: {', '.join(KINDS)}")
    return KINDS[kind]


def _percent(value: float) -> float:
    return math.nan if value < 0 else float(value) * 100.0


def _validate_gt(gt, path: Path, kind: str) -> None:
    if not isinstance(gt, dict) or not all(isinstance(gt.get(k), list) for k in ("images", "annotations")):
        raise DataError(f"{path} is not a COCO-style annotation file (no 'images' / 'annotations' lists)",
                        "pass the dataset's keypoint annotation file")
    if kind == "crowdpose" and any("crowdIndex" not in img for img in gt["images"]):
        raise DataError(f"{path}: images lack 'crowdIndex', which the CrowdPose easy/medium/hard split needs",
                        "pass a CrowdPose annotation file (mmpose_crowdpose_test.json)")
    if kind == "coco" and any("area" not in ann for ann in gt["annotations"]):
        raise DataError(f"{path}: annotations lack 'area', which COCO's OKS needs",
                        "pass a COCO keypoint annotation file, or use kind='crowdpose' for CrowdPose-style GT")


def _validate_results(results, path: Path, image_ids: set, k: int) -> None:
    if not isinstance(results, list):
        raise DataError(f"keypoint results file {path} holds a {type(results).__name__}, not a list",
                        "write a JSON list of {image_id, category_id, keypoints, score}")
    if not results:
        raise DataError(f"keypoint results file {path} is an empty list", "the model produced no predictions")
    unknown = []
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "category_id", "keypoints", "score"} <= r.keys():
            raise DataError(f"{path}: result {i} is not an {{image_id, category_id, keypoints, score}} object",
                            "write results in the COCO keypoint results format")
        if not isinstance(r["keypoints"], list) or len(r["keypoints"]) != 3 * k:
            n = len(r["keypoints"]) if isinstance(r["keypoints"], list) else type(r["keypoints"]).__name__
            raise DataError(f"{path}: result {i} (image {r['image_id']}) has {n} keypoint values, expected {3 * k} "
                            f"({k} keypoints × x, y, score)", "predict the dataset's own keypoint set")
        if r["image_id"] not in image_ids:
            unknown.append(r["image_id"])
    if unknown:
        raise DataError(f"{path}: {len(unknown)} results name image ids not in the ground truth "
                        f"(first: {unknown[0]})", "score the results against the annotation file of the same split")
