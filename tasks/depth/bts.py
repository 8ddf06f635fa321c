"""Convert the common BTS NYUv2 download into mmseg's NYUDataset layout.

BTS lists its data in split files whose lines read ``<rgb> <depth> <focal>``:

- train (``nyudepthv2_train_files_with_gt.txt``), relative to the ``sync/`` folder:
  ``/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579``
- test (``nyudepthv2_test_files_with_gt.txt``), relative to ``official_splits/test/``:
  ``kitchen/rgb_00000.jpg kitchen/sync_depth_00000.png 518.8579``

They become ``<out_dir>/images/<split>/<scene>_<idx>.jpg`` and ``<out_dir>/annotations/<split>/<scene>_<idx>.png``
(``kitchen_0028b_00045``, ``kitchen_00000``), the names mmseg's own converter gives, from which NYUDataset reads the
scene category. Depth PNGs stay as they are (uint16, millimetres).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from benchmark.errors import DataError
from tasks.depth.layout import parse_split_file, under

MODES = ("symlink", "hardlink", "copy")


def convert_bts_nyu(split_file: Path, data_path: Path, out_dir: Path, split: str, mode: str = "symlink") -> int:
    """Link or copy the pairs listed in ``split_file`` (paths relative to ``data_path``); returns how many.

    Everything is checked before anything is written: missing files and names that would collide raise a
    DataError with counts. Lines whose depth is 'None' are skipped. Re-running replaces earlier outputs.
    """
    if mode not in MODES:
        raise DataError(f"unknown conversion mode {mode!r}", f"use one of {', '.join(MODES)}")
    if split not in ("train", "test"):
        raise DataError(f"unknown NYU split {split!r}", "use 'train' or 'test'")
    pairs = _pairs(Path(split_file), Path(data_path))
    img_dir, ann_dir = Path(out_dir) / "images" / split, Path(out_dir) / "annotations" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for name, rgb, depth in pairs:
        _place(rgb, img_dir / f"{name}.jpg", mode)
        _place(depth, ann_dir / f"{name}.png", mode)
    return len(pairs)


def _pairs(split_file: Path, data_path: Path) -> list[tuple[str, Path, Path]]:
    """(output name, rgb file, depth file) per line that has depth, after checking files and names."""
    pairs, missing = [], []
    for entry in parse_split_file(split_file):
        if entry.gt is None:
            continue
        rgb, depth = under(data_path, entry.rgb), under(data_path, entry.gt)
        missing += [p for p in (rgb, depth) if not p.is_file()]
        pairs.append((output_name(entry.rgb, f"{split_file}:{entry.lineno}"), rgb, depth))
    if missing:
        raise DataError(f"{len(missing)} files named in {split_file} are missing under {data_path} "
                        f"({len(pairs)} pairs listed; e.g. {missing[0]})",
                        "pass the folder the split's paths are relative to: sync/ for the train file, "
                        "official_splits/test/ for the test file")
    names = [name for name, _, _ in pairs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{split_file}: {len(names) - len(set(names))} lines map to an output name already used "
                        f"(e.g. {dup})", "list each rgb_<idx>.jpg of a scene once")
    return pairs


def output_name(rgb_rel: str, where: str = "") -> str:
    """``/kitchen_0028b/rgb_00045.jpg`` → ``kitchen_0028b_00045`` (as mmseg's dataset_converters/nyu.py names it)."""
    parts = rgb_rel.strip("/").split("/")
    stem = Path(parts[-1]).stem
    if len(parts) < 2 or not stem.startswith("rgb_") or not stem[4:].isdigit():
        raise DataError(f"{where}: rgb path {rgb_rel!r} is not <scene>/rgb_<idx>.jpg",
                        "use BTS's NYU split files (nyudepthv2_{train,test}_files_with_gt.txt)")
    return f"{parts[-2]}_{stem[4:]}"


def _place(src: Path, dst: Path, mode: str) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if mode == "symlink":
        dst.symlink_to(src.resolve())
    elif mode == "hardlink":
        os.link(src, dst)
    else:
        shutil.copyfile(src, dst)
