"""Caltech-101 (K12): 102 classes including BACKGROUND_Google, metric mean per-class accuracy.

Real layout (101_ObjectCategories.tar.gz from caltech-101.zip): root = the folder holding 101_ObjectCategories/,
with 101_ObjectCategories/<class>/image_NNNN.jpg in 102 class folders (31 to 800 images each). Kornblith et al.
keep BACKGROUND_Google (102 classes); torchvision drops it. Classes are the folder names in Python's sorted()
order (upper case first: BACKGROUND_Google, Faces, Faces_easy, Leopards, Motorbikes, accordion, ...).

There is no official split. The suite's fixed split, per class: sort the .jpg file names, permute them with
np.random.default_rng(zlib.crc32(<class name>.encode())).permutation, the first ``n_train(n)`` names train and
the rest test, where n_train(n) = 30 for a class of n > 30 images (every real class: 30 per class as in the
paper) and max(1, floor(3n / 4)) for smaller classes (mini or damaged copies). ``split_listing`` writes it out.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from benchmark.errors import DataError
from tasks.semantic import common, mini_images
from tasks.semantic.common import Split

LAYOUT = "root with 101_ObjectCategories/<class>/image_NNNN.jpg (102 class folders incl. BACKGROUND_Google)"
DATASET_ID = 11  # K12 order (seeds the mini generator)
TRAIN_PER_CLASS = 30


def n_train(n: int) -> int:
    """Training images of a class of ``n`` images under the suite's fixed split."""
    return TRAIN_PER_CLASS if n > TRAIN_PER_CLASS else max(1, 3 * n // 4)


def _class_files(root: Path) -> dict[str, list[str]]:
    """Class folder -> its sorted .jpg names; an empty class folder is a broken extraction."""
    top = common.require(root, "101_ObjectCategories", LAYOUT)
    files = {}
    for folder in sorted((p for p in top.iterdir() if p.is_dir()), key=lambda p: p.name):
        names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".jpg")
        if not names:
            raise DataError(f"class folder {folder} has no .jpg images (expected layout: {LAYOUT})",
                            "re-extract 101_ObjectCategories.tar.gz")
        files[folder.name] = names
    return files


def _fixed_split(root: Path) -> list[tuple[str, str, bool]]:
    """(class, file, is_train) for every image, sorted by class then file."""
    rows = []
    for cls, names in _class_files(root).items():
        order = np.random.default_rng(zlib.crc32(cls.encode())).permutation(len(names))
        train = {names[i] for i in order[:n_train(len(names))]}
        rows += [(cls, name, name in train) for name in names]
    return rows


def split_listing(root: Path) -> str:
    """The suite's fixed split as text, one "<class>/<file> train|test" line per image, for publication."""
    rows = _fixed_split(Path(root))
    return "".join(f"{cls}/{name} {'train' if is_train else 'test'}\n" for cls, name, is_train in rows)


def read(root: Path) -> tuple[Split, Split]:
    """(train, test) of Caltech-101 under the suite's fixed split, from the folder holding 101_ObjectCategories/."""
    root = Path(root)
    rows = _fixed_split(root)
    classes = sorted({cls for cls, _, _ in rows})
    index = {c: i for i, c in enumerate(classes)}

    def split(want_train: bool, name: str) -> Split:
        sel = [(cls, f) for cls, f, is_train in rows if is_train == want_train]
        return Split(classes, np.array([index[c] for c, _ in sel], dtype=np.int64),
                     paths=[root / "101_ObjectCategories" / c / f for c, f in sel], name=name)

    train, test = split(True, "k12_caltech101/train"), split(False, "k12_caltech101/test")
    common.check_classes(train, test)
    return train, test


# ------------------------------------------------------------------------------------------------ mini

MINI_CLASSES = ("BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "Motorbikes", "accordion", "airplanes",
                "anchor", "ant", "barrel")  # the first 10 real folders in sorted order
MINI_SMALL = {"ant": 20}  # one class below 31 images exercises the small-class branch of n_train


def make_mini(out: Path, seed: int) -> None:
    """A small Caltech-101 in the real layout at root ``out``: 10 classes of 36-45 images (ant: 20)."""
    out = Path(out)
    rng = np.random.default_rng([seed, DATASET_ID])
    for pool, cls in enumerate(MINI_CLASSES):
        n = MINI_SMALL.get(cls) or int(rng.integers(36, 46))
        for k, img in enumerate(mini_images.sample(pool, n, rng), 1):
            mini_images.save_jpeg(out / "101_ObjectCategories" / cls / f"image_{k:04d}.jpg", img)
