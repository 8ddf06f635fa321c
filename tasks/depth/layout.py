"""Cheap layout checks for the depth datasets, run before any model is built.

Each check raises :class:`benchmark.errors.DataError` with one line: what is wrong and how to fix it. They stat
files and read the headers of a few PNGs; they never decode the whole dataset.

NYU (mmseg's NYUDataset layout)::

    <root>/images/{train,test}/<scene>_<idx>.jpg
    <root>/annotations/{train,test}/<scene>_<idx>.png      uint16, millimetres

KITTI (BTS Eigen split)::

    <root>/eigen_train_files.txt, <root>/eigen_test_files.txt   lines "<rgb path> <gt path or None> <focal>"
    <root>/<rgb_root>/<date>/<drive>_sync/image_02/data/<frame>.png
    <root>/<gt_root>/<drive>_sync/proj_depth/groundtruth/image_02/<frame>.png   uint16, metres × 256, 0 = invalid
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from benchmark.errors import DataError

NYU_LAYOUT = "images/{train,test}/<scene>_<idx>.jpg + annotations/{train,test}/<scene>_<idx>.png (uint16 mm)"
SPLIT_LINE_FORMAT = "'<rgb path> <gt path or None> <focal>'"
KITTI_SPLITS = ("eigen_train_files.txt", "eigen_test_files.txt")
PNG_SAMPLE = 5  # how many depth PNGs are decoded to check their dtype


class SplitEntry(NamedTuple):
    """One line of a BTS split file; ``gt`` is None where the line says 'None'."""

    rgb: str
    gt: str | None
    focal: float
    lineno: int


def parse_split_file(path: Path) -> list[SplitEntry]:
    """Parse a BTS split file; a line that does not parse is a DataError naming file:line."""
    entries = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        entries.append(_parse_line(line, f"{path}:{lineno}", lineno))
    return entries


def _parse_line(line: str, where: str, lineno: int) -> SplitEntry:
    parts = line.split()
    focal = _to_float(parts[2]) if len(parts) == 3 else None
    if focal is None:
        raise DataError(f"{where}: cannot parse split line {line.strip()!r}",
                        f"every line must read {SPLIT_LINE_FORMAT}, e.g. '2011_09_26/2011_09_26_drive_0002_sync/"
                        f"image_02/data/0000000069.png 2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/"
                        f"0000000069.png 721.5377'")
    gt = None if parts[1] == "None" else parts[1]
    return SplitEntry(parts[0], gt, focal, lineno)


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def under(root: Path, rel: str) -> Path:
    """Join a split-file path to its root the way BTS does (string concatenation, so a leading '/' is relative)."""
    return Path(root) / rel.lstrip("/")


def check_depth_png(path: Path) -> None:
    """A depth PNG must decode as a single-channel uint16 array."""
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DataError(f"cannot read depth PNG {path}", "re-extract or re-download the file")
    if arr.dtype != np.uint16 or arr.ndim != 2:
        raise DataError(f"depth PNG {path} is {arr.dtype} with shape {arr.shape}, expected single-channel uint16",
                        "use the dataset's original 16-bit depth PNGs (NYU: millimetres; KITTI: metres × 256), "
                        "not 8-bit visualisations")


def check_nyu(root: Path) -> None:
    """Check mmseg's NYU layout: the four folders, a depth PNG for every image, uint16 depth."""
    root = Path(root)
    for sub in ("images/train", "images/test", "annotations/train", "annotations/test"):
        if not (root / sub).is_dir():
            raise DataError(f"NYU data: missing folder {root / sub}",
                            f"lay the data out as {root}/{NYU_LAYOUT} (tasks.depth.bts.convert_bts_nyu converts "
                            "the BTS download)")
    for split in ("train", "test"):
        _check_nyu_split(root, split)


def _check_nyu_split(root: Path, split: str) -> None:
    images = sorted(p.relative_to(root / "images" / split) for p in (root / "images" / split).rglob("*.jpg"))
    if not images:
        raise DataError(f"NYU data: no .jpg images in {root / 'images' / split}", f"expected {NYU_LAYOUT}")
    pngs = [root / "annotations" / split / p.with_suffix(".png") for p in images]
    missing = [p for p in pngs if not p.is_file()]
    if missing:
        raise DataError(f"NYU data: {len(missing)} of {len(images)} images in {root / 'images' / split} have no "
                        f"depth PNG (e.g. {missing[0]})",
                        f"every images/{split}/<name>.jpg needs annotations/{split}/<name>.png")
    for p in pngs[:PNG_SAMPLE]:
        check_depth_png(p)


def check_kitti(root: Path, rgb_root: str = "raw", gt_root: str = "gt_depth") -> None:
    """Check the KITTI Eigen layout: split files, roots, parseable lines, referenced files, uint16 GT.

    A test-split GT that is named but missing is an error (it would silently change the evaluated set); in the
    train split missing GT files are tolerated (the dataset skips and counts them) unless all of them are missing,
    which means ``gt_root`` is wrong.
    """
    root = Path(root)
    for name in KITTI_SPLITS:
        if not (root / name).is_file():
            raise DataError(f"KITTI data: missing split file {root / name}",
                            f"put BTS's Eigen split files in {root} as {' and '.join(KITTI_SPLITS)}")
    for sub in (rgb_root, gt_root):
        if not (root / sub).is_dir():
            raise DataError(f"KITTI data: missing folder {root / sub}",
                            f"put the raw KITTI drives in {root / rgb_root}/<date>/<drive>_sync/ and the "
                            f"annotated depth in {root / gt_root}/<drive>_sync/proj_depth/groundtruth/")
    for name in KITTI_SPLITS:
        _check_kitti_split(root, name, root / rgb_root, root / gt_root)


def _check_kitti_split(root: Path, name: str, rgb_dir: Path, gt_dir: Path) -> None:
    entries = parse_split_file(root / name)
    if not entries:
        raise DataError(f"KITTI data: split file {root / name} is empty", f"each line must read {SPLIT_LINE_FORMAT}")
    missing_rgb = [under(rgb_dir, e.rgb) for e in entries if not under(rgb_dir, e.rgb).is_file()]
    if missing_rgb:
        raise DataError(f"KITTI data: {len(missing_rgb)} of {len(entries)} images named in {name} are missing "
                        f"(e.g. {missing_rgb[0]})", f"rgb paths are relative to {rgb_dir}; check --data-root and "
                        "that every drive is extracted")
    named = [under(gt_dir, e.gt) for e in entries if e.gt is not None]
    present = [p for p in named if p.is_file()]
    missing_gt = [p for p in named if not p.is_file()]
    if missing_gt and (name == KITTI_SPLITS[1] or not present):
        raise DataError(f"KITTI data: {len(missing_gt)} of {len(named)} depth maps named in {name} are missing "
                        f"(e.g. {missing_gt[0]})", f"gt paths are relative to {gt_dir}; extract KITTI's "
                        "data_depth_annotated (train and val) into it")
    for p in present[:PNG_SAMPLE]:
        check_depth_png(p)
