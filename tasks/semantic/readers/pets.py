"""Oxford-IIIT Pets (K12): 37 cat and dog breeds, metric mean per-class accuracy.

Real layout (images.tar.gz + annotations.tar.gz extracted into one folder, torchvision's oxford-iiit-pet/): root
with images/<Breed_name>_<n>.jpg and annotations/trainval.txt, annotations/test.txt, one line "<image name without
.jpg> <class id 1..37> <species 1 cat | 2 dog> <breed id within the species>" per image (3,680 / 3,669). The
files hold no class names: as torchvision, a class is named after the image-name prefix of its images
("american_pit_bull_terrier" -> "American Pit Bull Terrier"), classes ordered by class id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.errors import DataError
from tasks.semantic import common, mini_images
from tasks.semantic.common import Split

LAYOUT = ("root with images/<Breed_name>_<n>.jpg and annotations/trainval.txt, annotations/test.txt (lines "
          "'<image name> <class id 1..37> <species 1|2> <breed id>')")
DATASET_ID = 10  # K12 order (seeds the mini generator)
FIX = "re-extract images.tar.gz and annotations.tar.gz of the Oxford-IIIT Pet dataset"


def _read_list(root: Path, split: str) -> list[tuple[str, int]]:
    """(image name, class id 1..) per line of annotations/<split>.txt."""
    path = common.require(root, f"annotations/{split}.txt", LAYOUT)
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 4 or not parts[1].isdigit():
            raise DataError(f"{path}:{n}: expected '<image> <class id> <species> <breed id>', got {line!r}", FIX)
        rows.append((parts[0], int(parts[1])))
    return rows


def _class_names(rows: list[tuple[str, int]]) -> list[str]:
    """Class id -> name from the image-name prefixes; ids must be 1..K and each id one prefix."""
    prefix: dict[int, str] = {}
    for image, cid in rows:
        breed = image.rsplit("_", 1)[0]
        if prefix.setdefault(cid, breed) != breed:
            raise DataError(f"class id {cid} is used by two breeds ({prefix[cid]}, {breed})", FIX)
    if sorted(prefix) != list(range(1, len(prefix) + 1)):
        raise DataError(f"class ids {sorted(prefix)} are not 1..{len(prefix)}", FIX)
    return [" ".join(part.title() for part in prefix[cid].split("_")) for cid in sorted(prefix)]


def read(root: Path) -> tuple[Split, Split]:
    """(trainval, test) of Oxford-IIIT Pets from the folder holding images/ and annotations/."""
    root = Path(root)
    rows = {split: _read_list(root, split) for split in ("trainval", "test")}
    classes = _class_names(rows["trainval"] + rows["test"])
    common.require(root, "images", LAYOUT)
    train, test = (Split(classes, np.array([cid - 1 for _, cid in r], dtype=np.int64),
                         paths=[root / "images" / f"{image}.jpg" for image, _ in r], name=f"k12_pets/{split}")
                   for split, r in (("train", rows["trainval"]), ("test", rows["test"])))
    common.check_classes(train, test)
    return train, test


# ------------------------------------------------------------------------------------------------ mini

# The first 10 real classes (class ids 1..10) with their species: cats are capitalised in the real image names.
MINI_BREEDS = (("Abyssinian", 1), ("american_bulldog", 2), ("american_pit_bull_terrier", 2), ("basset_hound", 2),
               ("beagle", 2), ("Bengal", 1), ("Birman", 1), ("Bombay", 1), ("boxer", 2), ("British_Shorthair", 1))
MINI_TRAIN, MINI_TEST = 30, 10


def make_mini(out: Path, seed: int) -> None:
    """A small Pets in the real layout at root ``out``: 10 breeds, 30 trainval + 10 test images each."""
    out = Path(out)
    rng = np.random.default_rng([seed, DATASET_ID])
    lines: dict[str, list[str]] = {"trainval": [], "test": []}
    breed_ids = {1: 0, 2: 0}
    for cid, (breed, species) in enumerate(MINI_BREEDS, 1):
        breed_ids[species] += 1  # the 4th column numbers the breeds within each species
        n = MINI_TRAIN + MINI_TEST
        for k, img in enumerate(mini_images.sample(cid - 1, n, rng), 1):
            mini_images.save_jpeg(out / "images" / f"{breed}_{k}.jpg", img)
        test = set(rng.permutation(np.arange(1, n + 1))[:MINI_TEST].tolist())
        for k in range(1, n + 1):
            lines["test" if k in test else "trainval"].append(f"{breed}_{k} {cid} {species} {breed_ids[species]}\n")
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split, rows in lines.items():
        (out / "annotations" / f"{split}.txt").write_text("".join(rows))
