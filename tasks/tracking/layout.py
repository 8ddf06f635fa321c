"""Cheap layout checks for GOT-10k and LaSOT, run before any model is built.

Each check raises :class:`benchmark.errors.DataError` with one line: what is wrong and how to fix it. A split's
sequence list is compared with one listing of its folder (every listed sequence must exist: no per-sequence
``stat``); the first ``SAMPLE`` sequences of each list are then checked fully through the same readers training
uses (label files present, parseable and as long as the ground truth, meta data, first and last frame present and
no frame beyond the last, the first frame decodable). Layouts: see :mod:`tasks.tracking.sequences`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from benchmark.errors import DataError

from .sequences import (
    GOT10K_FIX,
    LASOT_FIX,
    LASOT_SPLITS,
    Sequence,
    lasot_folder,
    load_frame,
    read_got10k_sequence,
    read_labels,
    read_lasot_sequence,
    read_list,
)

SAMPLE = 3  # sequences per split checked in full


def check_got10k(root: Path, splits=("train", "val")) -> None:
    """Check ``<root>/<split>/list.txt``, that every listed sequence folder exists, and a sample in full."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"GOT-10k data: {root} does not exist",
                        f"download GOT-10k and unpack its train/, val/ and test/ folders there ({GOT10K_FIX})")
    for split in splits:
        split_dir = root / split
        list_file = split_dir / "list.txt"
        if not list_file.is_file():
            raise DataError(f"GOT-10k data: missing {list_file}",
                            f"{root} must hold the unpacked {split}/ folder with its list.txt ({GOT10K_FIX})")
        names = read_list(list_file, GOT10K_FIX)
        present = {e.name for e in os.scandir(split_dir) if e.is_dir()}
        missing = [n for n in names if n not in present]
        if missing:
            raise DataError(f"GOT-10k data: {len(missing)} of the {len(names)} sequences listed in {list_file} are "
                            f"missing (e.g. {split_dir / missing[0]})",
                            f"unpack every part of the {split} split, or list only the folders you have "
                            f"({GOT10K_FIX})")
        for name in names[:SAMPLE]:
            _check_got10k_sequence(split_dir / name, split)


def _check_got10k_sequence(folder: Path, split: str) -> None:
    seq = read_got10k_sequence(folder, split)
    if split != "test":
        read_labels(folder / "cut_by_image.label", len(seq), range(2), GOT10K_FIX)
        if seq.resolution is None:
            raise DataError(f"GOT-10k data: {folder / 'meta_info.ini'} is missing or has no 'resolution: (W, H)'",
                            f"re-extract the sequence ({GOT10K_FIX})")
    _check_frames(seq, folder / "groundtruth.txt", GOT10K_FIX)


def check_lasot(root: Path) -> None:
    """Check testing_set.txt and training_set.txt, that every named sequence folder exists, and a sample in full."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"LaSOT data: {root} does not exist",
                        f"download LaSOT and unpack its category folders and split files there ({LASOT_FIX})")
    lists = {}
    for split, file in LASOT_SPLITS.items():
        if not (root / file).is_file():
            raise DataError(f"LaSOT data: missing {root / file}",
                            f"put LaSOT's {file} (one sequence name such as airplane-1 per line) in {root} "
                            f"({LASOT_FIX})")
        lists[split] = read_list(root / file, LASOT_FIX)
    by_category: dict[str, list[str]] = defaultdict(list)
    for names in lists.values():
        for name in names:
            by_category[lasot_folder(root, name).parent.name].append(name)
    categories = {e.name for e in os.scandir(root) if e.is_dir()}
    for category, names in by_category.items():
        present = {e.name for e in os.scandir(root / category) if e.is_dir()} if category in categories else set()
        missing = [n for n in names if n not in present]
        if missing:
            raise DataError(f"LaSOT data: {len(missing)} sequences named in the split files are missing (e.g. "
                            f"{root / category / missing[0]})",
                            f"extract every category archive into {root} ({LASOT_FIX})")
    for names in lists.values():
        for name in names[:SAMPLE]:
            folder = lasot_folder(root, name)
            seq = read_lasot_sequence(root, name)
            if not (folder / "nlp.txt").is_file():
                raise DataError(f"LaSOT data: missing {folder / 'nlp.txt'}", f"re-extract the sequence ({LASOT_FIX})")
            _check_frames(seq, folder / "groundtruth.txt", LASOT_FIX)


def _check_frames(seq: Sequence, gt: Path, fix: str) -> None:
    """First and last frame present, none beyond the last (the labels' length is the frame count), first decodes."""
    first, last = seq.frames[0], seq.frames[-1]
    for frame in (first, last):
        if not frame.is_file():
            raise DataError(f"frame {frame} is missing ({gt} has {len(seq)} lines)",
                            f"re-extract the sequence ({fix})")
    beyond = last.with_name(f"{len(seq) + 1:08d}.jpg")
    if beyond.exists():
        raise DataError(f"{gt} has {len(seq)} lines but the sequence has more frames ({beyond.name} exists)",
                        f"the ground truth is truncated: re-extract the sequence ({fix})")
    load_frame(first)
