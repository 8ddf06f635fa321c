"""ImageNet-CoG (naver/cog): 5 concept-generalization levels of 1000 ImageNet-21K concepts each, metric top-1.

Real layout: root with the two files of the benchmark, cog_levels_mapping_file.pkl (a list of 5 lists of 1000
wnids, L1..L5) and cog_concepts_split_file.pkl (dict wnid -> {'train': array of image paths, 'test': array of
image paths}, 732-1300 train and 50 test per concept), the paths relative to the ImageNet-21K (fall 2011) image
root, which holds <wnid>/<wnid>_<n>.JPEG. The suite reads that image root at root/imagenet21k (make it a symlink to
your copy); ``read_level`` also takes it as an argument. Labels are the wnid's index in the sorted wnids of the
level; per concept the paths are sorted and a leading "/" is dropped, as naver/cog's CoGLevelDataset does.

The pickles are user files from the internet: they are read with an unpickler that can only rebuild numpy arrays
and plain containers, never call anything else. Images listed but absent on disk (IN-21K copies differ) are
skipped and counted in ``notes["missing_images"]``; more than half of a split absent is a wrong image root.
"""

from __future__ import annotations

import builtins
import codecs
import logging
import os
import pickle
from pathlib import Path

import numpy as np

from benchmark.errors import DataError
from tasks.semantic import common, mini_images
from tasks.semantic.common import Split

log = logging.getLogger(__name__)

LEVELS = 5
LEVELS_FILE = "cog_levels_mapping_file.pkl"
SPLIT_FILE = "cog_concepts_split_file.pkl"
LAYOUT = (f"root with {LEVELS_FILE} (5 lists of wnids) and {SPLIT_FILE} (wnid -> {{'train', 'test'}} image paths "
          "relative to the ImageNet-21K root, default root/imagenet21k: <wnid>/<wnid>_<n>.JPEG)")
DATASET_ID = 14  # after the 12 K12 datasets and iNat18 (seeds the mini generator)
FIX = "download the two .pkl files of naver/cog again"
MAX_MISSING_FRACTION = 0.5

# The only globals a pickle of numpy arrays of paths needs (numpy 1.x and 2.x module names, pickle protocols 0-5).
_SAFE_GLOBALS = {
    **{(m, "_reconstruct"): np.zeros(1).__reduce__()[0] for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): np.str_("").__reduce__()[0] for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): np.zeros(1).__reduce_ex__(5)[0] for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # array bytes in protocols 0-2
    **{(m, n): getattr(builtins, n) for m in ("builtins", "__builtin__") for n in ("set", "frozenset", "bytearray")},
}


class _Refused(pickle.UnpicklingError):
    """A pickle asked for a global outside _SAFE_GLOBALS."""


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and strings; any other global (os.system, eval, ...) is refused."""

    def find_class(self, module: str, name: str):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def load_pickle(path: Path):
    """A CoG pickle through the restricted unpickler; a refused or unreadable file is a DataError naming it."""
    try:
        with open(path, "rb") as fh:
            return _ArrayUnpickler(fh, encoding="latin1").load()
    except _Refused as exc:
        raise DataError(f"refusing to load {path}: it asks for {exc}, which a CoG file never contains "
                        "(only numpy arrays of paths)", FIX) from None
    except Exception as exc:  # noqa: BLE001 - a broken pickle can raise nearly anything; the message names the file
        raise DataError(f"{path} is not a readable CoG pickle ({type(exc).__name__}: {exc})", FIX) from None


def _level_wnids(root: Path, level: int) -> list[str]:
    path = common.require(root, LEVELS_FILE, LAYOUT)
    levels = load_pickle(path)
    if not isinstance(levels, (list, tuple)) or len(levels) != LEVELS or isinstance(levels[level - 1], str):
        raise DataError(f"{path} should hold a list of {LEVELS} lists of wnids", FIX)
    return sorted(str(w) for w in np.asarray(levels[level - 1]).ravel())


def _concept_paths(path: Path, split_file: dict, wnid: str, which: str) -> list[str]:
    """The sorted image paths of one concept and split, relative to the IN-21K root."""
    try:
        files = split_file[wnid][which]
    except (KeyError, TypeError, IndexError):
        raise DataError(f"{path} has no {which!r} images for concept {wnid}", FIX) from None
    return sorted(str(f).lstrip("/\\") for f in np.asarray(files).ravel())


class _Listing:
    """Existence checks by one directory listing per folder instead of one stat per image."""

    def __init__(self, base: Path):
        self.base, self.cache = base, {}

    def exists(self, rel: str) -> bool:
        folder, _, name = rel.rpartition("/")
        if folder not in self.cache:
            try:
                self.cache[folder] = set(os.listdir(self.base / folder))
            except OSError:
                self.cache[folder] = set()
        return name in self.cache[folder]


def _split(wnids: list[str], split_file: dict, path: Path, images: _Listing, which: str, name: str) -> Split:
    """The images of one split present on disk, labelled by the wnid's index; missing ones counted."""
    rels, labels = [], []
    for label, wnid in enumerate(wnids):
        files = _concept_paths(path, split_file, wnid, which)
        rels += files
        labels += [label] * len(files)
    present = [images.exists(r) for r in rels]
    missing = len(rels) - sum(present)
    if missing > MAX_MISSING_FRACTION * len(rels):
        raise DataError(f"{name}: {missing} of {len(rels)} images listed in {path} are not under {images.base} "
                        f"(e.g. {next(r for r, p in zip(rels, present) if not p)})",
                        f"make {images.base} (a symlink is fine) the ImageNet-21K image folder "
                        "(<wnid>/<wnid>_<n>.JPEG)")
    if missing:
        log.warning("%s: skipping %d of %d images missing under %s", name, missing, len(rels), images.base)
    keep = [i for i, p in enumerate(present) if p]
    return Split(wnids, np.array([labels[i] for i in keep], dtype=np.int64),
                 paths=[images.base / rels[i] for i in keep], name=name, notes={"missing_images": missing})


def read_level(root: Path, level: int, imagenet21k: Path | None = None) -> tuple[Split, Split]:
    """(train, test) of CoG level ``level`` (1..5); images under ``imagenet21k`` (default root/imagenet21k)."""
    if not 1 <= level <= LEVELS:
        raise ValueError(f"CoG levels are 1..{LEVELS}, not {level}")
    root = Path(root)
    base = Path(imagenet21k) if imagenet21k is not None else root / "imagenet21k"
    if not base.is_dir():
        raise DataError(f"the ImageNet-21K image folder {base} does not exist",
                        f"create {base} as a symlink to the ImageNet-21K image folder (<wnid>/<wnid>_<n>.JPEG)")
    wnids = _level_wnids(root, level)
    path = common.require(root, SPLIT_FILE, LAYOUT)
    split_file = load_pickle(path)
    if not isinstance(split_file, dict):
        raise DataError(f"{path} should hold a dict wnid -> {{'train': paths, 'test': paths}}", FIX)
    images = _Listing(base)
    train, test = (_split(wnids, split_file, path, images, which, f"cog_l{level}/{which}")
                   for which in ("train", "test"))
    common.check_classes(train, test)
    return train, test


def read(root: Path) -> tuple[Split, Split]:
    """Level 1 with the default image root, for uniformity with the other readers."""
    return read_level(root, 1)


# ------------------------------------------------------------------------------------------------ mini

MINI_CONCEPTS = 4                   # per level; 5 x 4 = the 20 pool classes, so every level has its own classes
MINI_PER_SPLIT = {"train": 20, "test": 8}


def mini_wnid(level: int, k: int) -> str:
    """A well-formed but fake wnid ('n' + 8 digits) for concept k of a level."""
    return f"n0999{level}{k:03d}"


def make_mini(out: Path, seed: int) -> None:
    """A small CoG at root ``out``: 5 levels of 4 concepts, 20 train + 8 test images each, images in imagenet21k/."""
    out = Path(out)
    rng = np.random.default_rng([seed, DATASET_ID])
    levels, split_file = [], {}
    for level in range(1, LEVELS + 1):
        wnids = [mini_wnid(level, k) for k in range(MINI_CONCEPTS)]
        levels.append(wnids)
        for k, wnid in enumerate(wnids):
            n = sum(MINI_PER_SPLIT.values())
            numbers = rng.choice(np.arange(1, 20_000), size=n, replace=False)  # IN-21K numbers have gaps
            rels = [f"{wnid}/{wnid}_{i}.JPEG" for i in numbers]
            for rel, img in zip(rels, mini_images.sample((level - 1) * MINI_CONCEPTS + k, n, rng)):
                mini_images.save_jpeg(out / "imagenet21k" / rel, img)
            cut = MINI_PER_SPLIT["train"]
            split_file[wnid] = {"train": np.array(rels[:cut]), "test": np.array(rels[cut:])}
    out.mkdir(parents=True, exist_ok=True)
    (out / LEVELS_FILE).write_bytes(pickle.dumps(levels, protocol=4))
    (out / SPLIT_FILE).write_bytes(pickle.dumps(split_file, protocol=4))
