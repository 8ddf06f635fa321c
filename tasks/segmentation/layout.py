"""Cheap layout check for ADE20K SceneParsing (``ADEChallengeData2016``), run before any model is built.

It raises :class:`benchmark.errors.DataError` with one line: what is wrong and how to fix it. Each split folder is
listed once (no per-file ``stat``, so it stays fast on the 22k real files); only the first ``SAMPLE`` annotations of
each split are decoded. Layout, as mmseg's ADE20KDataset reads it::

    <root>/images/{training,validation}/<name>.jpg          ADE_train_00000001 … / ADE_val_00000001 …
    <root>/annotations/{training,validation}/<name>.png     single-channel uint8, 0 = other, 1..150 = classes
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmark.errors import DataError

SPLITS = ("training", "validation")
NUM_CLASSES = 150
SAMPLE = 3  # annotations per split decoded to check mode and values
SHOW = 3  # basenames named in an error
FIX = "see docs/datasets.md, ADE20K"
LAYOUT = "images/{training,validation}/<name>.jpg + annotations/{training,validation}/<name>.png"


def check_ade20k(root: Path) -> None:
    """Check the four split folders, that images and annotations pair up by basename, and a sample of labels."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ADE20K data: {root} does not exist",
                        f"unpack ADEChallengeData2016.zip so that {root} holds images/ and annotations/ ({FIX})")
    for sub in ("images", "annotations"):
        for split in SPLITS:
            if not (root / sub / split).is_dir():
                raise DataError(f"ADE20K data: missing folder {root / sub / split}",
                                f"lay the data out as {root}/{LAYOUT} ({FIX})")
    for split in SPLITS:
        _check_split(root, split)


def _stems(folder: Path, suffix: str) -> set[str]:
    with os.scandir(folder) as entries:
        return {e.name[:-len(suffix)] for e in entries if e.name.endswith(suffix) and not e.name.startswith(".")}


def _few(names: set[str]) -> str:
    first = sorted(names)[:SHOW]
    return ", ".join(first) + (", …" if len(names) > SHOW else "")


def _check_split(root: Path, split: str) -> None:
    img_dir, ann_dir = root / "images" / split, root / "annotations" / split
    images, labels = _stems(img_dir, ".jpg"), _stems(ann_dir, ".png")
    if not images:
        raise DataError(f"ADE20K data: the {split} split is empty (no .jpg images in {img_dir})",
                        f"unpack the whole archive: {split} needs its images and annotations ({FIX})")
    no_label = images - labels
    if no_label:
        raise DataError(f"ADE20K data: {len(no_label)} of {len(images)} images in {img_dir} have no annotation in "
                        f"{ann_dir} ({_few(no_label)})",
                        f"every images/{split}/<name>.jpg needs annotations/{split}/<name>.png: re-extract the "
                        f"archive ({FIX})")
    no_image = labels - images
    if no_image:
        raise DataError(f"ADE20K data: {len(no_image)} of {len(labels)} annotations in {ann_dir} have no image in "
                        f"{img_dir} ({_few(no_image)})",
                        f"every annotations/{split}/<name>.png needs images/{split}/<name>.jpg: re-extract the "
                        f"archive ({FIX})")
    for name in sorted(labels)[:SAMPLE]:
        check_label_png(ann_dir / f"{name}.png")


def check_label_png(path: Path) -> None:
    """A label PNG must decode, as mmseg's default pillow backend reads it, to 2-D uint8 with values 0..150.

    Greyscale ('L') is the real format; a palette ('P') PNG also works, since pillow returns its indices.
    """
    from PIL import Image
    try:
        with Image.open(path) as img:
            mode, bands = img.mode, len(img.getbands())
            arr = np.asarray(img) if mode in ("L", "P") else None  # decode only what can pass
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"ADE20K data: annotation {path} is not a readable image",
                        f"re-extract or re-download the file ({FIX})") from exc
    if arr is None or arr.dtype != np.uint8 or arr.ndim != 2:
        raise DataError(f"ADE20K data: annotation {path} is a '{mode}' PNG with {bands} channel(s), expected "
                        "single-channel uint8 ('L')",
                        f"use the dataset's original 8-bit greyscale label PNGs (values 0..{NUM_CLASSES}), not "
                        f"colourised visualisations or converted copies ({FIX})")
    top = int(arr.max())
    if top > NUM_CLASSES:
        raise DataError(f"ADE20K data: annotation {path} holds the value {top}, above {NUM_CLASSES}",
                        f"use SceneParsing's {NUM_CLASSES}-class annotations (ADEChallengeData2016), 0 = other; "
                        f"the full ADE20K index has other class ids ({FIX})")
