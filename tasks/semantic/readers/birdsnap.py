"""Birdsnap (Berg et al. 2014) for K12: 500 North American bird species, the official 2,443-image test list.

No loader exists anywhere (torchvision has none). Real layout: ``birdsnap.tgz`` unpacked into ``root`` (the folder
that *contains* ``birdsnap/``), then ``python get_birdsnap.py`` run inside ``birdsnap/``, which downloads the Flickr
images into ``download/images/`` (its default ``--output_dir download``)::

    birdsnap/species.txt        tab-separated, header "id common scientific dir", one line per species (ids 1..500)
    birdsnap/images.txt         tab-separated, header "url md5 path species_id bb_x1 ... throat_y"; path is
                                "<dir>/<file>.jpg" relative to the image folder
    birdsnap/test_images.txt    header "path", then one path (as in images.txt) per line
    birdsnap/download/images/<dir>/<file>.jpg     (or birdsnap/images/... when run with --output_dir .)

train = the images of images.txt not in test_images.txt. Many Flickr URLs are dead, so listed images are often
absent: they are skipped, counted in ``Split.notes["missing_images"]`` and logged; more than half of a split
missing is a broken download (DataError). Labels index the species in id order; class names are the common names.
Metric top-1.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from benchmark.errors import DataError
from tasks.semantic import mini_images
from tasks.semantic.common import Split, check_classes, lines, require

log = logging.getLogger(__name__)

LAYOUT = ("birdsnap/{species.txt, images.txt, test_images.txt, download/images/<dir>/<file>.jpg} "
          "(images/ beside the .txt files also accepted)")
BASE = "birdsnap"
IMAGE_DIRS = ("download/images", "images")  # get_birdsnap.py's default output, then --output_dir .
DATASET_ID = 500
MINI_CLASSES = 10
PARTS = ("back", "beak", "belly", "breast", "crown", "forehead", "left_cheek", "left_eye", "left_leg", "left_wing",
         "nape", "right_cheek", "right_eye", "right_leg", "right_wing", "tail", "throat")
IMAGE_COLUMNS = ("url", "md5", "path", "species_id", "bb_x1", "bb_y1", "bb_x2", "bb_y2",
                 *(f"{p}_{axis}" for p in PARTS for axis in "xy"))


def read(root: Path) -> tuple[Split, Split]:
    """(train, test) of the official split, restricted to the images present on disk."""
    root = Path(root)
    species = _table(require(root, f"{BASE}/species.txt", LAYOUT), ("id", "common"))
    species.sort(key=lambda row: int(row["id"]))
    classes = [row["common"] for row in species]
    index = {row["id"]: j for j, row in enumerate(species)}
    images_txt = require(root, f"{BASE}/images.txt", LAYOUT)
    label_of = {}
    for n, row in enumerate(_table(images_txt, ("path", "species_id")), 2):
        if row["species_id"] not in index:
            raise DataError(f"{images_txt}, line {n}: species_id {row['species_id']} is not in species.txt",
                            "re-extract birdsnap.tgz (the metadata files do not match)")
        label_of[row["path"]] = index[row["species_id"]]
    test_txt = require(root, f"{BASE}/test_images.txt", LAYOUT)
    test_paths = lines(test_txt)[1:]  # first line is the header "path"
    unknown = [p for p in test_paths if p not in label_of]
    if unknown:
        raise DataError(f"{test_txt}: {len(unknown)} paths are not in images.txt (e.g. {unknown[0]})",
                        "re-extract birdsnap.tgz (the metadata files do not match)")
    test_set = set(test_paths)
    image_dir = _image_dir(root / BASE)
    train = _split([p for p in label_of if p not in test_set], label_of, image_dir, classes, "train")
    test = _split(test_paths, label_of, image_dir, classes, "test")
    check_classes(train, test)
    return train, test


def _image_dir(base: Path) -> Path:
    return next((base / d for d in IMAGE_DIRS if (base / d).is_dir()), base / IMAGE_DIRS[0])


def _split(rel_paths: list[str], label_of: dict[str, int], image_dir: Path, classes: list[str], which: str) -> Split:
    """The listed images that exist; the rest are counted as missing (dead Flickr URLs)."""
    present = [p for p in rel_paths if (image_dir / p).is_file()]
    missing = len(rel_paths) - len(present)
    name = f"k12_birdsnap/{which}"
    if missing > len(rel_paths) / 2:
        raise DataError(f"{name}: {missing} of {len(rel_paths)} listed images are missing from {image_dir} "
                        f"(expected layout: {LAYOUT})",
                        "run get_birdsnap.py inside the birdsnap folder (re-running retries the failed downloads)")
    if missing:
        log.warning("%s: %d of %d listed images are missing from %s (dead Flickr URLs); skipping them",
                    name, missing, len(rel_paths), image_dir)
    return Split(classes, np.array([label_of[p] for p in present], np.int64), paths=[image_dir / p for p in present],
                 name=name, notes={"missing_images": missing})


def _table(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """A tab-separated file with a header line, as rows keyed by column name (the columns must be there)."""
    lines = path.read_text().splitlines()
    header = lines[0].split("\t") if lines else []
    if absent := [c for c in columns if c not in header]:
        raise DataError(f"{path}: header lacks the column(s) {absent} (expected layout: {LAYOUT})",
                        "re-extract birdsnap.tgz")
    rows = []
    for n, line in enumerate(lines[1:], 2):
        if line.strip():
            values = line.rstrip("\n").split("\t")
            if len(values) != len(header):
                raise DataError(f"{path}, line {n}: {len(values)} fields, the header has {len(header)}",
                                "re-extract birdsnap.tgz")
            rows.append(dict(zip(header, values)))
    return rows


def make_mini(out: Path, seed: int) -> None:
    """A small Birdsnap as get_birdsnap.py leaves it: species j has 25 + j training and 5 + j test images on disk,
    plus listed-but-missing ones (3 training: species 0-2, 2 test: species 3-4), as after dead URLs.

    Images first, the .txt files last, so an interrupted run leaves no complete-looking listing.
    """
    out = Path(out) / BASE
    rng = np.random.default_rng([seed, DATASET_ID])
    names = mini_images.POOL_CLASSES[:MINI_CLASSES]
    species = [(str(j + 1), n.replace("_", " ").title(), f"Pool {n}", n.replace("_", " ").title().replace(" ", "_"))
               for j, n in enumerate(names)]
    rows, test_paths = [], []
    for j, pool in enumerate(mini_images.class_pool(len(names))):
        sid, dirname = species[j][0], species[j][3]
        n_train, n_test = 25 + j, 5 + j
        lost_train, lost_test = int(j < 3), int(3 <= j < 5)
        ids = rng.choice(10**9, size=n_train + n_test + lost_train + lost_test, replace=False)
        paths = [f"{dirname}/{i}.jpg" for i in ids]  # listed: train, lost train, test, lost test
        on_disk = paths[:n_train] + paths[n_train + lost_train:n_train + lost_train + n_test]
        md5 = {}
        for rel, rgb in zip(on_disk, mini_images.sample(pool, len(on_disk), rng)):
            mini_images.save_jpeg(out / IMAGE_DIRS[0] / rel, rgb)
            md5[rel] = hashlib.md5((out / IMAGE_DIRS[0] / rel).read_bytes()).hexdigest()
        test_paths += paths[n_train + lost_train:]
        for rel in paths:
            (x1, x2), (y1, y2) = np.sort(rng.integers(0, mini_images.SIZE, (2, 2))).tolist()
            parts = rng.integers(0, mini_images.SIZE, 2 * len(PARTS)).tolist()
            url = f"http://farm{j % 9 + 1}.staticflickr.com/{rel.split('/')[1]}"
            rows.append([url, md5.get(rel, "0" * 32), rel, sid, x1, y1, x2, y2, *parts])
    (out / "species.txt").write_text(_tsv(("id", "common", "scientific", "dir"), species))
    (out / "test_images.txt").write_text("path\n" + "".join(f"{p}\n" for p in sorted(test_paths)))
    (out / "images.txt").write_text(_tsv(IMAGE_COLUMNS, sorted(rows, key=lambda r: r[2])))


def _tsv(header: tuple[str, ...], rows: list) -> str:
    return "".join("\t".join(map(str, row)) + "\n" for row in [header, *rows])
