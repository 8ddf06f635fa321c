"""Mini COCO-keypoints / CrowdPose data: exact real formats, determinism, mmpose loading, and the layout checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmark.errors import DataError
from tasks.pose import layout, mini

COCO_IMAGE_KEYS = {"id", "file_name", "height", "width"}
COCO_ANN_KEYS = {"id", "image_id", "category_id", "keypoints", "num_keypoints", "bbox", "area", "iscrowd",
                 "segmentation"}
CROWD_IMAGE_KEYS = {"id", "file_name", "height", "width", "crowdIndex"}
CROWD_ANN_KEYS = {"id", "image_id", "category_id", "keypoints", "num_keypoints", "bbox", "iscrowd"}


def load(path: Path):
    return json.loads(Path(path).read_text())


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pose") / "coco"
    mini.make_coco_pose(root, seed=0)
    return root


@pytest.fixture(scope="module")
def crowd_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pose") / "crowdpose"
    mini.make_crowdpose(root, seed=0)
    return root


@pytest.fixture()
def small_coco(tmp_path) -> Path:
    mini.make_coco_pose(tmp_path / "coco", seed=1, n_train=3, n_val=3)
    return tmp_path / "coco"


@pytest.fixture()
def small_crowd(tmp_path) -> Path:
    mini.make_crowdpose(tmp_path / "crowdpose", seed=1, n_trainval=3, n_test=3)
    return tmp_path / "crowdpose"


# ------------------------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("make", [lambda d, s: mini.make_coco_pose(d, seed=s, n_train=6, n_val=4),
                                  lambda d, s: mini.make_crowdpose(d, seed=s, n_trainval=6, n_test=4)],
                         ids=["coco", "crowdpose"])
def test_generators_are_deterministic(tmp_path, make):
    make(tmp_path / "a", 3)
    make(tmp_path / "b", 3)
    make(tmp_path / "c", 4)
    a, b, c = (tree_bytes(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() != c.keys() or any(a[k] != c[k] for k in a)


# -------------------------------------------------------------------------------------------------- COCO format
def check_common(images, anns, names, skeleton, cats, ann_keys, image_keys, k):
    """Checks shared by both formats; returns {image_id: [annotations]}."""
    assert cats == [{"supercategory": "person", "id": 1, "name": "person", "keypoints": list(names),
                     "skeleton": skeleton}]
    assert all(set(img) == image_keys for img in images)
    by_img = {img["id"]: [] for img in images}
    for ann in anns:
        assert set(ann) == ann_keys
        assert ann["category_id"] == 1 and ann["iscrowd"] == 0
        kps = np.array(ann["keypoints"]).reshape(k, 3)
        assert len(ann["keypoints"]) == 3 * k and all(isinstance(v, int) for v in ann["keypoints"])
        assert set(kps[:, 2]) <= {0, 1, 2}
        assert (kps[kps[:, 2] == 0, :2] == 0).all()  # not labelled -> x = y = 0
        img = next(i for i in images if i["id"] == ann["image_id"])
        lab = kps[kps[:, 2] > 0]
        assert ((lab[:, 0] >= 0) & (lab[:, 0] < img["width"]) & (lab[:, 1] >= 0) & (lab[:, 1] < img["height"])).all()
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
        by_img[ann["image_id"]].append(ann)
    assert all(1 <= len(v) <= 3 for v in by_img.values())
    return by_img


def test_coco_files_and_schema(coco_root):
    train, val = (load(coco_root / f"annotations/person_keypoints_{s}2017.json") for s in ("train", "val"))
    assert len(train["images"]) == 160 and len(val["images"]) == 40
    all_vis = []
    for split, data in (("train", train), ("val", val)):
        assert set(data) == {"info", "licenses", "images", "annotations", "categories"}
        check_common(data["images"], data["annotations"], mini.COCO_KEYPOINTS, mini.COCO_SKELETON,
                     data["categories"], COCO_ANN_KEYS, COCO_IMAGE_KEYS, 17)
        for img in data["images"]:
            assert img["file_name"] == f"{img['id']:012d}.jpg"
            assert (coco_root / f"{split}2017" / img["file_name"]).is_file()
        for ann in data["annotations"]:
            vis = ann["keypoints"][2::3]
            assert ann["num_keypoints"] == sum(v > 0 for v in vis)
            x, y, w, h = ann["bbox"]
            assert 0 < ann["area"] <= w * h
            assert ann["segmentation"] and all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
            all_vis += vis
    assert {0, 1, 2} <= set(all_vis)  # some cut by the border, some occluded
    assert not {i["id"] for i in train["images"]} & {i["id"] for i in val["images"]}
    ann_ids = [a["id"] for d in (train, val) for a in d["annotations"]]
    assert len(ann_ids) == len(set(ann_ids))
    heights = [a["bbox"][3] for a in train["annotations"]]
    assert 25 <= np.median(heights) <= 100


def test_images_are_real_jpegs_on_photo_backgrounds(coco_root, crowd_root):
    paths = sorted((coco_root / "val2017").glob("*.jpg"))[:10] + sorted((crowd_root / "images").glob("*.jpg"))[:10]
    imgs = [cv2.imread(str(p)) for p in paths]
    assert all(p.read_bytes()[:2] == b"\xff\xd8" for p in paths)
    assert all(im is not None and im.shape == (128, 128, 3) for im in imgs)
    assert len({im[:8, :8].tobytes() for im in imgs}) > 5  # backgrounds differ between images


def test_coco_detection_file(coco_root):
    val = load(coco_root / "annotations/person_keypoints_val2017.json")
    dets = load(coco_root / mini.COCO_DET)
    check_detections(val, dets)


def check_detections(gt, dets):
    assert isinstance(dets, list) and all(set(d) == {"image_id", "category_id", "bbox", "score"} for d in dets)
    ids = {img["id"] for img in gt["images"]}
    assert all(d["image_id"] in ids and d["category_id"] == 1 for d in dets)
    assert all(d["bbox"][2] > 0 and d["bbox"][3] > 0 for d in dets)
    for ann in gt["annotations"]:  # every person has a good box with a good score
        ious = [(iou(ann["bbox"], d["bbox"]), d["score"]) for d in dets if d["image_id"] == ann["image_id"]]
        best = max(ious)
        assert best[0] > 0.7 and 0.5 <= best[1] <= 1.0
    assert len(dets) > len(gt["annotations"])  # some false positives ...
    assert all(0.05 <= d["score"] <= 1.0 for d in dets)
    assert any(d["score"] < 0.4 for d in dets)  # ... with low scores


def iou(a, b) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


# ---------------------------------------------------------------------------------------------- CrowdPose format
def test_crowdpose_files_and_schema(crowd_root):
    trainval, test = (load(crowd_root / f"annotations/mmpose_crowdpose_{s}.json") for s in ("trainval", "test"))
    assert len(trainval["images"]) == 160 and len(test["images"]) == 40
    for data in (trainval, test):
        assert set(data) == {"images", "annotations", "categories"}
        by_img = check_common(data["images"], data["annotations"], mini.CROWDPOSE_CATEGORY_NAMES,
                              mini.CROWDPOSE_SKELETON, data["categories"], CROWD_ANN_KEYS, CROWD_IMAGE_KEYS, 14)
        assert all("area" not in a for a in data["annotations"])
        for ann in data["annotations"]:  # CrowdPose counts labelled joints but not head and neck
            assert ann["num_keypoints"] == sum(v > 0 for v in ann["keypoints"][2::3][:12]) > 0
        for img in data["images"]:
            assert img["file_name"] == f"{img['id']}.jpg" and (crowd_root / "images" / img["file_name"]).is_file()
            assert isinstance(img["crowdIndex"], float)
            anns = by_img[img["id"]]
            expected = mini.crowd_index([np.reshape(a["keypoints"], (14, 3)).tolist() for a in anns],
                                        [a["bbox"] for a in anns])
            assert img["crowdIndex"] == expected
            if len(anns) == 1:
                assert img["crowdIndex"] == 0.0
    assert not {i["id"] for i in trainval["images"]} & {i["id"] for i in test["images"]}
    cat = test["categories"][0]  # the real files' category block, verbatim
    assert cat["keypoints"][12:] == ["head", "neck"] and cat["skeleton"] == mini.COCO_SKELETON[:12]


def test_crowdpose_test_split_covers_all_difficulty_bands(crowd_root):
    test = load(crowd_root / "annotations/mmpose_crowdpose_test.json")
    ci = np.array([img["crowdIndex"] for img in test["images"]])
    lo, hi = mini.CROWD_BANDS
    assert (lo, hi) == (0.2, 0.8)  # xtcocotools' _summarizeKps_crowd: get_type_result(first=0.2, second=0.8)
    easy, medium, hard = (ci < lo).sum(), ((ci >= lo) & (ci < hi)).sum(), (ci >= hi).sum()
    assert min(easy, medium, hard) >= 10
    n_people = {img["id"]: 0 for img in test["images"]}
    for a in test["annotations"]:
        n_people[a["image_id"]] += 1
    assert 1 in n_people.values() and max(n_people.values()) >= 2


def test_crowdpose_detection_file(crowd_root):
    check_detections(load(crowd_root / "annotations/mmpose_crowdpose_test.json"), load(crowd_root / mini.CROWD_DET))


# ----------------------------------------------------------------------------------------------- mmpose loading
MM_CASES = {
    "coco": ("CocoDataset", "annotations/person_keypoints_{}2017.json", {"train": "train2017/", "val": "val2017/"},
             ("train", "val"), mini.COCO_DET),
    "crowdpose": ("CrowdPoseDataset", "annotations/mmpose_crowdpose_{}.json",
                  {"trainval": "images/", "test": "images/"}, ("trainval", "test"), mini.CROWD_DET),
}


@pytest.mark.mm
@pytest.mark.parametrize("kind", ["coco", "crowdpose"])
@pytest.mark.parametrize("test_mode", [False, True])
def test_mmpose_datasets_load_the_mini_data(kind, test_mode, coco_root, crowd_root):
    import mmpose.datasets as mmds

    cls_name, ann_tpl, prefixes, (train, evals), det = MM_CASES[kind]
    root = coco_root if kind == "coco" else crowd_root
    cls = getattr(mmds, cls_name)
    for split in (train, evals):
        gt = load(root / ann_tpl.format(split))
        ds = cls(ann_file=ann_tpl.format(split), data_root=str(root), data_prefix=dict(img=prefixes[split]),
                 data_mode="topdown", test_mode=test_mode, pipeline=[])
        expected = [a for a in gt["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
        assert len(ds) == len(expected) == len(gt["annotations"])
        item = ds[0]
        assert Path(item["img_path"]).is_file() and item["keypoints"].shape == (1, 17 if kind == "coco" else 14, 2)
        if kind == "crowdpose":
            assert "crowd_index" in item
    if test_mode:  # detected boxes are a test-time input only (mmpose refuses them in training mode)
        ds = cls(ann_file=ann_tpl.format(evals), bbox_file=str(root / det), data_root=str(root),
                 data_prefix=dict(img=prefixes[evals]), data_mode="topdown", test_mode=True, pipeline=[])
        dets = load(root / det)
        assert len(ds) == len(dets)
        assert sorted(float(d["bbox_score"][0]) for d in ds) == pytest.approx(sorted(d["score"] for d in dets))
    else:
        with pytest.raises(ValueError, match="test_mode"):
            cls(ann_file=ann_tpl.format(evals), bbox_file=str(root / det), data_root=str(root),
                data_prefix=dict(img=prefixes[evals]), data_mode="topdown", test_mode=False, pipeline=[])


# ------------------------------------------------------------------------------------------------------- layout
def test_layout_accepts_the_mini_data(coco_root, crowd_root):
    layout.check_coco_pose(coco_root)
    layout.check_crowdpose(crowd_root)


def test_layout_missing_annotation_file(small_coco):
    (small_coco / "annotations/person_keypoints_val2017.json").unlink()
    with pytest.raises(DataError) as e:
        layout.check_coco_pose(small_coco)
    assert "annotations/person_keypoints_val2017.json" in e.value.problem
    assert "train2017/" in e.value.problem and "expected layout" in e.value.problem  # names the whole layout
    assert "\n" not in str(e.value)


def test_layout_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        layout.check_crowdpose(tmp_path / "nowhere")


def test_layout_missing_image_folder(small_crowd):
    shutil.rmtree(small_crowd / "images")
    with pytest.raises(DataError, match=r"lacks images/"):
        layout.check_crowdpose(small_crowd)


def test_layout_json_that_does_not_parse(small_coco):
    path = small_coco / "annotations/person_keypoints_train2017.json"
    path.write_text(path.read_text()[:100])
    with pytest.raises(DataError, match="is not valid JSON") as e:
        layout.check_coco_pose(small_coco)
    assert str(path) in e.value.problem


@pytest.mark.parametrize("kind", ["coco", "crowdpose"])
def test_layout_wrong_keypoint_length(kind, small_coco, small_crowd):
    root, rel, check, n = ((small_coco, "annotations/person_keypoints_val2017.json", layout.check_coco_pose, 51)
                           if kind == "coco" else
                           (small_crowd, "annotations/mmpose_crowdpose_test.json", layout.check_crowdpose, 42))
    data = load(root / rel)
    bad = data["annotations"][1]
    bad["keypoints"] = bad["keypoints"][:-3]
    (root / rel).write_text(json.dumps(data))
    with pytest.raises(DataError) as e:
        check(root)
    assert str(root / rel) in e.value.problem and f"annotation id {bad['id']}" in e.value.problem
    assert f"has {n - 3} keypoint values, expected {n}" in e.value.problem


def test_layout_images_missing_on_disk(small_coco):
    files = sorted((small_coco / "train2017").iterdir())
    for p in files[:2]:
        p.unlink()
    with pytest.raises(DataError) as e:
        layout.check_coco_pose(small_coco)
    assert "2 of 3 images" in e.value.problem and str(files[0]) in e.value.problem


def test_layout_detection_file(small_coco, small_crowd):
    (small_coco / mini.COCO_DET).unlink()
    with pytest.raises(DataError, match="COCO_val2017_detections_AP_H_56_person.json"):
        layout.check_coco_pose(small_coco)
    layout.check_coco_pose(small_coco, det_file=None)  # GT boxes only: no detection file needed
    (small_crowd / mini.CROWD_DET).write_text('{"not": "a list"}')
    with pytest.raises(DataError, match="not a list"):
        layout.check_crowdpose(small_crowd)
