"""OKS keypoint evaluation: perfect predictions score 100, perturbed ones score exactly what the COCO APIs and
mmpose's CocoMetric give on the same files, and every bad input is a DataError."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmark.errors import DataError
from tasks.pose import mini
from tasks.pose.keypoint_eval import dataset_sigmas, evaluate_keypoints, write_results

# The CrowdPose sigmas (xtcocotools' keypoints_crowd), written out independently of mmpose's meta file.
CROWDPOSE_SIGMAS = np.array([.079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089, .079, .079])
METRIC_NAMES = {"coco": ["AP", "AP50", "AP75", "AR"],
                "crowdpose": ["AP", "AP50", "AP75", "AR", "AP_easy", "AP_medium", "AP_hard"]}
# mmpose CocoMetric's stats names for the same numbers
MM_NAMES = {"AP": "AP", "AP50": "AP .5", "AP75": "AP .75", "AR": "AR", "AP_easy": "AP(E)", "AP_medium": "AP(M)",
            "AP_hard": "AP(H)"}


@pytest.fixture(scope="module")
def gt_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kpeval")
    mini.make_coco_pose(root / "coco", seed=5, n_train=1, n_val=40)
    mini.make_crowdpose(root / "crowdpose", seed=5, n_trainval=1, n_test=30)
    return {"coco": root / "coco/annotations/person_keypoints_val2017.json",
            "crowdpose": root / "crowdpose/annotations/mmpose_crowdpose_test.json"}


def gt_annotations(path: Path) -> list[dict]:
    return json.loads(path.read_text())["annotations"]


def perturbed(path: Path) -> list[dict]:
    """A known perturbation: every keypoint shifted by (+2, -1) px, every 5th person dropped, a false positive
    (a copy 12 px off, low score) for every 4th person, keypoint scores and distinct instance scores from a fixed
    generator."""
    rng = np.random.default_rng(11)
    preds = []
    for i, ann in enumerate(gt_annotations(path)):
        k = np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        k[:, 0] += 2.0
        k[:, 1] -= 1.0
        k[:, 2] = rng.uniform(0.3, 1.0, len(k))
        if i % 5 != 3:
            preds.append({"image_id": ann["image_id"], "keypoints": k, "score": rng.uniform(0.5, 1.0)})
        if i % 4 == 0:
            fp = k.copy()
            fp[:, :2] += 12.0
            preds.append({"image_id": ann["image_id"], "keypoints": fp, "score": rng.uniform(0.05, 0.45)})
    return preds


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


@pytest.mark.mm
@pytest.mark.parametrize("kind", ["coco", "crowdpose"])
def test_ground_truth_as_predictions_scores_100(kind, gt_files, tmp_path):
    preds = [{"image_id": a["image_id"], "keypoints": a["keypoints"], "score": 1.0}
             for a in gt_annotations(gt_files[kind])]
    res = evaluate_keypoints(gt_files[kind], write_results(tmp_path / "r.json", preds), kind)
    assert list(res) == METRIC_NAMES[kind]
    assert res == {name: 100.0 for name in METRIC_NAMES[kind]}


def pycocotools_stats(ann: Path, res: Path) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def run():
        gt = COCO(str(ann))
        ev = COCOeval(gt, gt.loadRes(str(res)), "keypoints")  # pycocotools' own built-in COCO sigmas
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return ev.stats
    return quiet(run)


def xtcocotools_crowd_stats(ann: Path, res: Path) -> np.ndarray:
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    def run():
        gt = COCO(str(ann))
        ev = COCOeval(gt, gt.loadRes(str(res)), "keypoints_crowd", CROWDPOSE_SIGMAS, use_area=False)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return ev.stats
    return quiet(run)


# Exact equality: mmpose's sigmas are float32 and pycocotools' float64, so OKS values differ by ~1e-9; that moves
# no match on this data (an OKS would have to sit within 1e-9 of a threshold), so AP/AR come out bit-identical.
@pytest.mark.mm
def test_coco_perturbed_matches_pycocotools(gt_files, tmp_path):
    res_file = write_results(tmp_path / "r.json", perturbed(gt_files["coco"]))
    ours = evaluate_keypoints(gt_files["coco"], res_file, "coco")
    stats = pycocotools_stats(gt_files["coco"], res_file)
    assert ours == {"AP": stats[0] * 100, "AP50": stats[1] * 100, "AP75": stats[2] * 100, "AR": stats[5] * 100}
    assert 0 < ours["AP"] < ours["AP50"] < 100  # the perturbation is visible, not catastrophic


@pytest.mark.mm
def test_crowdpose_perturbed_matches_xtcocotools(gt_files, tmp_path):
    res_file = write_results(tmp_path / "r.json", perturbed(gt_files["crowdpose"]))
    ours = evaluate_keypoints(gt_files["crowdpose"], res_file, "crowdpose")
    s = xtcocotools_crowd_stats(gt_files["crowdpose"], res_file) * 100
    assert ours == {"AP": s[0], "AP50": s[1], "AP75": s[2], "AR": s[3], "AP_easy": s[6], "AP_medium": s[7],
                    "AP_hard": s[8]}
    assert 0 < ours["AP"] < 100 and all(0 < ours[b] < 100 for b in ("AP_easy", "AP_medium", "AP_hard"))


@pytest.mark.mm
@pytest.mark.parametrize("kind", ["coco", "crowdpose"])
def test_agrees_with_mmpose_coco_metric(kind, gt_files, tmp_path):
    from mmpose.evaluation.metrics import CocoMetric

    preds = perturbed(gt_files[kind])
    ours = evaluate_keypoints(gt_files[kind], write_results(tmp_path / "r.json", preds), kind)

    crowd = kind == "crowdpose"
    metric = quiet(CocoMetric, ann_file=str(gt_files[kind]), use_area=not crowd,
                   iou_type="keypoints_crowd" if crowd else "keypoints", score_mode="bbox", nms_mode="none",
                   outfile_prefix=str(tmp_path / "mm"))
    metric.dataset_meta = {"dataset_name": kind, "num_keypoints": len(dataset_sigmas(kind)),
                           "sigmas": dataset_sigmas(kind)}
    samples = [{"id": i, "img_id": p["image_id"], "gt_instances": {},
                "pred_instances": {"keypoints": p["keypoints"][None, :, :2],
                                   "keypoint_scores": p["keypoints"][None, :, 2],
                                   "bbox_scores": np.array([p["score"]])}} for i, p in enumerate(preds)]
    metric.process({}, samples)
    mm = quiet(metric.compute_metrics, metric.results)
    assert ours == {name: mm[MM_NAMES[name]] * 100 for name in METRIC_NAMES[kind]}


@pytest.mark.mm
def test_empty_crowd_band_is_nan(gt_files, tmp_path):
    gt = json.loads(gt_files["crowdpose"].read_text())
    gt["images"] = [img for img in gt["images"] if img["crowdIndex"] < 0.2]
    keep = {img["id"] for img in gt["images"]}
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in keep]
    ann = tmp_path / "easy_only.json"
    ann.write_text(json.dumps(gt))
    preds = [{"image_id": a["image_id"], "keypoints": a["keypoints"], "score": 1.0} for a in gt["annotations"]]
    res = evaluate_keypoints(ann, write_results(tmp_path / "r.json", preds), "crowdpose")
    assert res["AP"] == res["AP_easy"] == 100.0
    assert math.isnan(res["AP_medium"]) and math.isnan(res["AP_hard"])  # xtcocotools says -1: no GT there


# ---------------------------------------------------------------------------------------------------- bad input
def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def one_result(gt_file: Path, **override) -> list[dict]:
    ann = gt_annotations(gt_file)[0]
    return [{"image_id": ann["image_id"], "category_id": 1, "keypoints": ann["keypoints"], "score": 1.0, **override}]


def test_unknown_kind(gt_files, tmp_path):
    with pytest.raises(DataError, match="unknown keypoint evaluation kind 'mpii'"):
        evaluate_keypoints(gt_files["coco"], tmp_path / "r.json", "mpii")


def test_results_not_json(gt_files, tmp_path):
    with pytest.raises(DataError, match="is not valid JSON"):
        evaluate_keypoints(gt_files["coco"], write(tmp_path / "r.json", "[{\"image_id\": 1,"), "coco")


def test_results_missing(gt_files, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        evaluate_keypoints(gt_files["coco"], tmp_path / "nope.json", "coco")


@pytest.mark.parametrize("text, match", [("[]", "is an empty list"), ('{"a": 1}', "holds a dict, not a list"),
                                         ('[{"image_id": 1}]', "result 0 is not an")])
def test_results_wrong_shape(gt_files, tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        evaluate_keypoints(gt_files["coco"], write(tmp_path / "r.json", text), "coco")


@pytest.mark.parametrize("kind, n", [("coco", 51), ("crowdpose", 42)])
def test_results_wrong_keypoint_length(gt_files, tmp_path, kind, n):
    bad = one_result(gt_files[kind])
    bad[0]["keypoints"] = bad[0]["keypoints"][:-3]
    with pytest.raises(DataError, match=f"has {n - 3} keypoint values, expected {n}"):
        evaluate_keypoints(gt_files[kind], write(tmp_path / "r.json", json.dumps(bad)), kind)


def test_results_unknown_image_ids(gt_files, tmp_path):
    res = one_result(gt_files["coco"]) + one_result(gt_files["coco"], image_id=999_999_999) * 2
    with pytest.raises(DataError, match=r"2 results name image ids not in the ground truth \(first: 999999999\)"):
        evaluate_keypoints(gt_files["coco"], write(tmp_path / "r.json", json.dumps(res)), "coco")


def test_ground_truth_of_the_wrong_kind(gt_files, tmp_path):
    res = write(tmp_path / "r.json", json.dumps(one_result(gt_files["coco"])))
    with pytest.raises(DataError, match="lack 'crowdIndex'"):
        evaluate_keypoints(gt_files["coco"], res, "crowdpose")
    res = write(tmp_path / "r2.json", json.dumps(one_result(gt_files["crowdpose"])))
    with pytest.raises(DataError, match="lack 'area'"):
        evaluate_keypoints(gt_files["crowdpose"], res, "coco")
