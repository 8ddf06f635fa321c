"""Stanford Cars (Krause et al. 2013) for K12: 196 car models, the official 8,144 / 8,041 split.

Real layout: the original archives (cars_train.tgz, cars_test.tgz, car_devkit.tgz) and the separately published
``cars_test_annos_withlabels.mat`` under ``root/stanford_cars/`` (``root`` *contains* ``stanford_cars/``), exactly
as torchvision's StanfordCars expects::

    stanford_cars/devkit/cars_meta.mat            class_names: 1x196 cell of strings, the label order
    stanford_cars/devkit/cars_train_annos.mat     annotations: 1xN struct (bbox_x1, bbox_y1, bbox_x2, bbox_y2,
                                                  class, fname); class is 1-based
    stanford_cars/cars_test_annos_withlabels.mat  the same struct for the test images
    stanford_cars/cars_train/<fname>.jpg, stanford_cars/cars_test/<fname>.jpg   (00001.jpg, ...)

The .mat files are MATLAB v5, read with scipy.io.loadmat. Metric top-1.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import scipy.io as sio

from benchmark.errors import DataError
from tasks.semantic import mini_images
from tasks.semantic.common import Split, check_classes, require

LAYOUT = ("stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, "
          "cars_train/<fname>.jpg, cars_test/<fname>.jpg}")
BASE = "stanford_cars"
FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
DATASET_ID = 196
MINI_CLASSES = 10


def read(root: Path) -> tuple[Split, Split]:
    """(train, test); labels are the .mat's 1-based class minus 1, indexing cars_meta.mat's class_names."""
    root = Path(root)
    classes = [str(c) for c in np.atleast_1d(_loadmat(root, f"{BASE}/devkit/cars_meta.mat", "class_names"))]
    train = _split(root, f"{BASE}/devkit/cars_train_annos.mat", f"{BASE}/cars_train", classes, "train")
    test = _split(root, f"{BASE}/cars_test_annos_withlabels.mat", f"{BASE}/cars_test", classes, "test")
    check_classes(train, test)
    return train, test


def _loadmat(root: Path, rel: str, key: str) -> np.ndarray:
    path = require(root, rel, LAYOUT)
    try:
        mat = sio.loadmat(path, squeeze_me=True)
    except (ValueError, OSError, TypeError, NotImplementedError) as exc:  # scipy's MatReadError is a ValueError
        raise DataError(f"{path} is not a readable .mat file ({exc})", "re-download the Stanford Cars files") from exc
    if key not in mat:
        raise DataError(f"{path} has no variable {key!r} (expected layout: {LAYOUT})",
                        "re-download the Stanford Cars files")
    return mat[key]


def _split(root: Path, annos: str, image_dir: str, classes: list[str], which: str) -> Split:
    records = np.atleast_1d(_loadmat(root, annos, "annotations"))
    if records.dtype.names is None or not {"class", "fname"} <= set(records.dtype.names):
        raise DataError(f"{root / annos}: annotations lack the fields 'class' and 'fname'",
                        "use cars_test_annos_withlabels.mat for the test split (cars_test_annos.mat has no labels)")
    labels = records["class"].astype(np.int64) - 1
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(f"{root / annos}: class values outside 1..{len(classes)}",
                        "re-download the Stanford Cars files")
    folder = require(root, image_dir, LAYOUT)
    return Split(classes, labels, paths=[folder / str(f) for f in records["fname"]], name=f"k12_cars/{which}")


def make_mini(out: Path, seed: int) -> None:
    """A small Stanford Cars in the real layout: class j has 25 + j training and 5 + j test images, numbered
    00001.jpg ... in shuffled class order as in the real folders; .mat files written with savemat in the real struct
    layout. Images first, the .mat files last, so an interrupted run leaves no complete-looking annotation set.
    """
    base = Path(out) / BASE
    rng = np.random.default_rng([seed, DATASET_ID])
    names = [f"Pool {n.replace('_', ' ').title()} 2012" for n in mini_images.POOL_CLASSES[:MINI_CLASSES]]
    items = {"train": [], "test": []}
    for j, pool in enumerate(mini_images.class_pool(len(names))):
        images = mini_images.sample(pool, 30 + 2 * j, rng)
        items["train"] += [(j, img) for img in images[:25 + j]]
        items["test"] += [(j, img) for img in images[25 + j:]]
    annos = {}
    for which, pairs in items.items():
        records = np.zeros((1, len(pairs)), dtype=[(f, "O") for f in FIELDS])
        for k, i in enumerate(rng.permutation(len(pairs))):
            j, img = pairs[i]
            fname = f"{k + 1:05d}.jpg"
            mini_images.save_jpeg(base / f"cars_{which}" / fname, img)
            (x1, x2), (y1, y2) = np.sort(rng.integers(0, mini_images.SIZE, (2, 2))).tolist()
            records[0, k] = (*(np.array([[v]], np.uint16) for v in (x1, y1, x2, y2)), np.array([[j + 1]], np.uint8),
                             fname)
        annos[which] = records
    _savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    _savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": annos["train"]})
    _savemat(base / "cars_test_annos_withlabels.mat", {"annotations": annos["test"]})


def _savemat(path: Path, variables: dict) -> None:
    """savemat with a fixed 116-byte header text (scipy stamps the time there), so same seed = same bytes."""
    buf = io.BytesIO()
    sio.savemat(buf, variables)
    data = bytearray(buf.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, Platform: posix, written by the benchmark's mini-data writer".ljust(116)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
