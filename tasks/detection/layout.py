"""Cheap checks that a folder holds COCO 2017 instances as mmdet's CocoDataset reads it, before any training starts.

Every problem is raised as one ``DataError(problem, fix)`` line: a missing annotation file or image folder (naming
the expected layout), JSON that does not parse or is not a COCO instances file, category names outside COCO's 80
(mmdet maps categories to its classes by name), annotations without ``area`` or ``bbox`` or with an empty or missing
``segmentation`` (mmdet's loading fails on each of these), and images the JSON lists but the folder lacks (each folder
is listed once with ``os.scandir``, so train2017's 118k images cost one directory read; no image is decoded).

Degenerate annotations (``area`` ≤ 0, or polygons that are all empty or under 3 points) are refused only when they
are more than one in ``DEGENERATE_PER`` of a file's annotations: the official instances_train2017.json has two (ids
918 and 2206849, zero-height boxes with area 0), and mmdet skips or ignores such annotations, but a file full of
them trains on nothing.
"""

from __future__ import annotations

import json
import os
from numbers import Real
from pathlib import Path

from benchmark.errors import DataError

SPLITS = (("annotations/instances_train2017.json", "train2017"), ("annotations/instances_val2017.json", "val2017"))
DEGENERATE_PER = 10_000
DOCS = "see docs/datasets.md (COCO instances)"
FIX = f"download COCO 2017 (images and annotations_trainval2017) into this layout, or use --data mini; {DOCS}"
DAMAGED = f"use the official annotation file (or one written in its format); {DOCS}"


def check_coco_instances(root: Path) -> None:
    """Raise DataError unless ``root`` holds COCO 2017 instances: annotation files, image folders and their images."""
    root = Path(root)
    required = [a for a, _ in SPLITS] + [f"{d}/" for _, d in SPLITS]
    missing = [p for p in required if not (root / p).exists()]
    if missing:
        where = f"{root} does not exist" if not root.is_dir() else f"{root} lacks {', '.join(missing)}"
        raise DataError(f"COCO instances data incomplete: {where} (expected layout under {root}: "
                        f"{', '.join(required)})", FIX)
    coco_names = _coco_class_names()
    for ann_rel, img_rel in SPLITS:
        path = root / ann_rel
        data = _load_json(path)
        _check_json(path, data, coco_names)
        _check_images(path, data["images"], root / img_rel)


def _coco_class_names() -> frozenset[str]:
    from mmdet.datasets import CocoDataset  # heavy (torch, mmcv): imported only when a check runs

    return frozenset(CocoDataset.METAINFO["classes"])


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"COCO annotation file {path} is not valid JSON ({exc})",
                        f"the file is truncated or damaged: download or write it again; {DOCS}") from exc


def _check_json(path: Path, data, coco_names: frozenset[str]) -> None:
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise DataError(f"{path} is not a COCO instances file (no 'images' / 'annotations' / 'categories' lists)",
                        DAMAGED)
    cats = data["categories"]
    if not all(isinstance(c, dict) and "id" in c and "name" in c for c in cats):
        raise DataError(f"{path}: a category lacks 'id' or 'name'", DAMAGED)
    foreign = sorted({str(c["name"]) for c in cats} - coco_names)
    if foreign:
        raise DataError(f"{path}: categories {', '.join(map(repr, foreign))} are not among COCO's 80 class names "
                        "(mmdet's CocoDataset maps categories to its classes by name)",
                        f"rename them to COCO's names (e.g. 'sports ball', 'stop sign') or drop them; {DOCS}")
    degenerate = []
    for ann in data["annotations"]:
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        if not isinstance(ann, dict) or not isinstance(ann.get("area"), Real):
            raise DataError(f"{path}: annotation id {ann_id} has no numeric 'area' (mmdet reads it for every "
                            "annotation)", f"add the segmentation's pixel area; {DOCS}")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(f"{path}: annotation id {ann_id} has no 'bbox' [x, y, w, h]", DAMAGED)
        seg = ann.get("segmentation")
        if isinstance(seg, dict) and "counts" in seg:  # RLE, as crowd regions have
            usable = True
        elif isinstance(seg, list) and seg and all(isinstance(p, list) for p in seg):
            usable = any(len(p) >= 6 and len(p) % 2 == 0 for p in seg)  # mmdet drops the other polygons
        else:  # mmdet then keeps the instance without a mask, and its mask loading fails
            raise DataError(f"{path}: annotation id {ann_id} has an empty or missing 'segmentation' (expected a "
                            "list of polygons [[x1, y1, x2, y2, ...]] or an RLE)", DAMAGED)
        if not usable or ann["area"] <= 0:  # mmdet skips or ignores these
            degenerate.append(ann_id)
    if len(degenerate) > len(data["annotations"]) // DEGENERATE_PER:
        raise DataError(f"{path}: {len(degenerate)} of {len(data['annotations'])} annotations have area ≤ 0 or only "
                        f"empty polygons (none of 3 points; first: annotation id {degenerate[0]})",
                        f"write each object's segmentation polygons and their pixel area; {DOCS}")


def _check_images(ann_path: Path, images: list, folder: Path) -> None:
    with os.scandir(folder) as it:
        names = {entry.name for entry in it}
    listed = (str(img.get("file_name", "")) if isinstance(img, dict) else "" for img in images)
    missing = [name for name in listed if name not in names]
    if missing:
        raise DataError(f"{len(missing)} of {len(images)} images listed in {ann_path} are missing from {folder} "
                        f"(first: {folder / missing[0]})",
                        f"finish extracting the image archive into that folder, or use --data mini; {DOCS}")
