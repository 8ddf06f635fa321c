"""The one data contract of the semantic tasks: a split = class names + image sources + labels.

Every dataset reader (tasks/semantic/readers.py) turns a dataset folder in its *real* on-disk layout into two
``Split`` objects, ``train`` (the protocol's training split, e.g. DTD train1+val1, Flowers-102 train+val) and
``test``. Images stay on disk (paths) except where the real format stores pixels in arrays (CIFAR's pickles),
where ``images`` is a uint8 array (N, H, W, 3). Both the linear probe and the fine-tune engine consume ``Split``
only, so a new dataset is one reader function plus a spec.

Labels: single-label datasets use an int64 vector (N,) of indices into ``classes``; multi-label VOC2007 uses an
int8 matrix (N, C) with the file values 1 (present), -1 (absent), 0 (difficult: ignored by the metric).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from benchmark.errors import DataError

log = logging.getLogger(__name__)

# More unreadable images than this fraction of a split is a broken dataset, not bad luck.
MAX_CORRUPT_FRACTION = 0.01


@dataclass
class Split:
    classes: list[str]
    labels: np.ndarray                      # int64 (N,) or int8 (N, C) for multi-label
    paths: list[Path] | None = None         # image files, or
    images: np.ndarray | None = None        # uint8 (N, H, W, 3) pixels (CIFAR)
    name: str = ""                          # e.g. "k12_dtd/train", for messages
    notes: dict = field(default_factory=dict)  # reader facts worth reporting, e.g. {"missing_images": 3}

    def __post_init__(self):
        n = len(self.paths) if self.paths is not None else len(self.images)
        if len(self.labels) != n:
            raise ValueError(f"{self.name}: {n} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    def load(self, i: int) -> Image.Image:
        """Image ``i`` as an RGB PIL image; raises CorruptImage when the file cannot be decoded."""
        if self.images is not None:
            return Image.fromarray(self.images[i]).convert("RGB")
        path = self.paths[i]
        try:
            with open(path, "rb") as fh:
                img = Image.open(io.BytesIO(fh.read()))
                img.load()
            return img.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            raise CorruptImage(path, exc) from exc

    def subset(self, idx: Sequence[int] | np.ndarray) -> Split:
        idx = np.asarray(idx, dtype=np.int64)
        return Split(self.classes, self.labels[idx],
                     paths=[self.paths[i] for i in idx] if self.paths is not None else None,
                     images=self.images[idx] if self.images is not None else None,
                     name=self.name, notes=dict(self.notes))

    def class_ids(self) -> np.ndarray:
        """A single class id per image for stratification (multi-label: the first present label, else -1)."""
        if not self.multilabel:
            return self.labels
        present = self.labels == 1
        return np.where(present.any(1), present.argmax(1), -1)


class CorruptImage(Exception):
    def __init__(self, path: Path, cause: Exception):
        self.path, self.cause = path, cause
        super().__init__(f"{path}: {cause}")


class CorruptCounter:
    """Count images that fail to decode; warn for each, raise DataError once a split passes the threshold."""

    def __init__(self, split_name: str, total: int, max_fraction: float = MAX_CORRUPT_FRACTION):
        self.split_name, self.total, self.max_fraction = split_name, total, max_fraction
        self.bad: list[Path] = []

    def add(self, exc: CorruptImage) -> None:
        self.bad.append(exc.path)
        log.warning("skipping unreadable image %s (%s)", exc.path, exc.cause)
        if len(self.bad) > max(1, self.max_fraction * self.total):
            raise DataError(f"{self.split_name}: {len(self.bad)} of {self.total} images cannot be decoded "
                            f"(e.g. {self.bad[0]}), more than {self.max_fraction:.0%}",
                            "re-download or re-extract the dataset")


def require(root: Path, rel: str, layout: str, docs: str = "docs/datasets.md") -> Path:
    """``root / rel`` or a DataError naming the missing file and the expected layout."""
    path = root / rel
    if not path.exists():
        raise DataError(f"{path} is missing (expected layout: {layout})",
                        f"point --data-root at the dataset folder in this layout; see {docs}")
    return path


def lines(path: Path) -> list[str]:
    """The non-empty, stripped lines of a listing file."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def check_class_dir(folder: Path, layout: str, fix: str) -> None:
    """A class folder missing or empty means a partial extraction: fail now, not mid-training."""
    if not folder.is_dir() or next(folder.iterdir(), None) is None:
        raise DataError(f"class folder {folder} is missing or empty (expected layout: {layout})", fix)


def check_classes(train: Split, test: Split) -> None:
    """Both splits must cover the same classes: a class without test images or training images is a broken split."""
    if train.multilabel:
        absent_train = [c for j, c in enumerate(train.classes) if not (train.labels[:, j] == 1).any()]
        absent_test = [c for j, c in enumerate(test.classes) if not (test.labels[:, j] == 1).any()]
    else:
        absent_train = [train.classes[c] for c in sorted(set(range(len(train.classes))) - set(train.labels.tolist()))]
        absent_test = [test.classes[c] for c in sorted(set(range(len(test.classes))) - set(test.labels.tolist()))]
    for which, absent, split in (("training", absent_train, train), ("test", absent_test, test)):
        if absent:
            raise DataError(f"{split.name}: {len(absent)} of {len(split.classes)} classes have no {which} images "
                            f"(e.g. {', '.join(map(str, absent[:3]))})",
                            "check the split files / class folders of the dataset (or use a larger --subset)")
