"""iNaturalist 2018: 8,142 species, train on train2018 (437,513 images), metric top-1 on val2018 (24,426).

Real layout (train_val2018.tar.gz, train2018.json.tar.gz, val2018.json.tar.gz extracted into one folder): root with
train2018.json and val2018.json (COCO-like: images [{id, file_name, width, height, ...}], annotations [{id,
image_id, category_id}], categories [{id, name, supercategory, ...}]) and the images at the path given by
file_name relative to the root, e.g. train_val2018/Plantae/7477/<hash>.jpg. torchvision's INaturalist('2018')
ignores the JSONs and cannot tell train from val, hence this reader. Labels are the category id's index among
the sorted category ids of train2018.json (some copies of val2018.json lack the categories).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmark.errors import DataError
from tasks.semantic import common, mini_images
from tasks.semantic.common import Split

LAYOUT = ("root with train2018.json, val2018.json (COCO-like: images, annotations, categories) and the images at "
          "their file_name relative to the root, e.g. train_val2018/<supercategory>/<category id>/<file>.jpg")
DATASET_ID = 13  # after the 12 K12 datasets (seeds the mini generator)
FIX = "re-extract train2018.json.tar.gz / val2018.json.tar.gz of iNaturalist 2018"


def _load(root: Path, name: str, keys: tuple[str, ...]) -> dict:
    """A JSON file of the root that must hold ``keys``."""
    path = common.require(root, name, LAYOUT)
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc})", FIX) from exc
    missing = [k for k in keys if k not in data]
    if missing:
        raise DataError(f"{path} has no {missing[0]!r} list (expected layout: {LAYOUT})", FIX)
    return data


def _categories(train: dict) -> tuple[list[str], dict[int, int]]:
    """Class names and category id -> label, in sorted category id order."""
    cats = sorted(train["categories"], key=lambda c: c["id"])
    return [str(c.get("name", c["id"])) for c in cats], {c["id"]: i for i, c in enumerate(cats)}


def _split(root: Path, data: dict, name: str, file: str, classes: list[str], index: dict[int, int]) -> Split:
    """Every annotated image of one JSON, in the order of its images list."""
    file_names = {im["id"]: im["file_name"] for im in data["images"]}
    label_of: dict[int, int] = {}
    for ann in data["annotations"]:
        if ann["image_id"] not in file_names:
            raise DataError(f"{root / file}: annotation {ann.get('id')} points to image {ann['image_id']}, "
                            "which has no entry in 'images'", FIX)
        if ann["category_id"] not in index:
            raise DataError(f"{root / file}: annotation {ann.get('id')} has category {ann['category_id']}, "
                            "which is not in the categories of train2018.json", FIX)
        label_of[ann["image_id"]] = index[ann["category_id"]]
    ids = [i for i in file_names if i in label_of]
    split = Split(classes, np.array([label_of[i] for i in ids], dtype=np.int64),
                  paths=[root / file_names[i] for i in ids], name=name)
    if len(ids) < len(file_names):
        split.notes["unannotated_images"] = len(file_names) - len(ids)
    return split


def read(root: Path) -> tuple[Split, Split]:
    """(train2018, val2018) of iNaturalist 2018 from the folder holding the JSONs and train_val2018/."""
    root = Path(root)
    train_json = _load(root, "train2018.json", ("images", "annotations", "categories"))
    val_json = _load(root, "val2018.json", ("images", "annotations"))
    try:
        classes, index = _categories(train_json)
        train = _split(root, train_json, "inat18/train", "train2018.json", classes, index)
        test = _split(root, val_json, "inat18/val", "val2018.json", classes, index)
    except (KeyError, TypeError) as exc:
        raise DataError(f"{root}: an entry of train2018.json / val2018.json lacks a field ({exc})", FIX) from None
    common.check_classes(train, test)
    return train, test


# ------------------------------------------------------------------------------------------------ mini

MINI_SUPER = ("Plantae", "Insecta", "Aves", "Reptilia", "Mammalia", "Fungi", "Amphibia", "Mollusca", "Animalia",
              "Arachnida")
MINI_PER_SPLIT = {"train2018": 30, "val2018": 10}


def _mini_json(images: list[dict], annotations: list[dict], categories: list[dict]) -> str:
    return json.dumps({"info": {"year": 2018, "description": "iNat18 mini (benchmark generator)"},
                       "images": images, "annotations": annotations, "categories": categories,
                       "licenses": [{"id": 0, "name": "CC BY 4.0", "url": ""}]})


def make_mini(out: Path, seed: int) -> None:
    """A small iNat18 in the real layout at root ``out``: 10 categories with sparse ids, 30 train + 10 val each."""
    out = Path(out)
    rng = np.random.default_rng([seed, DATASET_ID])
    cat_ids = np.sort(rng.choice(8142, size=len(MINI_SUPER), replace=False)).tolist()
    categories = [{"id": cid, "name": mini_images.POOL_CLASSES[k], "supercategory": MINI_SUPER[k]}
                  for k, cid in enumerate(cat_ids)]
    next_id = 0
    for split, n in MINI_PER_SPLIT.items():
        images, annotations = [], []
        for k, cat in enumerate(categories):
            for img in mini_images.sample(k, n, rng):
                rel = f"train_val2018/{cat['supercategory']}/{cat['id']}/{rng.bytes(16).hex()}.jpg"
                mini_images.save_jpeg(out / rel, img)
                images.append({"id": next_id, "file_name": rel, "width": img.shape[1], "height": img.shape[0],
                               "license": 0, "rights_holder": "mini"})
                annotations.append({"id": next_id, "image_id": next_id, "category_id": cat["id"]})
                next_id += 1
        (out / f"{split}.json").write_text(_mini_json(images, annotations, categories))
