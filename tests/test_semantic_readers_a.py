"""K12 readers, part A (Food-101, CIFAR-10/100, Birdsnap, SUN397, Stanford Cars, FGVC-Aircraft) on their mini data.

Every mini writer gives class j 25 + j training and 5 + j test images: the per-class counts are all distinct, so a
shuffled or off-by-one label mapping shows up as a wrong ``bincount``.
"""

from __future__ import annotations

import io
import logging
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from benchmark.errors import DataError
from tasks.semantic.readers import aircraft, birdsnap, cars, cifar, food101, sun397

DATASETS = {  # name: (module or adapter, classes, split name prefix)
    "food101": (food101, 10, "k12_food101"),
    "cifar10": (cifar.CIFAR10, 10, "k12_cifar10"),
    "cifar100": (cifar.CIFAR100, 20, "k12_cifar100"),
    "birdsnap": (birdsnap, 10, "k12_birdsnap"),
    "sun397": (sun397, 10, "k12_sun397"),
    "cars": (cars, 10, "k12_cars"),
    "aircraft": (aircraft, 10, "k12_aircraft"),
}
META_FILES = {  # the files whose absence must be reported by name
    "food101": ["food-101/meta/classes.txt", "food-101/meta/train.txt", "food-101/meta/test.txt"],
    "cifar10": ["cifar-10-batches-py/batches.meta", "cifar-10-batches-py/data_batch_3",
                "cifar-10-batches-py/test_batch"],
    "cifar100": ["cifar-100-python/meta", "cifar-100-python/train", "cifar-100-python/test"],
    "birdsnap": ["birdsnap/species.txt", "birdsnap/images.txt", "birdsnap/test_images.txt"],
    "sun397": ["SUN397/ClassName.txt", "Partitions/Training_01.txt", "Partitions/Testing_01.txt"],
    "cars": ["stanford_cars/devkit/cars_meta.mat", "stanford_cars/devkit/cars_train_annos.mat",
             "stanford_cars/cars_test_annos_withlabels.mat"],
    "aircraft": ["fgvc-aircraft-2013b/data/variants.txt", "fgvc-aircraft-2013b/data/images_variant_trainval.txt",
                 "fgvc-aircraft-2013b/data/images_variant_test.txt"],
}


@pytest.fixture(scope="module")
def minis(tmp_path_factory) -> dict[str, Path]:
    """Every mini dataset, written once with seed 0 (tests that alter one work on a copy)."""
    out = {}
    for name, (mod, _, _) in DATASETS.items():
        out[name] = tmp_path_factory.mktemp(name)
        mod.make_mini(out[name], 0)
    return out


def _copy(minis, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(minis[name], tmp_path / name))


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", DATASETS)
def test_read_mini(minis, name):
    mod, n_classes, prefix = DATASETS[name]
    assert isinstance(mod.LAYOUT, str) and "\n" not in mod.LAYOUT
    train, test = mod.read(minis[name])
    assert len(train.classes) == n_classes and train.classes == test.classes
    assert (train.name, test.name) == (f"{prefix}/train", f"{prefix}/test")
    assert train.labels.dtype == np.int64 and test.labels.dtype == np.int64
    assert np.bincount(train.labels).tolist() == [25 + j for j in range(n_classes)]
    assert np.bincount(test.labels).tolist() == [5 + j for j in range(n_classes)]
    for split in (train, test):
        for i in (0, len(split) - 1):
            img = split.load(i)
            assert img.mode == "RGB" and img.size == (32, 32)


@pytest.mark.parametrize("name", ["food101", "sun397", "birdsnap"])
def test_labels_match_class_folders(minis, name):
    """Where images live in class folders, every label names the folder its image is in."""
    train, test = DATASETS[name][0].read(minis[name])
    for split in (train, test):
        for path, y in zip(split.paths, split.labels):
            folder = path.parent.name if name != "sun397" else "/".join(path.parent.parts[-2:])
            expected = split.classes[y].replace(" ", "_")
            assert folder == expected or folder.endswith("/" + expected), (path, split.classes[y])


def test_class_names(minis):
    assert "dress/indoor" in sun397.read(minis["sun397"])[0].classes  # two-level SUN class, "/d/dress/indoor"
    assert aircraft.read(minis["aircraft"])[0].classes == list(aircraft.MINI_VARIANTS)  # spaces, "F/A-18"
    assert cars.read(minis["cars"])[0].classes[0] == "Pool Tshirt 2012"


def test_cifar_pixels_are_chw_rows(minis):
    """A row of b"data" is the R, G, B planes of a 32x32 image; the Split holds it as HWC."""
    with open(minis["cifar10"] / "cifar-10-batches-py/test_batch", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    test = cifar.read10(minis["cifar10"])[1]
    row, img = raw[b"data"][7], test.images[7]
    for y, x, c in ((0, 0, 0), (3, 17, 1), (31, 5, 2), (20, 31, 0)):
        assert img[y, x, c] == row[c * 1024 + y * 32 + x]
    assert test.labels[7] == raw[b"labels"][7]


@pytest.mark.parametrize("name", DATASETS)
def test_mini_is_deterministic(minis, tmp_path, name):
    mod = DATASETS[name][0]
    mod.make_mini(tmp_path / "same", 0)
    mod.make_mini(tmp_path / "other", 1)
    reference = _tree(minis[name])
    assert _tree(tmp_path / "same") == reference
    assert _tree(tmp_path / "other") != reference


@pytest.mark.parametrize("name,rel", [(n, rel) for n, rels in META_FILES.items() for rel in rels])
def test_missing_file_is_named(minis, tmp_path, name, rel):
    root = _copy(minis, name, tmp_path)
    (root / rel).unlink()
    with pytest.raises(DataError, match="is missing") as err:
        DATASETS[name][0].read(root)
    assert str(root / rel) in err.value.problem and DATASETS[name][0].LAYOUT in err.value.problem


def _drop_lines(path: Path, drop) -> None:
    path.write_text("".join(f"{line}\n" for line in path.read_text().splitlines() if not drop(line)))


def _drop_cifar_class0(path: Path, label_key: bytes) -> None:
    with open(path, "rb") as fh:
        batch = pickle.load(fh, encoding="bytes")
    keep = np.asarray(batch[label_key]) != 0
    batch[b"data"] = batch[b"data"][keep]
    batch[label_key] = np.asarray(batch[label_key])[keep].tolist()
    with open(path, "wb") as fh:
        pickle.dump(batch, fh, protocol=2)


def _drop_cars_class1(path: Path) -> None:
    records = sio.loadmat(path)["annotations"]
    keep = np.array([int(np.squeeze(c)) != 1 for c in records["class"][0]])
    sio.savemat(path, {"annotations": records[:, keep]})


NO_TEST_IMAGES_FOR_CLASS_0 = {  # remove every test image of the first class, in each format's own way
    "food101": lambda r: _drop_lines(r / "food-101/meta/test.txt", lambda s: s.startswith("tshirt/")),
    "cifar10": lambda r: _drop_cifar_class0(r / "cifar-10-batches-py/test_batch", b"labels"),
    "cifar100": lambda r: _drop_cifar_class0(r / "cifar-100-python/test", b"fine_labels"),
    "birdsnap": lambda r: [(r / "birdsnap/download/images" / p).unlink(missing_ok=True)
                           for p in (r / "birdsnap/test_images.txt").read_text().split()[1:]
                           if p.startswith("Tshirt/")],
    "sun397": lambda r: _drop_lines(r / "Partitions/Testing_01.txt", lambda s: s.startswith("/a/ankle_boot/")),
    "cars": lambda r: _drop_cars_class1(r / "stanford_cars/cars_test_annos_withlabels.mat"),
    "aircraft": lambda r: _drop_lines(r / "fgvc-aircraft-2013b/data/images_variant_test.txt",
                                      lambda s: s.endswith(" 707-320")),
}


@pytest.mark.parametrize("name", DATASETS)
def test_class_without_test_images(minis, tmp_path, name):
    root = _copy(minis, name, tmp_path)
    NO_TEST_IMAGES_FOR_CLASS_0[name](root)
    with pytest.raises(DataError, match="have no test images"):
        DATASETS[name][0].read(root)


@pytest.mark.parametrize("name,folder", [("food101", "food-101/images/sandal"), ("sun397", "SUN397/d/dress/indoor")])
def test_empty_class_folder(minis, tmp_path, name, folder):
    root = _copy(minis, name, tmp_path)
    for f in (root / folder).iterdir():
        f.unlink()
    with pytest.raises(DataError, match="missing or empty") as err:
        DATASETS[name][0].read(root)
    assert str(root / folder) in err.value.problem


def test_birdsnap_missing_images_are_counted(minis, caplog):
    with caplog.at_level(logging.WARNING, logger=birdsnap.__name__):
        train, test = birdsnap.read(minis["birdsnap"])
    assert (train.notes, test.notes) == ({"missing_images": 3}, {"missing_images": 2})
    assert "3 of 298 listed images are missing" in caplog.text
    assert all(p.is_file() for p in train.paths + test.paths)


def test_birdsnap_images_beside_txt_files(minis, tmp_path):
    """get_birdsnap.py --output_dir . puts the images in birdsnap/images/ instead of download/images/."""
    root = _copy(minis, "birdsnap", tmp_path)
    (root / "birdsnap/download/images").rename(root / "birdsnap/images")
    train, test = birdsnap.read(root)
    assert (len(train), len(test)) == (295, 95) and train.paths[0].is_relative_to(root / "birdsnap/images")


def test_birdsnap_mostly_missing_is_an_error(minis, tmp_path):
    root = _copy(minis, "birdsnap", tmp_path)
    shutil.rmtree(root / "birdsnap/download")
    with pytest.raises(DataError, match="298 of 298 listed images are missing"):
        birdsnap.read(root)


def test_sun397_partitions_inside_image_folder(minis, tmp_path):
    root = _copy(minis, "sun397", tmp_path)
    (root / "Partitions").rename(root / "SUN397/Partitions")
    assert [len(s) for s in sun397.read(root)] == [295, 95]


def test_cifar_refuses_foreign_pickles(minis, tmp_path):
    root = _copy(minis, "cifar10", tmp_path)
    meta = root / "cifar-10-batches-py/batches.meta"
    meta.write_bytes(pickle.dumps([b"airplane"], protocol=2))
    with pytest.raises(DataError, match="expected a dict with keys"):
        cifar.read10(root)
    meta.write_bytes(pickle.dumps({b"label_names": print}, protocol=2))  # a global a CIFAR file never has
    with pytest.raises(DataError, match=r"\.print is not allowed in a CIFAR file"):
        cifar.read10(root)


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the real CIFAR files: every str/bytes a BINSTRING, the array
    rebuilt by numpy.core.multiarray._reconstruct."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj if isinstance(obj, bytes) else obj.encode("latin1")
        self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw if len(raw) < 256
                   else pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)

    def save_reconstruct(self, obj, name=None):
        self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")

    dispatch[bytes] = dispatch[str] = save_py2_str
    dispatch[type(np._core.multiarray._reconstruct)] = save_reconstruct


def test_cifar_reads_python2_pickles(minis, tmp_path):
    root = _copy(minis, "cifar10", tmp_path)
    for path in (root / "cifar-10-batches-py").iterdir():
        with open(path, "rb") as fh:
            obj = pickle.load(fh, encoding="bytes")
        buf = io.BytesIO()
        _Py2Pickler(buf, protocol=2).dump(obj)
        assert b"numpy.core.multiarray\n_reconstruct" in buf.getvalue() or b"data" not in obj
        path.write_bytes(buf.getvalue())
    expected, got = cifar.read10(minis["cifar10"]), cifar.read10(root)
    for a, b in zip(expected, got):
        assert a.classes == b.classes and np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


def test_unknown_class_in_split_file(minis, tmp_path):
    root = _copy(minis, "aircraft", tmp_path)
    listing = root / "fgvc-aircraft-2013b/data/images_variant_test.txt"
    listing.write_text(listing.read_text() + "1234567 Boeing 999\n")
    with pytest.raises(DataError, match="'Boeing 999' is not in variants.txt"):
        aircraft.read(root)
