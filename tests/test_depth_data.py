"""Depth data side: mini generators, mmseg datasets and pipeline on them, BTS converter, layout checks."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmark.errors import DataError
from tasks.depth import bts, layout, mini

N_TRAIN, N_TEST = 12, 10  # small and fast; None lines: round(0.1 * 10) = 1


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def nyu(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nyu")
    mini.make_nyu(root, seed=0, n_train=N_TRAIN, n_test=N_TEST)
    return root


@pytest.fixture(scope="module")
def kitti(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kitti")
    mini.make_kitti(root, seed=0, n_train=N_TRAIN, n_test=N_TEST)
    return root


@pytest.fixture(scope="module")
def parts():
    pytest.importorskip("mmseg")
    from mmengine.registry import init_default_scope

    from tasks.depth import mmseg_parts
    init_default_scope("mmseg")  # pipelines name mmseg transforms by bare type, as under the Runner
    return mmseg_parts


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------------ generators

def test_generators_are_deterministic(nyu, kitti, tmp_path):
    mini.make_nyu(tmp_path / "nyu", seed=0, n_train=N_TRAIN, n_test=N_TEST)
    mini.make_kitti(tmp_path / "kitti", seed=0, n_train=N_TRAIN, n_test=N_TEST)
    assert digest(tmp_path / "nyu") == digest(nyu)
    assert digest(tmp_path / "kitti") == digest(kitti)
    mini.make_kitti(tmp_path / "kitti1", seed=1, n_train=N_TRAIN, n_test=N_TEST)
    assert digest(tmp_path / "kitti1") != digest(kitti)


def test_nyu_files_dtypes_and_scale(nyu):
    for split, n in (("train", N_TRAIN), ("test", N_TEST + 1)):
        images = sorted((nyu / "images" / split).glob("*.jpg"))
        assert len(images) == n and len(list((nyu / "annotations" / split).glob("*.png"))) == n
    img = cv2.imread(str(nyu / "images/train/bedroom_0001_00000.jpg"))
    assert img.shape == (60, 80, 3)
    for png in (nyu / "annotations/train").glob("*.png"):
        depth = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == (60, 80)
        assert depth.min() >= 500 and depth.max() <= 9900  # millimetres, dense, 0.5–9.9 m
    moto = cv2.imread(str(nyu / "annotations/test/motorcycle_00000.png"), cv2.IMREAD_UNCHANGED)
    valid = moto[moto > 0]
    assert moto.dtype == np.uint16 and moto.shape == (60, 80) and (moto == 0).any()
    assert valid.min() > 1900 and valid.max() < 5200  # f·B / (d + doffs) for d in 7–60 px


def test_kitti_files_dtypes_scale_and_split_lines(kitti):
    train = layout.parse_split_file(kitti / "eigen_train_files.txt")
    test = layout.parse_split_file(kitti / "eigen_test_files.txt")
    assert len(train) == N_TRAIN and len(test) == N_TEST
    assert sum(e.gt is None for e in test) == 1 and all(e.gt is not None for e in train)
    assert all(e.focal == pytest.approx(721.5377 * 155 / 1242, abs=1e-4) for e in train + test)
    assert not {e.rgb.split("/")[1] for e in train} & {e.rgb.split("/")[1] for e in test}  # drives differ
    for e in test:
        assert (kitti / "raw" / e.rgb).is_file()
        assert (e.gt is None) or (kitti / "gt_depth" / e.gt).is_file()
    assert len(list((kitti / "gt_depth").rglob("*.png"))) == N_TRAIN + N_TEST - 1
    rgb = cv2.imread(str(kitti / "raw" / train[0].rgb), cv2.IMREAD_UNCHANGED)
    assert rgb.shape == (47, 155, 3) and rgb.dtype == np.uint8
    for e in train:
        gt = cv2.imread(str(kitti / "gt_depth" / e.gt), cv2.IMREAD_UNCHANGED)
        assert gt.dtype == np.uint16 and gt.shape == (47, 155)
        assert not gt[:int(0.3 * 47)].any()  # no LiDAR in the upper rows
        assert gt.max() <= 80 * 256 and gt[gt > 0].min() >= 256  # metres × 256, ≤ 80 m
        assert 0.15 < (gt[int(0.3 * 47):] > 0).mean() < 0.32  # sparse: ~30% minus the sky
    assert json.loads((kitti / "dataset_overrides.json").read_text()) == {"kb_crop": [44, 152]}


def test_rendered_depth_is_exact_z_depth():
    """A level camera over a floor: z = f·height / (row centre − cy), whatever the column."""
    floor = mini.Plane(1, 0.0, mini.Surface(0, 0, 0, 8, 10.0, np.ones(3, np.float32)))
    cam = mini.Camera(np.array([0.0, 1.5, 0.0]), 50.0, 0.0, 0.0)
    z = mini._depth(cam, [floor], 40, 60)
    rows = np.arange(40) + 0.5 - 20
    expected = np.where(rows > 0, 50.0 * 1.5 / np.where(rows > 0, rows, 1), np.inf)
    assert np.allclose(z, np.repeat(expected[:, None], 60, axis=1))
    yawed = mini._depth(mini.Camera(np.array([0.0, 1.5, 0.0]), 50.0, 0.3, 0.0), [floor], 40, 60)
    assert np.allclose(yawed, z)  # yaw about the vertical keeps the floor's z-depth


def test_default_generation_sizes(tmp_path):
    mini.make_kitti(tmp_path, n_train=1, n_test=1, size=(47, 155))
    assert json.loads((tmp_path / "dataset_overrides.json").read_text()) == {"kb_crop": [44, 152]}
    assert mini.kb_crop_size((375, 1242)) == (352, 1216)


# ------------------------------------------------------------------------------------------------ mmseg datasets

@pytest.mark.mm
def test_nyu_dataset_loads_mini_data(parts, nyu):
    from mmseg.datasets import NYUDataset
    counts = {}
    for split in ("train", "test"):
        ds = NYUDataset(data_root=str(nyu), data_prefix=dict(img_path=f"images/{split}",
                                                             depth_map_path=f"annotations/{split}"))
        counts[split] = len(ds)
    assert counts == {"train": N_TRAIN, "test": N_TEST + 1}
    infos = {Path(ds.get_data_info(i)["img_path"]).stem: ds.get_data_info(i) for i in range(len(ds))}
    classes = NYUDataset.METAINFO["classes"]
    assert infos["bedroom_00000"]["category_id"] == classes.index("bedroom")
    assert infos["motorcycle_00000"]["category_id"] == -1
    assert Path(infos["bedroom_00000"]["depth_map_path"]).is_file()


@pytest.mark.mm
def test_kitti_dataset_counts_and_infos(parts, kitti):
    test = parts.KITTIEigenDataset(data_root=str(kitti), ann_file="eigen_test_files.txt", test_mode=True)
    train = parts.DATASETS.build(dict(type="KITTIEigenDataset", data_root=str(kitti),
                                      ann_file="eigen_train_files.txt"))
    assert (len(train), len(test), test.skipped) == (N_TRAIN, N_TEST - 1, 1)
    info = test.get_data_info(0)
    assert set(info) >= {"img_path", "depth_map_path", "seg_fields", "category_id", "focal"}
    assert info["img_path"].startswith(str(kitti / "raw")) and Path(info["depth_map_path"]).is_file()
    assert info["focal"] == pytest.approx(90.047, abs=1e-3)


@pytest.mark.mm
def test_kitti_dataset_missing_gt_skipped_in_train_error_in_test(parts, kitti, tmp_path):
    root = copy_tree(kitti, tmp_path / "k")
    entries = layout.parse_split_file(root / "eigen_test_files.txt")
    (root / "gt_depth" / next(e.gt for e in entries if e.gt)).unlink()
    shutil.copy(root / "eigen_test_files.txt", root / "as_train.txt")
    ds = parts.KITTIEigenDataset(data_root=str(root), ann_file="as_train.txt")
    assert (len(ds), ds.skipped) == (N_TEST - 2, 2)
    with pytest.raises(DataError, match="1 depth maps named"):
        parts.KITTIEigenDataset(data_root=str(root), ann_file="eigen_test_files.txt", test_mode=True)


@pytest.mark.mm
def test_kitti_dataset_bad_line_names_file_and_line(parts, kitti, tmp_path):
    root = copy_tree(kitti, tmp_path / "k")
    with open(root / "eigen_test_files.txt", "a") as f:
        f.write("only/two/fields.png 721.5\n")
    with pytest.raises(DataError, match=r"eigen_test_files.txt:11: .*<rgb path> <gt path or None> <focal>"):
        parts.KITTIEigenDataset(data_root=str(root), ann_file="eigen_test_files.txt", test_mode=True)


@pytest.mark.mm
def test_kitti_pipeline_with_kb_crop(parts, kitti):
    ds = parts.KITTIEigenDataset(
        data_root=str(kitti), ann_file="eigen_test_files.txt", test_mode=True,
        pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadDepthAnnotation", depth_rescale_factor=1 / 256),
                  dict(type="KBCrop", crop_size=(44, 152)), dict(type="PackSegInputs", meta_keys=parts.META_KEYS)])
    out = ds[0]
    s = out["data_samples"]
    assert tuple(out["inputs"].shape) == (3, 44, 152)
    assert tuple(s.gt_depth_map.data.shape) == (1, 44, 152)
    assert s.kb_crop == (3, 1, 47, 155) and s.ori_shape == (44, 152) and s.img_shape == (44, 152)
    assert s.focal == pytest.approx(90.047, abs=1e-3) and s.category_id == 0
    raw = cv2.imread(ds.get_data_info(0)["depth_map_path"], cv2.IMREAD_UNCHANGED)[3:, 1:153] / 256
    assert np.allclose(s.gt_depth_map.data[0].numpy(), raw) and 0 < raw.max() <= 80


@pytest.mark.mm
def test_resize_after_kb_crop(parts):
    """mmseg's Resize also resizes gt_depth_map (then GT ≠ ori_shape); mmcv's leaves it at the cropped size."""
    from mmengine.dataset import Compose
    img, gt = np.zeros((47, 155, 3), np.uint8), np.ones((47, 155), np.float32)
    for resize, gt_shape in (("mmcv.Resize", (44, 152)), ("Resize", (22, 76))):
        out = Compose([dict(type="KBCrop", crop_size=(44, 152)), dict(type=resize, scale=(76, 22))])(
            dict(img=img, gt_depth_map=gt, seg_fields=["gt_depth_map"]))
        assert out["img"].shape[:2] == (22, 76) and out["ori_shape"] == (44, 152)
        assert out["gt_depth_map"].shape == gt_shape


@pytest.mark.mm
def test_nyu_pipeline_metres(parts, nyu):
    from mmseg.datasets import NYUDataset
    ds = NYUDataset(data_root=str(nyu), data_prefix=dict(img_path="images/test", depth_map_path="annotations/test"),
                    test_mode=True, pipeline=[dict(type="LoadImageFromFile"),
                                              dict(type="LoadDepthAnnotation", depth_rescale_factor=1e-3),
                                              dict(type="PackSegInputs", meta_keys=parts.META_KEYS)])
    depth = ds[0]["data_samples"].gt_depth_map.data
    assert tuple(depth.shape) == (1, 60, 80) and float(depth.min()) >= 0.5 and float(depth.max()) <= 9.9


@pytest.mark.mm
def test_kb_crop_transform_and_errors(parts):
    img = np.arange(47 * 155 * 3, dtype=np.uint8).reshape(47, 155, 3)
    gt = np.random.default_rng(0).random((47, 155)).astype(np.float32)
    out = parts.KBCrop((44, 152))(dict(img=img, gt_depth_map=gt, seg_fields=["gt_depth_map"], img_path="a.png"))
    assert np.array_equal(out["img"], img[3:, 1:153]) and np.array_equal(out["gt_depth_map"], gt[3:, 1:153])
    assert out["kb_crop"] == (3, 1, 47, 155)
    with pytest.raises(DataError, match="smaller than the crop 352×1216"):
        parts.KBCrop()(dict(img=img, seg_fields=[], img_path="a.png"))
    with pytest.raises(DataError, match="same size"):
        parts.KBCrop((44, 152))(dict(img=img, gt_depth_map=gt[:40], seg_fields=["gt_depth_map"]))


# ------------------------------------------------------------------------------------------------ BTS converter

def make_bts(root: Path) -> tuple[Path, Path]:
    """A tiny BTS-style NYU tree; returns the train and test split files."""
    rgb, depth = np.zeros((6, 8, 3), np.uint8), np.full((6, 8), 1234, np.uint16)
    for rel in ("sync/kitchen_0028b/rgb_00045", "sync/living_room_0012/rgb_00003",
                "official_splits/test/kitchen/rgb_00000", "official_splits/test/living_room/rgb_00007"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / f"{rel}.jpg"), rgb)
        cv2.imwrite(str((root / rel).with_name((root / rel).name.replace("rgb_", "sync_depth_") + ".png")), depth)
    train = root / "nyudepthv2_train_files_with_gt.txt"
    train.write_text("/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579\n"
                     "/living_room_0012/rgb_00003.jpg /living_room_0012/sync_depth_00003.png 518.8579\n")
    test = root / "nyudepthv2_test_files_with_gt.txt"
    test.write_text("kitchen/rgb_00000.jpg kitchen/sync_depth_00000.png 518.8579\n"
                    "living_room/rgb_00007.jpg living_room/sync_depth_00007.png 518.8579\n\n")
    return train, test


@pytest.mark.parametrize("mode", ["symlink", "hardlink", "copy"])
def test_bts_converter_modes(tmp_path, mode):
    train, test = make_bts(tmp_path / "bts")
    out = tmp_path / "nyu"
    assert bts.convert_bts_nyu(train, tmp_path / "bts/sync", out, "train", mode) == 2
    assert bts.convert_bts_nyu(test, tmp_path / "bts/official_splits/test", out, "test", mode) == 2
    assert sorted(p.name for p in (out / "images/train").iterdir()) == ["kitchen_0028b_00045.jpg",
                                                                        "living_room_0012_00003.jpg"]
    assert sorted(p.name for p in (out / "annotations/test").iterdir()) == ["kitchen_00000.png",
                                                                           "living_room_00007.png"]
    assert (out / "images/test/kitchen_00000.jpg").is_symlink() == (mode == "symlink")
    depth = cv2.imread(str(out / "annotations/train/kitchen_0028b_00045.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth[0, 0] == 1234
    layout.check_nyu(out)
    assert bts.convert_bts_nyu(train, tmp_path / "bts/sync", out, "train", mode) == 2  # re-run replaces


@pytest.mark.mm
def test_bts_output_parses_in_nyu_dataset(parts, tmp_path):
    from mmseg.datasets import NYUDataset
    train, _ = make_bts(tmp_path / "bts")
    bts.convert_bts_nyu(train, tmp_path / "bts/sync", tmp_path / "nyu", "train")
    ds = NYUDataset(data_root=str(tmp_path / "nyu"), data_prefix=dict(img_path="images/train",
                                                                      depth_map_path="annotations/train"))
    classes = NYUDataset.METAINFO["classes"]
    assert [ds.get_data_info(i)["category_id"] for i in range(2)] == [classes.index("kitchen"),
                                                                      classes.index("living_room")]


def test_bts_converter_errors(tmp_path):
    train, test = make_bts(tmp_path / "bts")
    with pytest.raises(DataError, match=r"4 files named in .* are missing .*2 pairs listed"):
        bts.convert_bts_nyu(train, tmp_path / "bts", tmp_path / "nyu", "train")  # wrong base folder
    assert not (tmp_path / "nyu").exists()  # nothing written before the check
    with pytest.raises(DataError, match="conversion mode"):
        bts.convert_bts_nyu(train, tmp_path / "bts/sync", tmp_path / "nyu", "train", "move")
    with pytest.raises(DataError, match="split"):
        bts.convert_bts_nyu(train, tmp_path / "bts/sync", tmp_path / "nyu", "val")
    dup = tmp_path / "dup.txt"
    dup.write_text(train.read_text().splitlines()[0] + "\n" + train.read_text().splitlines()[0] + "\n")
    with pytest.raises(DataError, match="output name already used"):
        bts.convert_bts_nyu(dup, tmp_path / "bts/sync", tmp_path / "nyu", "train")
    bad = tmp_path / "bad.txt"
    bad.write_text("kitchen/image.jpg kitchen/sync_depth_00000.png 518.8579\n")
    with pytest.raises(DataError, match=r"bad.txt:1: .*<scene>/rgb_<idx>.jpg"):
        bts.convert_bts_nyu(bad, tmp_path / "bts/official_splits/test", tmp_path / "nyu", "test")
    unparsable = tmp_path / "unparsable.txt"
    unparsable.write_text("kitchen/rgb_00000.jpg\n")
    with pytest.raises(DataError, match=r"unparsable.txt:1"):
        bts.convert_bts_nyu(unparsable, tmp_path / "bts/official_splits/test", tmp_path / "nyu", "test")


# ------------------------------------------------------------------------------------------------ layout checks

def test_check_nyu(nyu, tmp_path):
    layout.check_nyu(nyu)
    with pytest.raises(DataError, match=r"missing folder .*annotations/test.*images/\{train,test\}"):
        root = copy_tree(nyu, tmp_path / "a")
        shutil.rmtree(root / "annotations/test")
        layout.check_nyu(root)
    root = copy_tree(nyu, tmp_path / "b")
    for png in sorted((root / "annotations/train").glob("*.png"))[:3]:
        png.unlink()
    with pytest.raises(DataError, match=r"3 of 12 images .* have no depth PNG \(e\.g\."):
        layout.check_nyu(root)
    root = copy_tree(nyu, tmp_path / "c")
    first = sorted((root / "annotations/train").glob("*.png"))[0]
    cv2.imwrite(str(first), np.zeros((60, 80), np.uint8))
    with pytest.raises(DataError, match="uint8 .* expected single-channel uint16"):
        layout.check_nyu(root)
    root = copy_tree(nyu, tmp_path / "d")
    for jpg in (root / "images/test").glob("*.jpg"):
        jpg.unlink()
    with pytest.raises(DataError, match="no .jpg images"):
        layout.check_nyu(root)


def test_check_kitti(kitti, tmp_path):
    layout.check_kitti(kitti)
    root = copy_tree(kitti, tmp_path / "a")
    (root / "eigen_train_files.txt").unlink()
    with pytest.raises(DataError, match="missing split file .*eigen_train_files.txt"):
        layout.check_kitti(root)
    with pytest.raises(DataError, match="missing folder .*gt"):
        layout.check_kitti(kitti, gt_root="gt")
    root = copy_tree(kitti, tmp_path / "b")
    with open(root / "eigen_train_files.txt", "a") as f:
        f.write("a.png b.png not_a_number\n")
    with pytest.raises(DataError, match=r"eigen_train_files.txt:13: cannot parse"):
        layout.check_kitti(root)
    root = copy_tree(kitti, tmp_path / "c")
    entries = layout.parse_split_file(root / "eigen_test_files.txt")
    for e in entries[:2]:
        (root / "raw" / e.rgb).unlink()
    with pytest.raises(DataError, match=r"2 of 10 images named in eigen_test_files.txt are missing \(e\.g\."):
        layout.check_kitti(root)


def test_check_kitti_gt(kitti, tmp_path):
    root = copy_tree(kitti, tmp_path / "a")
    train = layout.parse_split_file(root / "eigen_train_files.txt")
    (root / "gt_depth" / train[0].gt).unlink()
    layout.check_kitti(root)  # a few missing train GT files are skipped by the dataset
    test = [e for e in layout.parse_split_file(root / "eigen_test_files.txt") if e.gt]
    (root / "gt_depth" / test[0].gt).unlink()
    with pytest.raises(DataError, match=r"1 of 9 depth maps named in eigen_test_files.txt are missing"):
        layout.check_kitti(root)
    root = copy_tree(kitti, tmp_path / "b")
    for e in train:
        (root / "gt_depth" / e.gt).unlink()
    with pytest.raises(DataError, match=r"12 of 12 depth maps named in eigen_train_files.txt"):
        layout.check_kitti(root)
    root = copy_tree(kitti, tmp_path / "c")
    cv2.imwrite(str(root / "gt_depth" / train[0].gt), np.zeros((47, 155, 3), np.uint16))
    with pytest.raises(DataError, match="expected single-channel uint16"):
        layout.check_kitti(root)
