"""ADE20K data side: the mini generator (layout, determinism, labels, learnable textures) and the layout check."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from benchmark.errors import DataError
from tasks.segmentation import layout, mini

COUNTS = {"training": ("train", 80), "validation": ("val", 20)}
VALUES = set(mini.CLASSES.values())


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ade(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ade") / "ADEChallengeData2016"
    mini.make_ade20k(root, seed=0)
    return root


@pytest.fixture
def copy(ade, tmp_path) -> Path:
    """A private copy to break (about 1 MB)."""
    return Path(shutil.copytree(ade, tmp_path / "ADEChallengeData2016"))


def pairs(root: Path, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB float32, label) per image of a split, in name order."""
    out = []
    for jpg in sorted((root / "images" / split).glob("*.jpg")):
        rgb = cv2.imread(str(jpg))[..., ::-1].astype(np.float32)
        out.append((rgb, np.asarray(Image.open(root / "annotations" / split / f"{jpg.stem}.png"))))
    return out


# ------------------------------------------------------------------------------------------------ generator

def test_layout_names_and_formats(ade):
    assert sorted(p.relative_to(ade).as_posix() for p in ade.glob("*/*")) == [
        "annotations/training", "annotations/validation", "images/training", "images/validation"]
    shapes = set()
    for split, (infix, n) in COUNTS.items():
        names = [f"ADE_{infix}_{i:08d}" for i in range(1, n + 1)]
        assert sorted(p.name for p in (ade / "images" / split).iterdir()) == [f"{s}.jpg" for s in names]
        assert sorted(p.name for p in (ade / "annotations" / split).iterdir()) == [f"{s}.png" for s in names]
        for name in names:
            img = cv2.imread(str(ade / "images" / split / f"{name}.jpg"), cv2.IMREAD_UNCHANGED)
            with Image.open(ade / "annotations" / split / f"{name}.png") as label:
                assert label.mode == "L" and label.size == (img.shape[1], img.shape[0])
            assert img.ndim == 3 and img.shape[2] == 3 and 64 <= min(img.shape[:2]) <= max(img.shape[:2]) <= 96
            shapes.add(img.shape[:2])
    assert len(shapes) > 5  # sizes vary
    assert sum(p.stat().st_size for p in ade.rglob("*") if p.is_file()) < 5e6


def test_deterministic(ade, tmp_path):
    mini.make_ade20k(tmp_path / "same", seed=0)
    assert digest(tmp_path / "same") == digest(ade)
    mini.make_ade20k(tmp_path / "other", seed=1)
    assert digest(tmp_path / "other") != digest(ade)


def test_label_values_and_class_coverage(ade):
    for split in COUNTS:
        labels = [label for _, label in pairs(ade, split)]
        present = set(np.unique(np.concatenate([lab.ravel() for lab in labels])).tolist())
        assert present == VALUES | {0}, split  # nothing else, and every class in every split
        assert all(2 <= len(set(np.unique(lab).tolist()) - {0}) <= 5 for lab in labels)
        assert sum((lab == 0).any() for lab in labels) >= len(labels) // 4  # 'other' objects and boundaries


def test_class_values_are_ade20k_indices():
    pytest.importorskip("mmseg")
    from mmseg.datasets import ADE20KDataset
    names = [c.strip() for c in ADE20KDataset.METAINFO["classes"]]  # mmseg spells 'bed ' with a space
    assert len(names) == 150
    assert {name: names.index(name) + 1 for name in mini.CLASSES} == mini.CLASSES


def _features(rgb: np.ndarray) -> np.ndarray:
    """Per pixel: 5×5 mean colour and 5×5 colour standard deviation (a crude texture cue)."""
    mean, sq = cv2.blur(rgb, (5, 5)), cv2.blur(rgb * rgb, (5, 5))
    return np.concatenate([mean, np.sqrt(np.clip(sq - mean * mean, 0, None))], axis=-1).reshape(-1, 6)


def test_classes_are_separable_by_appearance(ade):
    train, val = pairs(ade, "training"), pairs(ade, "validation")
    values = sorted(VALUES)
    colours = np.stack([np.concatenate([rgb[lab == v] for rgb, lab in train]).mean(0) for v in values])
    gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1)[np.triu_indices(len(values), 1)]
    assert gaps.min() > 20  # mean colours differ by > 20 grey levels for every pair of classes
    # Learnable from local appearance: a nearest-class-mean rule on 5×5 colour statistics, fitted on training,
    # labels most validation pixels (about 0.89 with seed 0); a real network does far better.
    x_tr, y_tr = np.concatenate([_features(r) for r, _ in train]), np.concatenate([lab.ravel() for _, lab in train])
    x_va, y_va = np.concatenate([_features(r) for r, _ in val]), np.concatenate([lab.ravel() for _, lab in val])
    scale = x_tr[y_tr > 0].std(0)
    centres = np.stack([x_tr[y_tr == v].mean(0) for v in values]) / scale
    keep = y_va > 0
    dist = ((x_va[keep, None] / scale - centres[None]) ** 2).sum(-1)
    assert (np.array(values)[dist.argmin(1)] == y_va[keep]).mean() > 0.8


def test_mmseg_reads_it_with_reduce_zero_label(ade):
    pytest.importorskip("mmseg")
    from mmengine.registry import init_default_scope
    from mmseg.datasets import ADE20KDataset
    init_default_scope("mmseg")
    ds = ADE20KDataset(data_root=str(ade), data_prefix=dict(img_path="images/validation",
                                                            seg_map_path="annotations/validation"),
                       pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")])
    assert len(ds) == 20
    sample = ds[0]
    raw = np.asarray(Image.open(ade / "annotations/validation/ADE_val_00000001.png"))
    assert sample["img"].shape[:2] == raw.shape
    assert np.array_equal(sample["gt_seg_map"], np.where(raw == 0, 255, raw.astype(np.int64) - 1))


# ------------------------------------------------------------------------------------------------ layout check

def test_check_passes_on_mini(ade):
    layout.check_ade20k(ade)


def test_check_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        layout.check_ade20k(tmp_path / "nowhere")


def test_check_missing_split_folder(copy):
    shutil.rmtree(copy / "annotations" / "validation")
    with pytest.raises(DataError, match=r"missing folder .*annotations/validation") as err:
        layout.check_ade20k(copy)
    assert "docs/datasets.md" in err.value.fix


def test_check_image_without_annotation(copy):
    for name in ("ADE_train_00000007", "ADE_train_00000003"):
        (copy / "annotations" / "training" / f"{name}.png").unlink()
    with pytest.raises(DataError, match=r"2 of 80 images .* no annotation .*ADE_train_00000003, ADE_train_00000007"):
        layout.check_ade20k(copy)


def test_check_annotation_without_image(copy):
    (copy / "images" / "validation" / "ADE_val_00000020.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of 20 annotations .* no image .*ADE_val_00000020"):
        layout.check_ade20k(copy)


def test_check_three_channel_png(copy):
    png = copy / "annotations" / "training" / "ADE_train_00000001.png"
    label = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(png), np.repeat(label[..., None], 3, axis=2))
    with pytest.raises(DataError, match=r"ADE_train_00000001\.png is a 'RGB' PNG with 3 channel"):
        layout.check_ade20k(copy)


def test_check_value_above_150(copy):
    png = copy / "annotations" / "validation" / "ADE_val_00000002.png"
    label = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    label[0, 0] = 200
    cv2.imwrite(str(png), label)
    with pytest.raises(DataError, match=r"ADE_val_00000002\.png holds the value 200, above 150"):
        layout.check_ade20k(copy)


def test_check_empty_split(copy):
    for sub in ("images", "annotations"):
        for p in (copy / sub / "validation").iterdir():
            p.unlink()
    with pytest.raises(DataError, match="validation split is empty"):
        layout.check_ade20k(copy)


def test_check_errors_are_one_line(copy):
    shutil.rmtree(copy / "images" / "training")
    with pytest.raises(DataError) as err:
        layout.check_ade20k(copy)
    assert "\n" not in str(err.value) and err.value.fix
