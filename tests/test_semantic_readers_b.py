"""Semantic readers VOC2007, DTD, Pets, Caltech-101, Flowers-102, iNat18, CoG on their minis, and the K12 metrics."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from benchmark.errors import DataError
from tasks.semantic import metrics
from tasks.semantic.readers import caltech101, cog, dtd, flowers102, inat18, pets, voc2007

READERS = {"voc2007": voc2007, "dtd": dtd, "pets": pets, "caltech101": caltech101, "flowers102": flowers102,
           "inat18": inat18, "cog": cog}
# (classes, train images, test images) of each mini with seed 0
SIZES = {"voc2007": (20, 400, 160), "dtd": (10, 300, 100), "pets": (10, 300, 100), "caltech101": (10, 285, 95),
         "flowers102": (10, 300, 100), "inat18": (10, 300, 100), "cog": (4, 80, 32)}
# a metadata file each reader needs
META = {"voc2007": "ImageSets/Main/cat_test.txt", "dtd": "labels/val1.txt", "pets": "annotations/test.txt",
        "caltech101": "101_ObjectCategories", "flowers102": "setid.mat", "inat18": "val2018.json",
        "cog": "cog_concepts_split_file.pkl"}


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def minis(tmp_path_factory) -> dict[str, Path]:
    roots = {}
    for name, reader in READERS.items():
        roots[name] = tmp_path_factory.mktemp(name)
        reader.make_mini(roots[name], seed=0)
    return roots


@pytest.fixture
def copy(minis, tmp_path):
    """A writable copy of one mini, for tests that break it."""
    def _copy(name: str) -> Path:
        return Path(shutil.copytree(minis[name], tmp_path / name))
    return _copy


# ------------------------------------------------------------------------------------------------ all readers

@pytest.mark.parametrize("name", READERS)
def test_mini_reads_with_expected_sizes_and_labels(minis, name):
    train, test = READERS[name].read(minis[name])
    n_classes, n_train, n_test = SIZES[name]
    assert (len(train.classes), len(train), len(test)) == (n_classes, n_train, n_test)
    assert train.classes == test.classes
    assert train.name.endswith("/train") and test.name.split("/")[1] in ("test", "val")
    if name == "voc2007":
        assert train.labels.dtype == np.int8 and train.labels.shape == (n_train, 20)
        assert set(np.unique(train.labels)) == {-1, 0, 1}
    else:
        assert train.labels.dtype == np.int64
        assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(range(n_classes))
    assert all(p.is_file() for p in train.paths + test.paths)
    img = test.load(len(test) - 1)
    assert img.mode == "RGB" and img.size == (32, 32)


@pytest.mark.parametrize("name", READERS)
def test_mini_is_deterministic(minis, tmp_path, name):
    READERS[name].make_mini(tmp_path / "again", seed=0)
    assert digest(tmp_path / "again") == digest(minis[name])


@pytest.mark.parametrize("name", READERS)
def test_missing_meta_file_names_it(copy, name):
    root = copy(name)
    target = root / META[name]
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DataError, match=Path(META[name]).name) as err:
        READERS[name].read(root)
    assert READERS[name].LAYOUT in str(err.value)


def _drop_voc_class(root: Path) -> None:
    path = root / "ImageSets/Main/aeroplane_test.txt"
    path.write_text("".join(f"{line.split()[0]} -1\n" for line in path.read_text().splitlines()))


def _drop_lines(path: Path, prefix: str) -> None:
    path.write_text("".join(f"{line}\n" for line in path.read_text().splitlines() if not line.startswith(prefix)))


def _drop_caltech_class(root: Path) -> None:
    for p in sorted((root / "101_ObjectCategories/anchor").iterdir())[1:]:  # one image left: it trains, none tests
        p.unlink()


def _drop_flowers_class(root: Path) -> None:
    labels = scipy.io.loadmat(root / "imagelabels.mat")["labels"].ravel()
    setid = scipy.io.loadmat(root / "setid.mat")
    tst = setid["tstid"].ravel()
    setid = {k: setid[k] for k in ("trnid", "valid")} | {"tstid": tst[labels[tst - 1] != 1][None]}
    scipy.io.savemat(root / "setid.mat", setid)


def _drop_inat_class(root: Path) -> None:
    val = json.loads((root / "val2018.json").read_text())
    first = min(c["id"] for c in val["categories"])
    val["annotations"] = [a for a in val["annotations"] if a["category_id"] != first]
    (root / "val2018.json").write_text(json.dumps(val))


def _drop_cog_class(root: Path) -> None:
    split_file = cog.load_pickle(root / cog.SPLIT_FILE)
    split_file[cog.mini_wnid(1, 2)]["test"] = np.array([], dtype="<U8")
    (root / cog.SPLIT_FILE).write_bytes(pickle.dumps(split_file))


DROP_TEST_CLASS = {"voc2007": _drop_voc_class, "dtd": lambda r: _drop_lines(r / "labels/test1.txt", "banded/"),
                   "pets": lambda r: _drop_lines(r / "annotations/test.txt", "Abyssinian_"),
                   "caltech101": _drop_caltech_class, "flowers102": _drop_flowers_class, "inat18": _drop_inat_class,
                   "cog": _drop_cog_class}


@pytest.mark.parametrize("name", READERS)
def test_class_absent_from_test_is_a_data_error(copy, name):
    root = copy(name)
    DROP_TEST_CLASS[name](root)
    with pytest.raises(DataError, match="classes have no test images"):
        READERS[name].read(root)


@pytest.mark.parametrize("name,folder", [("dtd", "images/zigzagged"), ("caltech101", "101_ObjectCategories/zebra")])
def test_empty_class_folder_names_it(copy, name, folder):
    root = copy(name)
    (root / folder).mkdir()
    with pytest.raises(DataError, match=Path(folder).name):
        READERS[name].read(root)


# ------------------------------------------------------------------------------------------------ per dataset

def test_voc_keeps_difficult_flags_as_in_the_files(minis):
    train, test = voc2007.read(minis["voc2007"])
    assert train.classes == list(voc2007.CLASSES)
    lines = (minis["voc2007"] / "ImageSets/Main/dog_test.txt").read_text().splitlines()
    from_file = {line.split()[0]: int(line.split()[1]) for line in lines}
    got = {p.stem: int(flag) for p, flag in zip(test.paths, test.labels[:, voc2007.CLASSES.index("dog")])}
    assert got == from_file
    assert (train.labels == 0).sum() > 0 and (test.labels == 0).sum() > 0
    assert ((train.labels == 1) | (train.labels == 0)).sum(1).min() >= 1  # every image has a label
    assert all(len(p.stem) == 6 for p in train.paths)
    assert not {p.stem for p in train.paths} & {p.stem for p in test.paths}


def test_voc_class_files_must_agree(copy):
    root = copy("voc2007")
    path = root / "ImageSets/Main/sofa_trainval.txt"
    path.write_text("".join(f"{line}\n" for line in path.read_text().splitlines()[1:]))  # one image fewer
    with pytest.raises(DataError, match="sofa_trainval.txt lists other images"):
        voc2007.read(root)


def test_pets_class_names_from_image_prefixes(minis):
    train, _ = pets.read(minis["pets"])
    assert train.classes[:3] == ["Abyssinian", "American Bulldog", "American Pit Bull Terrier"]
    assert all(p.name.startswith(pets.MINI_BREEDS[y][0] + "_") for p, y in zip(train.paths, train.labels))


def test_dtd_classes_are_folders_and_train_is_train1_plus_val1(minis):
    train, test = dtd.read(minis["dtd"])
    assert train.classes == list(dtd.MINI_CLASSES)
    listed = [(minis["dtd"] / "labels" / f"{f}.txt").read_text().split() for f in ("train1", "val1")]
    assert [str(p.relative_to(minis["dtd"] / "images")) for p in train.paths] == listed[0] + listed[1]
    assert all(p.parent.name == train.classes[y] for p, y in zip(test.paths, test.labels))


def test_caltech_fixed_split_is_deterministic_and_keeps_background(minis, copy):
    listing = caltech101.split_listing(minis["caltech101"])
    assert listing == caltech101.split_listing(copy("caltech101"))
    rows = [line.split() for line in listing.splitlines()]
    assert any(rel.startswith("BACKGROUND_Google/") for rel, _ in rows)
    train, test = caltech101.read(minis["caltech101"])
    assert train.classes[0] == "BACKGROUND_Google" and train.classes == sorted(caltech101.MINI_CLASSES)
    root = minis["caltech101"] / "101_ObjectCategories"
    assert sorted(f"{p.relative_to(root)}" for p in train.paths) == sorted(r for r, s in rows if s == "train")
    assert sorted(f"{p.relative_to(root)}" for p in test.paths) == sorted(r for r, s in rows if s == "test")
    counts = np.bincount(train.labels)
    assert counts[train.classes.index("ant")] == 15 and counts[train.classes.index("accordion")] == 30
    assert [caltech101.n_train(n) for n in (800, 31, 30, 20, 1)] == [30, 30, 22, 15, 1]


def test_flowers_labels_and_names(minis):
    train, test = flowers102.read(minis["flowers102"])
    labels = scipy.io.loadmat(minis["flowers102"] / "imagelabels.mat")["labels"].ravel()
    assert train.classes[0] == "class_001" and len(train.classes) == 10
    assert all(train.labels[k] == labels[int(p.stem.split("_")[1]) - 1] - 1 for k, p in enumerate(train.paths))
    assert all(len(p.stem.split("_")[1]) == 5 for p in test.paths)


def test_inat_labels_follow_sorted_category_ids_and_val_may_lack_categories(copy):
    root = copy("inat18")
    val = json.loads((root / "val2018.json").read_text())
    del val["categories"]
    (root / "val2018.json").write_text(json.dumps(val))
    train, test = inat18.read(root)
    ids = sorted(c["id"] for c in json.loads((root / "train2018.json").read_text())["categories"])
    assert all(int(p.parent.name) == ids[y] for p, y in zip(test.paths, test.labels))
    assert all(p.parts[-4] == "train_val2018" for p in train.paths)


def test_inat_annotation_without_image_is_a_data_error(copy):
    root = copy("inat18")
    val = json.loads((root / "val2018.json").read_text())
    val["annotations"][0]["image_id"] = 10**9
    (root / "val2018.json").write_text(json.dumps(val))
    with pytest.raises(DataError, match="val2018.json.*no entry in 'images'"):
        inat18.read(root)


def test_cog_levels_differ_and_use_sorted_wnids(minis):
    seen = set()
    for level in range(1, cog.LEVELS + 1):
        train, test = cog.read_level(minis["cog"], level)
        assert train.classes == sorted(train.classes) and train.name == f"cog_l{level}/train"
        assert all(p.parent.name == train.classes[y] for p, y in zip(test.paths, test.labels))
        seen.add(tuple(train.classes))
    assert len(seen) == cog.LEVELS


def test_cog_image_root_argument_leading_slash_and_missing_images(copy, tmp_path):
    root = copy("cog")
    images = Path(shutil.move(root / "imagenet21k", tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="imagenet21k"):
        cog.read(root)
    split_file = cog.load_pickle(root / cog.SPLIT_FILE)
    wnid = cog.mini_wnid(1, 0)
    split_file[wnid]["train"] = np.array(["/" + p for p in split_file[wnid]["train"]])  # as some copies list them
    (root / cog.SPLIT_FILE).write_bytes(pickle.dumps(split_file))
    for p in sorted((images / wnid).iterdir())[:3]:
        p.unlink()
    train, test = cog.read_level(root, 1, imagenet21k=images)
    assert train.notes["missing_images"] + test.notes["missing_images"] == 3
    assert len(train) + len(test) == SIZES["cog"][1] + SIZES["cog"][2] - 3
    for level_wnid in (cog.mini_wnid(1, k) for k in range(cog.MINI_CONCEPTS)):
        shutil.rmtree(images / level_wnid)
    with pytest.raises(DataError, match="are not under"):
        cog.read_level(root, 1, imagenet21k=images)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("file", [cog.LEVELS_FILE, cog.SPLIT_FILE])
def test_cog_refuses_malicious_pickle_without_running_it(copy, tmp_path, file):
    root = copy("cog")
    marker = tmp_path / "pwned"
    (root / file).write_bytes(pickle.dumps({"n00000001": _Evil(marker)}))
    with pytest.raises(DataError, match=f"refusing to load .*{file}.*posix.system"):
        cog.read(root)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_cog_unpickler_reads_numpy_path_arrays_of_any_protocol(tmp_path, protocol):
    data = {"n01": {"train": np.array(["n01/n01_1.JPEG", "n01/n01_7.JPEG"]), "test": np.array(["a"], dtype=object)}}
    (tmp_path / "s.pkl").write_bytes(pickle.dumps(data, protocol=protocol))
    got = cog.load_pickle(tmp_path / "s.pkl")
    assert got["n01"]["train"].tolist() == ["n01/n01_1.JPEG", "n01/n01_7.JPEG"] and got["n01"]["test"][0] == "a"


# ------------------------------------------------------------------------------------------------ metrics

# Textbook ranking: 10 samples already in descending score order, 5 positives at ranks 1, 3, 4, 7, 10.
#   rank       1    2    3    4    5    6    7    8    9    10
#   hit        T    F    T    T    F    F    T    F    F    T
#   precision  1   1/2  2/3  3/4  3/5  3/6  4/7  4/8  4/9  5/10
#   recall    .2   .2   .4   .6   .6   .6   .8   .8   .8   1.0
# Interpolated precision p(t) = max precision at recall >= t:
#   t = 0, .1, .2 -> 1 (rank 1; recall 1/5 reaches t = .2 exactly);  t = .3, .4, .5, .6 -> 3/4 (rank 4; 3/5 = .6)
#   t = .7, .8 -> 4/7 (rank 7);  t = .9, 1 -> 1/2 (rank 10)
# AP = (3 * 1 + 4 * 3/4 + 2 * 4/7 + 2 * 1/2) / 11 = (7 + 8/7) / 11 = 57/77 = 0.74026...
TEXTBOOK_SCORES = np.linspace(1.0, 0.1, 10)
TEXTBOOK_LABELS = np.array([1, -1, 1, 1, -1, -1, 1, -1, -1, 1], dtype=np.int8)
TEXTBOOK_AP = 57 / 77


def test_ap11_textbook_example():
    assert metrics.ap11(TEXTBOOK_SCORES, TEXTBOOK_LABELS) == pytest.approx(TEXTBOOK_AP, abs=1e-12)


def test_ap11_ignores_difficult_and_sorts_ties_stably():
    # two difficult samples with the highest and a middle score change nothing
    scores = np.concatenate([TEXTBOOK_SCORES, [2.0, 0.55]])
    labels = np.concatenate([TEXTBOOK_LABELS, [0, 0]]).astype(np.int8)
    assert metrics.ap11(scores, labels) == pytest.approx(TEXTBOOK_AP, abs=1e-12)
    # equal scores keep the input order (VOC devkit): negative first -> precision 1/2 everywhere; positive first -> 1
    assert metrics.ap11(np.array([0.5, 0.5]), np.array([-1, 1])) == pytest.approx(0.5)
    assert metrics.ap11(np.array([0.5, 0.5]), np.array([1, -1])) == pytest.approx(1.0)
    assert np.isnan(metrics.ap11(np.array([0.3, 0.2]), np.array([-1, 0])))


def test_map11_perfect_ranking_and_mean_over_classes():
    labels = np.stack([TEXTBOOK_LABELS, np.where(np.arange(10) < 3, 1, -1)], 1).astype(np.int8)
    perfect = np.stack([labels[:, 0], labels[:, 1]], 1).astype(float)  # positives scored above negatives
    m, aps = metrics.map11(perfect, labels)
    assert m == pytest.approx(100.0) and aps == pytest.approx([100.0, 100.0])
    scores = np.stack([TEXTBOOK_SCORES, TEXTBOOK_SCORES], 1)  # class 2: positives at ranks 1-3 -> AP 1
    m, aps = metrics.map11(scores, labels)
    assert aps == pytest.approx([100 * TEXTBOOK_AP, 100.0]) and m == pytest.approx((100 * TEXTBOOK_AP + 100) / 2)


def test_mean_per_class_accuracy_differs_from_top1_on_unbalanced_classes():
    # 8 images of class 0 all right, 2 of class 1 with one right:
    # top-1 = 9/10 = 90 %; per class 8/8 = 1 and 1/2 -> mean (1 + 0.5) / 2 = 75 %
    y = np.array([0] * 8 + [1] * 2)
    pred = np.array([0] * 8 + [0, 1])
    assert metrics.top1(pred, y) == pytest.approx(90.0)
    assert metrics.mean_per_class_accuracy(pred, y) == pytest.approx(75.0)
    scores = np.eye(2)[pred]  # scores (N, C) give the same numbers through argmax
    assert metrics.mean_per_class_accuracy(scores, y) == pytest.approx(75.0)
