"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) for K12: the official 50,000 / 10,000 split, pixels in pickles.

Real layout: the "python version" archives unpacked into ``root`` (the folder that *contains*
``cifar-10-batches-py/`` or ``cifar-100-python/``, as for torchvision's CIFAR10/CIFAR100)::

    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch   {b"data": uint8 (N, 3072), b"labels": [int]}
    cifar-10-batches-py/batches.meta                               {b"label_names": [bytes] * 10}
    cifar-100-python/train, test                                   {b"data", b"fine_labels", b"coarse_labels"}
    cifar-100-python/meta                                          {b"fine_label_names": [bytes] * 100, ...}

Each file is a Python 2 pickle of a dict, read with ``encoding="bytes"``; ``data`` rows are the R, G, B planes of a
32x32 image (row-major), so a row reshapes to (3, 32, 32). The unpickler admits only the numpy globals these files
use, so a foreign pickle cannot run code. Metric top-1. ``CIFAR10`` / ``CIFAR100`` bundle LAYOUT, read and
make_mini for a registry that treats every dataset module alike.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from benchmark.errors import DataError
from benchmark.files import atomic_path
from tasks.semantic import mini_images
from tasks.semantic.common import Split, check_classes, require

LAYOUT_10 = "cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch, batches.meta} (python pickles)"
LAYOUT_100 = "cifar-100-python/{train, test, meta} (python pickles)"
BASE_10, BASE_100 = "cifar-10-batches-py", "cifar-100-python"
SIDE = 32


def read10(root: Path) -> tuple[Split, Split]:
    """CIFAR-10 (train = data_batch_1..5, test = test_batch); labels index batches.meta's label_names."""
    root = Path(root)
    classes = _names(_load(root, f"{BASE_10}/batches.meta", LAYOUT_10, (b"label_names",))[b"label_names"])
    train = _split(root, [f"{BASE_10}/data_batch_{i}" for i in range(1, 6)], b"labels", classes,
                   "k12_cifar10/train", LAYOUT_10)
    test = _split(root, [f"{BASE_10}/test_batch"], b"labels", classes, "k12_cifar10/test", LAYOUT_10)
    check_classes(train, test)
    return train, test


def read100(root: Path) -> tuple[Split, Split]:
    """CIFAR-100 with its 100 fine labels (the K12 task); labels index meta's fine_label_names."""
    root = Path(root)
    classes = _names(_load(root, f"{BASE_100}/meta", LAYOUT_100, (b"fine_label_names",))[b"fine_label_names"])
    train = _split(root, [f"{BASE_100}/train"], b"fine_labels", classes, "k12_cifar100/train", LAYOUT_100)
    test = _split(root, [f"{BASE_100}/test"], b"fine_labels", classes, "k12_cifar100/test", LAYOUT_100)
    check_classes(train, test)
    return train, test


class _Unpickler(pickle.Unpickler):
    """Admit only what CIFAR pickles reference: numpy arrays (and _codecs.encode, which Python 3's protocol 2
    uses for bytes). Anything else is not a CIFAR file and is refused before it can run."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        return super().find_class(module, name)


def _load(root: Path, rel: str, layout: str, keys: tuple[bytes, ...]) -> dict:
    """One CIFAR pickle as a dict holding ``keys``, or a DataError naming the file."""
    path = require(root, rel, layout)
    try:
        with open(path, "rb") as fh:
            obj = _Unpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as exc:
        raise DataError(f"{path} is not a readable CIFAR pickle ({exc})",
                        "re-download and re-extract the archive") from exc
    missing = [k.decode() for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise DataError(f"{path} is not a CIFAR file: expected a dict with keys {missing} (expected layout: {layout})",
                        "re-download and re-extract the archive")
    return obj


def _names(raw: list) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in raw]


def _split(root: Path, rels: list[str], label_key: bytes, classes: list[str], name: str, layout: str) -> Split:
    """Concatenate the batches; rows (3072,) -> HWC uint8 images."""
    data, labels = [], []
    for rel in rels:
        batch = _load(root, rel, layout, (b"data", label_key))
        rows, ys = np.asarray(batch[b"data"]), np.asarray(batch[label_key], np.int64)
        if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 3 * SIDE * SIDE or len(rows) != len(ys):
            raise DataError(f"{root / rel}: data is {rows.dtype} {rows.shape} for {len(ys)} labels, expected uint8 "
                            f"(N, {3 * SIDE * SIDE})", "re-download and re-extract the archive")
        if ys.size and (ys.min() < 0 or ys.max() >= len(classes)):
            raise DataError(f"{root / rel}: labels outside 0..{len(classes) - 1}", "re-download the archive")
        data.append(rows)
        labels.append(ys)
    images = np.concatenate(data).reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return Split(classes, np.concatenate(labels), images=np.ascontiguousarray(images), name=name)


def make_mini10(out: Path, seed: int) -> None:
    """A small CIFAR-10: 10 classes, class j gets 25 + j training (spread over the 5 batches) and 5 + j test images."""
    rng = np.random.default_rng([seed, 10])
    names = list(mini_images.POOL_CLASSES[:10])
    (train_x, train_y), (test_x, test_y) = _mini_pixels(names, rng)
    base = Path(out) / BASE_10
    base.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(len(train_y)), 5), 1):
        _dump(base / f"data_batch_{i}", _batch10(f"training batch {i} of 5", train_x[part], train_y[part], names))
    _dump(base / "test_batch", _batch10("testing batch 1 of 1", test_x, test_y, names))
    _dump(base / "batches.meta", {b"num_cases_per_batch": int(np.ceil(len(train_y) / 5)),
                                  b"label_names": [n.encode() for n in names], b"num_vis": 3 * SIDE * SIDE})


def make_mini100(out: Path, seed: int) -> None:
    """A small CIFAR-100: 20 fine classes (5 coarse groups of 4), class j gets 25 + j training and 5 + j test images."""
    rng = np.random.default_rng([seed, 100])
    names = list(mini_images.POOL_CLASSES[:20])
    coarse_names = [f"group_{k}".encode() for k in range(5)]
    base = Path(out) / BASE_100
    base.mkdir(parents=True, exist_ok=True)
    for which, (x, y) in zip(("train", "test"), _mini_pixels(names, rng)):
        _dump(base / which, {b"filenames": _filenames(y, names), b"batch_label": f"{which}ing batch 1 of 1".encode(),
                             b"fine_labels": y.tolist(), b"coarse_labels": (y // 4).tolist(), b"data": x})
    _dump(base / "meta", {b"fine_label_names": [n.encode() for n in names], b"coarse_label_names": coarse_names})


def _mini_pixels(names: list[str], rng: np.random.Generator):
    """((train rows, labels), (test rows, labels)) in CIFAR's row format, classes interleaved as in the real files."""
    splits = {"train": ([], []), "test": ([], [])}
    for j, pool in enumerate(mini_images.class_pool(len(names))):
        images = mini_images.sample(pool, 30 + 2 * j, rng)
        for which, chunk in (("train", images[:25 + j]), ("test", images[25 + j:])):
            splits[which][0].extend(img.transpose(2, 0, 1).reshape(-1) for img in chunk)
            splits[which][1].extend([j] * len(chunk))
    out = []
    for rows, labels in splits.values():
        order = rng.permutation(len(labels))
        out.append((np.stack(rows)[order].astype(np.uint8), np.array(labels, np.int64)[order]))
    return out


def _batch10(label: str, rows: np.ndarray, labels: np.ndarray, names: list[str]) -> dict:
    return {b"batch_label": label.encode(), b"labels": labels.tolist(), b"data": rows,
            b"filenames": _filenames(labels, names)}


def _filenames(labels: np.ndarray, names: list[str]) -> list[bytes]:
    return [f"{names[y]}_s_{i:06d}.png".encode() for i, y in enumerate(labels)]


def _dump(path: Path, obj: dict) -> None:
    """Protocol 2, like the real (Python 2) files; write-then-rename so a half-written batch never exists."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


class CIFAR10:
    LAYOUT = LAYOUT_10
    read = staticmethod(read10)
    make_mini = staticmethod(make_mini10)


class CIFAR100:
    LAYOUT = LAYOUT_100
    read = staticmethod(read100)
    make_mini = staticmethod(make_mini100)
