"""SUN397 (Xiao et al. 2010) for K12: 397 scene classes, the first official partition (Training_01 / Testing_01,
50 + 50 images per class).

Real layout: ``SUN397.tar.gz`` and ``Partitions.zip`` both unpacked into ``root``, so the partition files sit next
to the image folder (torchvision's SUN397 reads only ``SUN397/`` and cannot use the partitions)::

    SUN397/ClassName.txt                  one class per line, "/a/abbey", "/a/apse/indoor", ...: the label order
    SUN397/<letter>/<class>/sun_<id>.jpg  e.g. SUN397/a/apse/indoor/sun_aaxxx.jpg
    Partitions/Training_01.txt            "/a/abbey/sun_aaalbzqrimafwbiv.jpg" per line (relative to SUN397/)
    Partitions/Testing_01.txt             the same for the test half

``Partitions/`` unpacked inside ``SUN397/`` is accepted too. Class names drop the leading "/<letter>/"
("abbey", "apse/indoor"). The image folders hold ~108k images; only the 19,850 + 19,850 listed ones are used.
Metric top-1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.errors import DataError
from tasks.semantic import mini_images
from tasks.semantic.common import Split, check_class_dir, check_classes, lines, require

LAYOUT = ("{SUN397/ClassName.txt, SUN397/<letter>/<class>/sun_<id>.jpg, Partitions/Training_01.txt, "
          "Partitions/Testing_01.txt} (Partitions/ inside SUN397/ also accepted)")
IMAGES = "SUN397"
PARTITIONS = ("Partitions", "SUN397/Partitions")  # beside the image folder (as unzipped), or inside it
DATASET_ID = 397
MINI_CLASSES = 10


def read(root: Path) -> tuple[Split, Split]:
    """(train, test) of partition 01; labels index SUN397/ClassName.txt."""
    root = Path(root)
    keys = lines(require(root, f"{IMAGES}/ClassName.txt", LAYOUT))  # "/a/abbey"
    for key in keys:
        check_class_dir(root / IMAGES / key.lstrip("/"), LAYOUT, "re-extract SUN397.tar.gz")
    classes = [_class_name(key) for key in keys]
    parts = next((p for p in PARTITIONS if (root / p).is_dir()), PARTITIONS[0])
    train = _split(root, f"{parts}/Training_01.txt", classes, "train")
    test = _split(root, f"{parts}/Testing_01.txt", classes, "test")
    check_classes(train, test)
    return train, test


def _class_name(key: str) -> str:
    """"/a/apse/indoor" -> "apse/indoor" (the letter folder is not part of the name)."""
    return "/".join(key.strip("/").split("/")[1:])


def _split(root: Path, rel: str, classes: list[str], which: str) -> Split:
    listing = require(root, rel, LAYOUT)
    index = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for n, entry in enumerate(lines(listing), 1):
        name = _class_name(entry.rsplit("/", 1)[0])
        if name not in index:
            raise DataError(f"{listing}, line {n}: class {name!r} is not in {IMAGES}/ClassName.txt",
                            "re-extract SUN397.tar.gz and Partitions.zip (they do not match)")
        paths.append(root / IMAGES / entry.lstrip("/"))
        labels.append(index[name])
    return Split(classes, np.array(labels, np.int64), paths=paths, name=f"k12_sun397/{which}")


def make_mini(out: Path, seed: int) -> None:
    """A small SUN397 in the real layout: 10 classes (one two-level, like "apse/indoor"); class j (ClassName.txt
    order) lists 25 + j training and 5 + j test images, and its folder holds 2 more unlisted ones, as in the real
    data. Images first, the text files last, so an interrupted run leaves no complete-looking listing.
    """
    out = Path(out)
    rng = np.random.default_rng([seed, DATASET_ID])
    names = mini_images.POOL_CLASSES[:MINI_CLASSES]
    keys = [f"/{n[0]}/{n}" + ("/indoor" if n == "dress" else "") for n in names]
    by_key = sorted(zip(keys, mini_images.class_pool(len(names))))  # ClassName.txt is alphabetical
    listed = {"Training_01": [], "Testing_01": []}
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    for j, (key, pool) in enumerate(by_key):
        n_train, n_test, n = 25 + j, 5 + j, 32 + 2 * j
        files = sorted({f"{key}/sun_{''.join(rng.choice(letters, 16))}.jpg" for _ in range(n)})
        for entry, rgb in zip(files, mini_images.sample(pool, len(files), rng)):
            mini_images.save_jpeg(out / IMAGES / entry.lstrip("/"), rgb)
        chosen = rng.permutation(len(files))
        listed["Training_01"] += sorted(files[i] for i in chosen[:n_train])
        listed["Testing_01"] += sorted(files[i] for i in chosen[n_train:n_train + n_test])
    class_list = "".join(f"{key}\n" for key, _ in by_key)
    (out / PARTITIONS[0]).mkdir(parents=True, exist_ok=True)
    for part, entries in listed.items():
        (out / PARTITIONS[0] / f"{part}.txt").write_text("".join(f"{e}\n" for e in entries))
    (out / PARTITIONS[0] / "ClassName.txt").write_text(class_list)
    (out / IMAGES / "ClassName.txt").write_text(class_list)
