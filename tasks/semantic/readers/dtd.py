"""Describable Textures (DTD), split 1 (K12): 47 texture classes, metric top-1.

Real layout (dtd-r1.0.1.tar.gz extracts to dtd/): root = dtd/ with images/<class>/<class>_NNNN.jpg (47 class
folders, 120 images each) and labels/train1.txt, val1.txt, test1.txt, one line "<class>/<file>.jpg" per image
(40 per class in each). K12 trains on train1 + val1 and tests on test1. Classes are the image folder names in
alphabetical order, as torchvision's DTD.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.errors import DataError
from tasks.semantic import common, mini_images
from tasks.semantic.common import Split

LAYOUT = ("root = dtd/ with images/<class>/<file>.jpg (47 class folders) and labels/train1.txt, val1.txt, "
          "test1.txt (lines '<class>/<file>.jpg')")
DATASET_ID = 9  # K12 order (seeds the mini generator)
SPLITS = {"train": ("train1", "val1"), "test": ("test1",)}


def _classes(root: Path) -> list[str]:
    """The class folder names under images/, sorted; an empty folder is a broken extraction."""
    images = common.require(root, "images", LAYOUT)
    classes = sorted(p.name for p in images.iterdir() if p.is_dir())
    for c in classes:
        if not any((images / c).glob("*.jpg")):
            raise DataError(f"class folder {images / c} has no .jpg images (expected layout: {LAYOUT})",
                            "re-extract dtd-r1.0.1.tar.gz")
    return classes


def _read_split(root: Path, files: tuple[str, ...], classes: list[str], name: str) -> Split:
    """The images listed in labels/<file>.txt for each of ``files``, labelled by their folder."""
    index = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    for f in files:
        listing = common.require(root, f"labels/{f}.txt", LAYOUT)
        for n, line in enumerate(listing.read_text().splitlines(), 1):
            rel = line.strip()
            if not rel:
                continue
            cls = rel.split("/")[0]
            if cls not in index:
                raise DataError(f"{listing}:{n}: {rel!r} is not in a class folder of {root / 'images'}",
                                "re-extract dtd-r1.0.1.tar.gz (images and labels from the same archive)")
            paths.append(root / "images" / rel)
            labels.append(index[cls])
    return Split(classes, np.array(labels, dtype=np.int64), paths=paths, name=name)


def read(root: Path) -> tuple[Split, Split]:
    """(train1 + val1, test1) of DTD from root = the extracted dtd/ folder."""
    root = Path(root)
    classes = _classes(root)
    train, test = (_read_split(root, files, classes, f"k12_dtd/{split}") for split, files in SPLITS.items())
    common.check_classes(train, test)
    return train, test


# ------------------------------------------------------------------------------------------------ mini

MINI_CLASSES = ("banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked",
                "crosshatched", "crystalline")  # the first 10 real classes
MINI_PER_SPLIT = {"train1": 15, "val1": 15, "test1": 10}


def make_mini(out: Path, seed: int) -> None:
    """A small DTD in the real layout at root ``out``: 10 classes, 15 train1 + 15 val1 + 10 test1 images each."""
    out = Path(out)
    rng = np.random.default_rng([seed, DATASET_ID])
    lines: dict[str, list[str]] = {f: [] for f in MINI_PER_SPLIT}
    per_class = sum(MINI_PER_SPLIT.values())
    for pool, cls in enumerate(MINI_CLASSES):
        numbers = np.sort(rng.choice(np.arange(1, 300), size=per_class, replace=False))  # real numbers have gaps
        names = [f"{cls}/{cls}_{k:04d}.jpg" for k in numbers]
        for rel, img in zip(names, mini_images.sample(pool, per_class, rng)):
            mini_images.save_jpeg(out / "images" / rel, img)
        order = rng.permutation(per_class)
        start = 0
        for f, n in MINI_PER_SPLIT.items():
            lines[f] += sorted(names[i] for i in order[start:start + n])
            start += n
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for f, rows in lines.items():
        (out / "labels" / f"{f}.txt").write_text("".join(r + "\n" for r in rows))
