"""PASCAL VOC2007 classification (K12): 20 labels per image, metric 11-point mAP (``metrics.map11``).

Real layout (VOCtrainval_06-Nov-2007.tar + VOCtest_06-Nov-2007.tar extracted into one VOCdevkit; the test
annotations are public): root = VOCdevkit/VOC2007 with ImageSets/Main/<cls>_trainval.txt and <cls>_test.txt, one
line "<6-digit id> <flag>" per image of the split in every class file (flag 1 present, -1 absent, 0 difficult),
and JPEGImages/<id>.jpg. train = trainval (5,011 images), test = test (4,952). Labels are the (N, 20) int8 matrix
of the flags, difficult kept as 0 so that the metric can ignore them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from benchmark.errors import DataError
from tasks.semantic import common, mini_images
from tasks.semantic.common import Split

CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
           "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
LAYOUT = ("root = VOCdevkit/VOC2007 with ImageSets/Main/<class>_trainval.txt and <class>_test.txt (lines "
          "'<6-digit id> <1|-1|0>') for the 20 VOC classes, and JPEGImages/<id>.jpg")
DATASET_ID = 8  # K12 order: Food-101 1 ... VOC2007 8 (seeds the mini generator)


def _read_flags(path: Path) -> dict[str, int]:
    """One ImageSets/Main/<cls>_<split>.txt: image id -> flag, in file order."""
    flags: dict[str, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("1", "-1", "0"):
            raise DataError(f"{path}:{n}: expected '<id> <1|-1|0>', got {line!r}", "re-extract the VOC2007 tars")
        flags[parts[0]] = int(parts[1])
    return flags


def _read_split(root: Path, split: str, name: str) -> Split:
    """The (N, 20) flag matrix of one split; every class file must list the same images."""
    per_class = [_read_flags(common.require(root, f"ImageSets/Main/{c}_{split}.txt", LAYOUT)) for c in CLASSES]
    ids = list(per_class[0])
    for c, flags in zip(CLASSES, per_class):
        if flags.keys() != set(ids):
            raise DataError(f"{root}/ImageSets/Main/{c}_{split}.txt lists other images than "
                            f"{CLASSES[0]}_{split}.txt", "re-extract the VOC2007 tars (trainval and test)")
    labels = np.array([[flags[i] for flags in per_class] for i in ids], dtype=np.int8).reshape(len(ids), len(CLASSES))
    common.require(root, f"JPEGImages/{ids[0]}.jpg" if ids else "JPEGImages", LAYOUT)
    return Split(list(CLASSES), labels, paths=[root / "JPEGImages" / f"{i}.jpg" for i in ids], name=name)


def read(root: Path) -> tuple[Split, Split]:
    """(trainval, test) of VOC2007 from root = VOCdevkit/VOC2007."""
    root = Path(root)
    train = _read_split(root, "trainval", "k12_voc2007/train")
    test = _read_split(root, "test", "k12_voc2007/test")
    common.check_classes(train, test)
    return train, test


# ------------------------------------------------------------------------------------------------ mini

MINI_PER_CLASS = {"trainval": 20, "test": 8}  # images whose first label is the class; half get a second label
MINI_DIFFICULT = 0.25                          # chance that a second label is marked difficult (0)


def _compose(a: np.ndarray, b: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """One pool image, or two at half size side by side (each at a random height) on the first one's background."""
    if b is None:
        return a
    half = mini_images.SIZE // 2
    canvas = np.empty_like(a)
    canvas[:] = a[0, 0]
    for x, img in ((0, a), (half, b)):
        y = rng.integers(0, half + 1)
        canvas[y:y + half, x:x + half] = cv2.resize(img, (half, half), interpolation=cv2.INTER_AREA)
    return canvas


def _mini_split(out: Path, split: str, ids: list[str], rng: np.random.Generator) -> None:
    """Images and the 20 class files of one split; class c uses pool class c."""
    flags = np.full((len(ids), len(CLASSES)), -1, dtype=np.int8)
    per_class = MINI_PER_CLASS[split]
    for k, image_id in enumerate(ids):
        first = k // per_class
        second = int(rng.choice([c for c in range(len(CLASSES)) if c != first])) if rng.random() < 0.5 else None
        flags[k, first] = 1
        a = mini_images.sample(first, 1, rng)[0]
        b = None
        if second is not None:
            flags[k, second] = 0 if rng.random() < MINI_DIFFICULT else 1
            b = mini_images.sample(second, 1, rng)[0]
        mini_images.save_jpeg(out / "JPEGImages" / f"{image_id}.jpg", _compose(a, b, rng))
    order = np.argsort(ids)  # the real class files list the images in id order
    main = out / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    for j, c in enumerate(CLASSES):
        # the devkit writes '%s %2d': "000005 -1", "000012  1", "000017  0"
        (main / f"{c}_{split}.txt").write_text("".join(f"{ids[k]} {flags[k, j]:2d}\n" for k in order))


def make_mini(out: Path, seed: int) -> None:
    """A small VOC2007 in the real layout at root ``out``: 20 classes, 400 trainval / 160 test images, 1-2 labels."""
    out = Path(out)
    rng = np.random.default_rng([seed, DATASET_ID])
    n = {split: per * len(CLASSES) for split, per in MINI_PER_CLASS.items()}
    numbers = rng.permutation(np.arange(1, 10_000))[:sum(n.values())]  # disjoint 6-digit ids, as in VOC2007
    ids = [f"{i:06d}" for i in numbers]
    _mini_split(out, "trainval", ids[:n["trainval"]], rng)
    _mini_split(out, "test", ids[n["trainval"]:], rng)
