"""Oxford Flowers-102 (K12): 102 flower classes, metric mean per-class accuracy.

Real layout (102flowers.tgz extracts to jpg/; the two .mat files sit beside it, torchvision's flowers-102/): root
with jpg/image_NNNNN.jpg (5 digits, ids 1..8189), imagelabels.mat ('labels': 1 x 8189, class 1..102 of image id
i at position i-1) and setid.mat ('trnid', 'valid', 'tstid': 1 x n image ids, 1-based; 1,020 / 1,020 / 6,149).
K12 trains on trnid + valid and tests on tstid. The files hold no class names: "class_001" ... "class_102".
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import scipy.io

from benchmark.errors import DataError
from tasks.semantic import common, mini_images
from tasks.semantic.common import Split

LAYOUT = ("root with jpg/image_NNNNN.jpg (5-digit 1-based ids), imagelabels.mat ('labels' 1..102) and setid.mat "
          "('trnid', 'valid', 'tstid')")
DATASET_ID = 12  # K12 order (seeds the mini generator)
SPLITS = {"train": ("trnid", "valid"), "test": ("tstid",)}
FIX = "re-download imagelabels.mat and setid.mat from the Oxford Flowers-102 page"


def _load_mat(root: Path, name: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named variables of a .mat file as flat int64 vectors."""
    path = common.require(root, name, LAYOUT)
    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, OSError, TypeError, scipy.io.matlab.MatReadError) as exc:
        raise DataError(f"{path} is not a readable MATLAB file ({exc})", FIX) from exc
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DataError(f"{path} has no variable {missing[0]!r} (expected layout: {LAYOUT})", FIX)
    return {k: np.asarray(mat[k]).ravel().astype(np.int64) for k in keys}


def _split(root: Path, ids: np.ndarray, labels: np.ndarray, classes: list[str], name: str) -> Split:
    if ids.size and (ids.min() < 1 or ids.max() > len(labels)):
        raise DataError(f"{root / 'setid.mat'}: image ids outside 1..{len(labels)} (imagelabels.mat)", FIX)
    return Split(classes, labels[ids - 1] - 1, paths=[root / "jpg" / f"image_{i:05d}.jpg" for i in ids], name=name)


def read(root: Path) -> tuple[Split, Split]:
    """(trnid + valid, tstid) of Flowers-102 from the folder holding jpg/ and the .mat files."""
    root = Path(root)
    labels = _load_mat(root, "imagelabels.mat", ("labels",))["labels"]
    setid = _load_mat(root, "setid.mat", ("trnid", "valid", "tstid"))
    if labels.size == 0 or labels.min() < 1:
        raise DataError(f"{root / 'imagelabels.mat'}: labels must be classes 1..102", FIX)
    common.require(root, "jpg", LAYOUT)
    classes = [f"class_{c:03d}" for c in range(1, int(labels.max()) + 1)]
    train, test = (_split(root, np.concatenate([setid[k] for k in keys]), labels, classes, f"k12_flowers102/{split}")
                   for split, keys in SPLITS.items())
    common.check_classes(train, test)
    return train, test


# ------------------------------------------------------------------------------------------------ mini

MINI_CLASSES = 10
MINI_PER_SPLIT = {"trnid": 15, "valid": 15, "tstid": 10}  # per class; the real trnid / valid have 10 per class
MAT_HEADER = b"MATLAB 5.0 MAT-file, Flowers-102 mini generator"


def _save_mat(path: Path, variables: dict[str, np.ndarray]) -> None:
    """scipy's savemat with a fixed header text (it writes the current time there) so the bytes are reproducible."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables)
    data = bytearray(buf.getvalue())
    data[:116] = MAT_HEADER.ljust(116, b" ")
    path.write_bytes(bytes(data))


def make_mini(out: Path, seed: int) -> None:
    """A small Flowers-102 in the real layout at root ``out``: 10 classes, 15 trnid + 15 valid + 10 tstid each."""
    out = Path(out)
    rng = np.random.default_rng([seed, DATASET_ID])
    per_class = sum(MINI_PER_SPLIT.values())
    ids = rng.permutation(np.arange(1, MINI_CLASSES * per_class + 1)).reshape(MINI_CLASSES, per_class)
    labels = np.zeros(ids.size, dtype=np.uint8)
    for c in range(MINI_CLASSES):
        labels[ids[c] - 1] = c + 1
        for i, img in zip(ids[c], mini_images.sample(c, per_class, rng)):
            mini_images.save_jpeg(out / "jpg" / f"image_{i:05d}.jpg", img)
    bounds = np.cumsum([0, *MINI_PER_SPLIT.values()])
    setid = {k: np.sort(ids[:, bounds[j]:bounds[j + 1]].ravel()).astype(np.uint16)[None]
             for j, k in enumerate(MINI_PER_SPLIT)}
    _save_mat(out / "imagelabels.mat", {"labels": labels[None]})
    _save_mat(out / "setid.mat", setid)
