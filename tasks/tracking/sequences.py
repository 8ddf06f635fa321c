"""Readers for the GOT-10k and LaSOT on-disk layouts (the official downloads, unchanged).

GOT-10k::

    <root>/{train,val,test}/list.txt                 one sequence folder name per line
    <root>/<split>/GOT-10k_<Split>_<NNNNNN>/
        00000001.jpg ...                             8 digits, 1-based
        groundtruth.txt                              x,y,w,h per frame (test: the first frame only)
        absence.label  cover.label  cut_by_image.label   one integer per frame (train / val only)
        meta_info.ini                                [METAINFO] then "key: value" lines, incl. resolution: (W, H)
                                                     and anno_fps: 10Hz (the annotation's frame rate)

LaSOT::

    <root>/training_set.txt, <root>/testing_set.txt  one sequence name per line, e.g. airplane-1
    <root>/<category>/<category>-<k>/
        img/00000001.jpg ...
        groundtruth.txt                              x,y,w,h per frame (integers)
        full_occlusion.txt  out_of_view.txt          ONE comma-separated line of 0/1 per frame
        nlp.txt                                      one sentence

The readers never open an image and never stat a frame: the number of frames comes from the label files (GOT-10k
test, whose ground truth has one line, lists its folder once), and the frame paths are built by name, lazily
(:class:`FrameFiles`), so GOT-10k train's 1.4M and LaSOT's 3.5M frame paths are neither built nor pickled to
DataLoader workers. Label files are parsed with one ``split`` per file. A missing, short or garbled label file is a
:class:`DataError` naming the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmark.errors import DataError

GOT10K_SPLITS = ("train", "val", "test")
LASOT_SPLITS = {"train": "training_set.txt", "test": "testing_set.txt"}
GOT10K_FIX = "see docs/datasets.md (GOT-10k) for the expected layout, or use --data mini"
LASOT_FIX = "see docs/datasets.md (LaSOT) for the expected layout, or use --data mini"
FRAME_NAME = re.compile(r"^(\d{8})\.jpg$")
RESOLUTION = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
ANNO_FPS = re.compile(r"^(\d+(?:\.\d+)?)\s*Hz$", re.IGNORECASE)
# frame rates of the annotated frames as the datasets document them: GOT-10k is annotated at 10 Hz (meta_info.ini's
# anno_fps, used when that line is missing), LaSOT at 30 fps (every frame of its 30 fps videos)
GOT10K_FPS = 10.0
LASOT_FPS = 30.0


class FrameFiles(SequenceABC):
    """The paths ``<folder>/00000001.jpg`` ... ``<folder>/<count:08d>.jpg`` as a read-only sequence of Paths.

    Behaves like ``tuple[Path, ...]`` (len, index, negative index, slice, iteration, ``==`` with a tuple) but
    stores only the folder and the count.
    """

    __slots__ = ("folder", "count")

    def __init__(self, folder: Path, count: int):
        self.folder = Path(folder)
        self.count = int(count)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(self.count)))
        i = int(index)
        if i < 0:
            i += self.count
        if not 0 <= i < self.count:
            raise IndexError(f"frame index {index} out of range for {self.count} frames")
        return self.folder / f"{i + 1:08d}.jpg"

    def __eq__(self, other) -> bool:
        if isinstance(other, FrameFiles):
            return (self.folder, self.count) == (other.folder, other.count)
        if isinstance(other, tuple | list):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.folder, self.count))

    def __repr__(self) -> str:
        return f"FrameFiles({str(self.folder)!r}, {self.count})"


@dataclass(frozen=True, eq=False)  # eq=False: numpy fields make == ambiguous; identity is what callers need
class Sequence:
    """One tracking sequence: frame paths, per-frame boxes and visibility.

    ``boxes`` is (N, 4) float64 x, y, w, h in pixels; GOT-10k test has only the first frame's box, shape (1, 4).
    ``visible`` is (N,) bool: whether the target can be seen (and has a box with positive size) in that frame.
    ``cover`` is GOT-10k's per-frame visible-ratio level 0..8 (train / val), else None. ``resolution`` is (W, H)
    from GOT-10k's meta_info.ini, None where the file or the line is absent. ``fps`` is the frame rate of the
    annotated frames (GOT-10k's ``anno_fps``, else its documented 10; LaSOT 30), None where unknown.
    """

    name: str
    frames: SequenceABC  # of Path; a FrameFiles (tuple-like) from the readers
    boxes: np.ndarray
    visible: np.ndarray
    cover: np.ndarray | None = None
    resolution: tuple[int, int] | None = None
    fps: float | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return (f"Sequence({self.name!r}, {len(self)} frames, {int(np.count_nonzero(self.visible))} visible, "
                f"{len(self.boxes)} boxes)")


# ------------------------------------------------------------------------------------------------------ parsing

def _read_text(path: Path, fix: str) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError as exc:
        raise DataError(f"missing file {path}", fix) from exc
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or exc})", fix) from exc


def _numbers(path: Path, text: str, fix: str) -> np.ndarray:
    """All numbers in a comma/whitespace-separated file as float64 (NaN allowed); DataError on anything else."""
    tokens = text.replace(",", " ").split()
    try:
        return np.array(tokens, dtype=np.float64)
    except ValueError as exc:
        bad = next(t for t in tokens if not _is_float(t))
        raise DataError(f"{path}: cannot parse {bad[:40]!r} as a number (file garbled?)", fix) from exc


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_boxes(path: Path, fix: str) -> np.ndarray:
    """An ``x,y,w,h`` per line file as (N, 4) float64."""
    text = _read_text(path, fix)
    body = text.replace("\r\n", "\n").strip()
    if "\n\n" in body:  # blank lines inside: count the slow way
        lines = sum(1 for line in body.split("\n") if line.strip())
    else:
        lines = body.count("\n") + 1 if body else 0
    values = _numbers(path, text, fix)
    if lines == 0 or values.size != 4 * lines:
        raise DataError(f"{path}: expected 4 numbers (x,y,w,h) on each of its {lines} lines, found {values.size}",
                        f"the file is truncated or damaged: re-extract it ({fix})")
    return values.reshape(lines, 4)


def read_labels(path: Path, n: int, allowed: range, fix: str) -> np.ndarray:
    """``n`` integer labels (one per line, or one comma-separated line) within ``allowed`` as int64."""
    values = _numbers(path, _read_text(path, fix), fix)
    if values.size != n:
        raise DataError(f"{path}: {values.size} labels for {n} frames (the ground truth's length)",
                        f"the file is truncated or does not belong to this sequence: re-extract it ({fix})")
    ints = values.astype(np.int64) if np.isfinite(values).all() else None
    if ints is None or (ints != values).any() or ints.min() < allowed.start or ints.max() >= allowed.stop:
        raise DataError(f"{path}: labels must be integers in {allowed.start}..{allowed.stop - 1}",
                        f"the file is garbled: re-extract it ({fix})")
    return ints


def read_meta(path: Path) -> dict[str, str] | None:
    """GOT-10k's meta_info.ini as a dict (``key: value`` lines after ``[METAINFO]``); None if there is no file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or exc})", GOT10K_FIX) from exc
    meta = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith("["):
            meta[key.strip()] = value.strip()
    return meta


def parse_resolution(path: Path, meta: dict[str, str] | None) -> tuple[int, int] | None:
    """``resolution: (W, H)`` from a parsed meta_info.ini; None if absent, DataError if unreadable."""
    if not meta or "resolution" not in meta:
        return None
    m = RESOLUTION.match(meta["resolution"])
    if not m:
        raise DataError(f"{path}: cannot parse resolution {meta['resolution']!r}, expected '(W, H)'",
                        f"the file is garbled: re-extract it ({GOT10K_FIX})")
    return int(m.group(1)), int(m.group(2))


def parse_fps(path: Path, meta: dict[str, str] | None) -> float:
    """``anno_fps: <n>Hz`` from a parsed meta_info.ini; GOT-10k's documented 10 if absent, DataError if unreadable."""
    if not meta or "anno_fps" not in meta:
        return GOT10K_FPS
    m = ANNO_FPS.match(meta["anno_fps"])
    if not m or not float(m.group(1)) > 0:
        raise DataError(f"{path}: cannot parse anno_fps {meta['anno_fps']!r}, expected e.g. '10Hz'",
                        f"the file is garbled: re-extract it ({GOT10K_FIX})")
    return float(m.group(1))


def read_list(path: Path, fix: str) -> list[str]:
    """Non-empty, stripped lines of a sequence list file."""
    names = [line.strip() for line in _read_text(path, fix).splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path} lists no sequences", fix)
    return names


def _box_ok(boxes: np.ndarray) -> np.ndarray:
    return np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


# ------------------------------------------------------------------------------------------------------ GOT-10k

def got10k_sequences(root: Path, split: str) -> list[Sequence]:
    """All sequences of a GOT-10k split, in the order of its list.txt."""
    if split not in GOT10K_SPLITS:
        raise ValueError(f"GOT-10k split must be one of {GOT10K_SPLITS}, not {split!r}")
    split_dir = Path(root) / split
    names = read_list(split_dir / "list.txt", GOT10K_FIX)
    return [read_got10k_sequence(split_dir / name, split) for name in names]


def read_got10k_sequence(folder: Path, split: str) -> Sequence:
    """One GOT-10k sequence folder.

    ``visible`` follows OSTrack's GOT-10k reader: absence == 0 and cover > 0 and a box with positive size (real
    absent frames carry -1,-1,-1,-1). The test split is all visible (its labels are not public).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"GOT-10k sequence folder {folder} is missing (listed in {folder.parent / 'list.txt'})",
                        f"re-extract the split or remove the name from list.txt ({GOT10K_FIX})")
    boxes = read_boxes(folder / "groundtruth.txt", GOT10K_FIX)
    meta_path = folder / "meta_info.ini"
    meta = read_meta(meta_path)
    resolution, fps = parse_resolution(meta_path, meta), parse_fps(meta_path, meta)
    if split == "test":
        n = _count_test_frames(folder)
        return Sequence(folder.name, FrameFiles(folder, n), boxes[:1], np.ones(n, bool), None, resolution, fps)
    n = len(boxes)
    absence = read_labels(folder / "absence.label", n, range(2), GOT10K_FIX)
    cover = read_labels(folder / "cover.label", n, range(9), GOT10K_FIX)
    visible = (absence == 0) & (cover > 0) & _box_ok(boxes)
    return Sequence(folder.name, FrameFiles(folder, n), boxes, visible, cover, resolution, fps)


def _count_test_frames(folder: Path) -> int:
    """Frames of a test sequence (its ground truth has one line): one listing, checked to be 1..N."""
    numbers = sorted(int(m.group(1)) for e in os.scandir(folder) if (m := FRAME_NAME.match(e.name)))
    if not numbers or numbers != list(range(1, len(numbers) + 1)):
        raise DataError(f"GOT-10k sequence {folder} has no frames 00000001.jpg ... numbered without gaps",
                        f"re-extract the sequence ({GOT10K_FIX})")
    return len(numbers)


# ------------------------------------------------------------------------------------------------------ LaSOT

def lasot_sequences(root: Path, split: str) -> list[Sequence]:
    """All sequences named in training_set.txt (``train``) or testing_set.txt (``test``), in the file's order."""
    if split not in LASOT_SPLITS:
        raise ValueError(f"LaSOT split must be one of {tuple(LASOT_SPLITS)}, not {split!r}")
    root = Path(root)
    return [read_lasot_sequence(root, name) for name in read_list(root / LASOT_SPLITS[split], LASOT_FIX)]


def lasot_folder(root: Path, name: str) -> Path:
    """``<root>/<category>/<name>`` for a sequence name ``<category>-<k>``."""
    category, sep, k = name.rpartition("-")
    if not sep or not category or not k.isdigit():
        raise DataError(f"LaSOT sequence name {name!r} is not '<category>-<number>'",
                        f"the split files list names like airplane-1 ({LASOT_FIX})")
    return Path(root) / category / name


def read_lasot_sequence(root: Path, name: str) -> Sequence:
    """One LaSOT sequence; visible = not full_occlusion and not out_of_view, with a positive-size box."""
    folder = lasot_folder(root, name)
    if not folder.is_dir():
        raise DataError(f"LaSOT sequence folder {folder} is missing (named in the split files)",
                        f"extract every category archive into {Path(root)} ({LASOT_FIX})")
    boxes = read_boxes(folder / "groundtruth.txt", LASOT_FIX)
    n = len(boxes)
    occluded = read_labels(folder / "full_occlusion.txt", n, range(2), LASOT_FIX)
    out_of_view = read_labels(folder / "out_of_view.txt", n, range(2), LASOT_FIX)
    visible = (occluded == 0) & (out_of_view == 0) & _box_ok(boxes)
    return Sequence(name, FrameFiles(folder / "img", n), boxes, visible, fps=LASOT_FPS)


# ------------------------------------------------------------------------------------------------------ frames

def load_frame(path: Path) -> np.ndarray:
    """Decode a frame as RGB uint8 (H, W, 3); DataError if the file is missing or not an image."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        what = "missing" if not os.path.exists(path) else "unreadable (not an image, or truncated)"
        raise DataError(f"frame {path} is {what}", "re-extract the sequence it belongs to")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
