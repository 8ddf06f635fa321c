"""Food-101 (Bossard et al. 2014) for K12: the official split, 750 training and 250 test images per class.

Real layout: ``food-101.tar.gz`` unpacked into ``root`` (the folder that *contains* ``food-101/``, as for
torchvision's Food101)::

    food-101/meta/classes.txt     one class folder name per line (apple_pie, ...): the label order
    food-101/meta/train.txt       "<class>/<id>" per line, no extension (75,750 lines)
    food-101/meta/test.txt        the same for the test split (25,250 lines)
    food-101/images/<class>/<id>.jpg

The archive also carries meta/{labels.txt, train.json, test.json} with the same split; the text files are read.
101 classes, metric top-1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmark.errors import DataError
from tasks.semantic import mini_images
from tasks.semantic.common import Split, check_class_dir, check_classes, lines, require

LAYOUT = "food-101/{meta/classes.txt, meta/train.txt, meta/test.txt, images/<class>/<id>.jpg}"
BASE = "food-101"
DATASET_ID = 101  # seeds the mini data: default_rng([seed, DATASET_ID])
MINI_CLASSES = 10


def read(root: Path) -> tuple[Split, Split]:
    """(train, test) of the official split; labels index meta/classes.txt."""
    root = Path(root)
    classes = lines(require(root, f"{BASE}/meta/classes.txt", LAYOUT))
    for name in classes:
        check_class_dir(root / BASE / "images" / name, LAYOUT, "re-extract food-101.tar.gz")
    train, test = (_split(root, which, classes) for which in ("train", "test"))
    check_classes(train, test)
    return train, test


def _split(root: Path, which: str, classes: list[str]) -> Split:
    listing = require(root, f"{BASE}/meta/{which}.txt", LAYOUT)
    index = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for n, entry in enumerate(lines(listing), 1):
        name = entry.split("/")[0]
        if name not in index:
            raise DataError(f"{listing}, line {n}: class {name!r} is not in meta/classes.txt",
                            "re-extract food-101.tar.gz (the meta files do not match)")
        paths.append(root / BASE / "images" / f"{entry}.jpg")
        labels.append(index[name])
    return Split(classes, np.array(labels, np.int64), paths=paths, name=f"k12_food101/{which}")


def make_mini(out: Path, seed: int) -> None:
    """A small Food-101 in the real layout: class j gets 25 + j training and 5 + j test images (32x32 JPEG).

    Images come first and the meta files last, so an interrupted run leaves no complete-looking listing.
    """
    out = Path(out)
    rng = np.random.default_rng([seed, DATASET_ID])
    classes = list(mini_images.POOL_CLASSES[:MINI_CLASSES])
    splits: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for j, (name, pool) in enumerate(zip(classes, mini_images.class_pool(len(classes)))):
        n_train, n_test = 25 + j, 5 + j
        entries = [f"{name}/{i}" for i in rng.choice(4_000_000, size=n_train + n_test, replace=False)]
        for entry, rgb in zip(entries, mini_images.sample(pool, len(entries), rng)):
            mini_images.save_jpeg(out / BASE / "images" / f"{entry}.jpg", rgb)
        splits["train"][name], splits["test"][name] = sorted(entries[:n_train]), sorted(entries[n_train:])
    meta = out / BASE / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "labels.txt").write_text("".join(f"{c.replace('_', ' ').capitalize()}\n" for c in classes))
    for which, by_class in splits.items():
        (meta / f"{which}.json").write_text(json.dumps(by_class))
        (meta / f"{which}.txt").write_text("".join(f"{e}\n" for c in classes for e in by_class[c]))
    (meta / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
