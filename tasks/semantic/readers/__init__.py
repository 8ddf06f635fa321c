"""Dataset readers of the semantic tasks, by the name a spec's ``dataset.reader`` uses; imported lazily.

A reader is a module (or a class inside one) with ``LAYOUT`` (the expected on-disk layout, one line),
``read(root) -> (train Split, test Split)`` reading metadata only, and ``make_mini(out, seed)`` writing a small
copy of the real layout filled with real images (tasks/semantic/mini_images.py). CoG adds ``read_level``.

Roots: the readers of archives that unpack into one named folder (Food-101, CIFAR, Birdsnap, SUN397, Stanford Cars,
FGVC-Aircraft) follow torchvision's convention and take the folder that *contains* it; the spec's ``subdir`` is the
archive's folder, so ``reader_root`` hands them its parent. The others take the dataset folder itself.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path

READERS = {
    "food101": "food101", "cifar10": "cifar:CIFAR10", "cifar100": "cifar:CIFAR100", "birdsnap": "birdsnap",
    "sun397": "sun397", "cars": "cars", "aircraft": "aircraft", "voc2007": "voc2007", "dtd": "dtd", "pets": "pets",
    "caltech101": "caltech101", "flowers102": "flowers102", "inat18": "inat18", "cog": "cog",
}

PARENT_ROOT = {"food101", "cifar10", "cifar100", "birdsnap", "sun397", "cars", "aircraft"}


def reader_root(name: str, dataset_dir: Path) -> Path:
    """The folder reader ``name`` reads, given the task's dataset folder (``<data-root>/<subdir>``)."""
    return dataset_dir.parent if name in PARENT_ROOT else dataset_dir


def get(name: str):
    if name not in READERS:
        close = difflib.get_close_matches(name, list(READERS), n=1)
        raise KeyError(f"unknown dataset reader {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    module, _, attr = READERS[name].partition(":")
    mod = importlib.import_module(f"{__name__}.{module}")
    return getattr(mod, attr) if attr else mod
