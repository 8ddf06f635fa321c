"""FGVC-Aircraft 2013b (Maji et al. 2013) for K12: the 100 *variants* (e.g. "737-300"), train = trainval.

Real layout: ``fgvc-aircraft-2013b.tar.gz`` unpacked into ``root`` (the folder that *contains*
``fgvc-aircraft-2013b/``, as for torchvision's FGVCAircraft)::

    fgvc-aircraft-2013b/data/variants.txt                   one variant name per line: the label order
    fgvc-aircraft-2013b/data/images_variant_trainval.txt    "<7-digit id> <variant>" per line (6,667 lines);
    fgvc-aircraft-2013b/data/images_variant_test.txt        the variant may contain spaces ("Cessna 172")
    fgvc-aircraft-2013b/data/images/<id>.jpg

The archive also has the family / manufacturer levels and the train / val halves; K12 uses variant, trainval vs
test. Metric: mean per-class accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.errors import DataError
from tasks.semantic import mini_images
from tasks.semantic.common import Split, check_classes, lines, require

LAYOUT = ("fgvc-aircraft-2013b/data/{variants.txt, images_variant_trainval.txt, images_variant_test.txt, "
          "images/<id>.jpg}")
DATA = "fgvc-aircraft-2013b/data"
DATASET_ID = 2013
# Real variant names, spaces and slashes included, for the mini data (mapped to the first 10 pool classes).
MINI_VARIANTS = ("707-320", "737-300", "A300B4", "ATR-72", "Cessna 172", "DC-3", "F/A-18", "Falcon 2000",
                 "Tu-134", "Yak-42")


def read(root: Path) -> tuple[Split, Split]:
    """(trainval, test) at the variant level; labels index data/variants.txt."""
    root = Path(root)
    classes = lines(require(root, f"{DATA}/variants.txt", LAYOUT))
    images = require(root, f"{DATA}/images", LAYOUT)
    train = _split(root, "trainval", classes, images, "k12_aircraft/train")
    test = _split(root, "test", classes, images, "k12_aircraft/test")
    check_classes(train, test)
    return train, test


def _split(root: Path, which: str, classes: list[str], images: Path, name: str) -> Split:
    listing = require(root, f"{DATA}/images_variant_{which}.txt", LAYOUT)
    index = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for n, line in enumerate(lines(listing), 1):
        image_id, _, variant = line.partition(" ")
        if variant not in index:
            raise DataError(f"{listing}, line {n}: variant {variant!r} is not in variants.txt",
                            "re-extract fgvc-aircraft-2013b.tar.gz (the list files do not match)")
        paths.append(images / f"{image_id}.jpg")
        labels.append(index[variant])
    return Split(classes, np.array(labels, np.int64), paths=paths, name=name)


def make_mini(out: Path, seed: int) -> None:
    """A small FGVC-Aircraft in the real layout: variant j has 25 + j trainval and 5 + j test images with random
    7-digit ids. Images first, the list files last, so an interrupted run leaves no complete-looking listing.
    """
    data = Path(out) / DATA
    rng = np.random.default_rng([seed, DATASET_ID])
    counts = [(25 + j, 5 + j) for j in range(len(MINI_VARIANTS))]
    ids = iter(rng.choice(10**7, size=sum(map(sum, counts)), replace=False))
    listed = {"trainval": [], "test": []}
    for j, pool in enumerate(mini_images.class_pool(len(MINI_VARIANTS))):
        n_train, n_test = counts[j]
        lines = [f"{next(ids):07d} {MINI_VARIANTS[j]}" for _ in range(n_train + n_test)]
        for line, rgb in zip(lines, mini_images.sample(pool, len(lines), rng)):
            mini_images.save_jpeg(data / "images" / f"{line.split()[0]}.jpg", rgb)
        listed["trainval"] += lines[:n_train]
        listed["test"] += lines[n_train:]
    for which, lines in listed.items():
        (data / f"images_variant_{which}.txt").write_text("".join(f"{x}\n" for x in sorted(lines)))
    (data / "variants.txt").write_text("".join(f"{v}\n" for v in MINI_VARIANTS))
