"""Cheap checks that a COCO-keypoints or CrowdPose folder has the real layout, before any training starts.

Every problem is raised as one ``DataError(problem, fix)`` line: a missing annotation file / image folder /
detection-box file (naming the expected layout), JSON that does not parse, keypoint arrays of the wrong length,
and images that the JSON references but the disk lacks. Each image folder is listed once with ``os.scandir`` into
a set, so checking COCO train2017's 118k images costs one directory read, not 118k ``stat`` calls. The JSON files
are parsed in full (the keypoint check needs them); that is the slow part for COCO train (~240 MB).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmark.errors import DataError

NUM_KEYPOINTS = {"coco": 17, "crowdpose": 14}
COCO_SPLITS = (("annotations/person_keypoints_train2017.json", "train2017"),
               ("annotations/person_keypoints_val2017.json", "val2017"))
CROWDPOSE_SPLITS = (("annotations/mmpose_crowdpose_trainval.json", "images"),
                    ("annotations/mmpose_crowdpose_test.json", "images"))
COCO_DET = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"
CROWDPOSE_DET = "annotations/det_for_crowd_test_0.1_0.5.json"
FIX = "download the dataset into this layout, point --data-root at its parent folder, or use --data mini"


def check_coco_pose(root: Path, det_file: str | None = COCO_DET) -> None:
    """Raise DataError unless ``root`` holds COCO keypoints 2017 (+ the person detection file if ``det_file``)."""
    _check(Path(root), "COCO keypoints", COCO_SPLITS, det_file, NUM_KEYPOINTS["coco"])


def check_crowdpose(root: Path, det_file: str | None = CROWDPOSE_DET) -> None:
    """Raise DataError unless ``root`` holds CrowdPose in mmpose's layout (+ the detection file if ``det_file``)."""
    _check(Path(root), "CrowdPose", CROWDPOSE_SPLITS, det_file, NUM_KEYPOINTS["crowdpose"])


def load_json(path: Path, what: str):
    """Parse a JSON file, turning a parse failure into a DataError that names the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError as exc:
        raise DataError(f"{what} {path} does not exist", "check the path") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {path} is not valid JSON ({exc})",
                        "the file is truncated or damaged: download or write it again") from exc


def _check(root: Path, name: str, splits, det_file: str | None, k: int) -> None:
    required = [a for a, _ in splits] + sorted({f"{d}/" for _, d in splits}) + ([det_file] if det_file else [])
    missing = [p for p in required if not (root / p).exists()]
    if missing:
        where = f"{root} does not exist" if not root.is_dir() else f"{root} lacks {', '.join(missing)}"
        raise DataError(f"{name} data incomplete: {where} (expected layout under {root}: {', '.join(required)})",
                        FIX)
    listings: dict[str, set[str]] = {}
    for ann_rel, img_rel in splits:
        data = load_json(root / ann_rel, f"{name} annotation file")
        _check_coco_json(root / ann_rel, data, k)
        if img_rel not in listings:
            listings[img_rel] = _listing(root / img_rel)
        _check_images(root / ann_rel, data["images"], root / img_rel, listings[img_rel])
    if det_file:
        dets = load_json(root / det_file, f"{name} detection-box file")
        if not isinstance(dets, list):
            raise DataError(f"detection-box file {root / det_file} holds a {type(dets).__name__}, not a list",
                            "it must be a JSON list of {image_id, category_id, bbox [x, y, w, h], score}")


def _check_coco_json(path: Path, data, k: int) -> None:
    if not isinstance(data, dict) or not all(isinstance(data.get(key), list) for key in ("images", "annotations")):
        raise DataError(f"{path} is not a COCO-style annotation file (no 'images' / 'annotations' lists)",
                        "use the original keypoint annotation file of the dataset")
    for ann in data["annotations"]:
        kps = ann.get("keypoints") if isinstance(ann, dict) else None
        if not isinstance(kps, list) or len(kps) != 3 * k:
            got = f"{len(kps)} keypoint values" if isinstance(kps, list) else "no keypoint list"
            ann_id = ann.get("id") if isinstance(ann, dict) else None
            raise DataError(f"{path}: annotation id {ann_id} has {got}, expected {3 * k} ({k} keypoints × x, y, v)",
                            "this file belongs to another dataset or was damaged; use the original annotation file")


def _listing(folder: Path) -> set[str]:
    with os.scandir(folder) as it:
        return {entry.name for entry in it}


def _check_images(ann_path: Path, images: list, folder: Path, names: set[str]) -> None:
    missing = []
    for img in images:
        fname = str(img.get("file_name", "")) if isinstance(img, dict) else ""
        # file names with sub-folders are not in the flat listing: stat those few
        present = (folder / fname).is_file() if "/" in fname else fname in names
        if not present:
            missing.append(fname)
    if missing:
        raise DataError(f"{len(missing)} of {len(images)} images referenced by {ann_path} are missing from {folder} "
                        f"(first: {folder / missing[0]})",
                        "finish extracting the image archive into that folder, or use --data mini")
