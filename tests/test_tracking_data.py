"""Tracking data side: mini GOT-10k / LaSOT generators, readers, layout checks, crop geometry, pair dataset."""

from __future__ import annotations

import hashlib
import pickle
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from benchmark.errors import DataError
from tasks.tracking import crops, layout, mini
from tasks.tracking.sequences import (
    FrameFiles,
    Sequence,
    got10k_sequences,
    lasot_sequences,
    load_frame,
)

GOT_FILES = {"groundtruth.txt", "absence.label", "cover.label", "cut_by_image.label", "meta_info.ini"}
META_KEYS = ["url", "begin", "end", "anno_fps", "object_class", "motion_class", "major_class", "root_class",
             "motion_adverb", "resolution"]
GOT_BOX = re.compile(r"^-?\d+\.\d{4},-?\d+\.\d{4},-?\d+\.\d{4},-?\d+\.\d{4}$")
LASOT_BOX = re.compile(r"^\d+,\d+,\d+,\d+$")


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def got(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("got10k")
    mini.make_got10k(root, seed=0)
    return root


@pytest.fixture(scope="module")
def lasot(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lasot")
    mini.make_lasot(root, seed=0)
    return root


def frame_numbers(folder: Path) -> list[int]:
    return sorted(int(p.stem) for p in folder.glob("*.jpg"))


def toolkit_meta(path: Path) -> dict[str, str]:
    """meta_info.ini parsed the way the GOT-10k toolkit does (drop the first line, split on ': ')."""
    lines = path.read_text().strip().split("\n")[1:]
    return dict(line.split(": ") for line in lines)


# ------------------------------------------------------------------------------------------------ generators

def test_got10k_layout_is_exact(got):
    for split, count, _ in mini.GOT10K_SPLITS:
        names = (got / split / "list.txt").read_text().splitlines()
        assert names == [f"GOT-10k_{split.capitalize()}_{i:06d}" for i in range(1, count + 1)]
        assert sorted(p.name for p in (got / split).iterdir() if p.is_dir()) == names
        for name in names:
            folder = got / split / name
            n = len(frame_numbers(folder))
            assert frame_numbers(folder) == list(range(1, n + 1)) and n >= 16
            assert all(re.fullmatch(r"\d{8}\.jpg", p.name) for p in folder.glob("*.jpg"))
            gt = (folder / "groundtruth.txt").read_text().splitlines()
            assert all(GOT_BOX.match(line) for line in gt)
            others = {p.name for p in folder.iterdir() if p.suffix != ".jpg"}
            meta = toolkit_meta(folder / "meta_info.ini")
            assert (folder / "meta_info.ini").read_text().startswith("[METAINFO]\n")
            h, w = cv2.imread(str(folder / "00000001.jpg")).shape[:2]
            assert meta["resolution"] == f"({w}, {h})" and meta["anno_fps"] == "10Hz"
            if split == "test":
                assert others == {"groundtruth.txt", "meta_info.ini"} and len(gt) == 1
                assert list(meta) == ["url", "begin", "end", "anno_fps", "resolution"]
            else:
                assert others == GOT_FILES and len(gt) == n
                assert list(meta) == META_KEYS
                for label in ("absence.label", "cover.label", "cut_by_image.label"):
                    assert len((folder / label).read_text().splitlines()) == n


def test_lasot_layout_is_exact(lasot):
    testing = (lasot / "testing_set.txt").read_text().splitlines()
    training = (lasot / "training_set.txt").read_text().splitlines()
    assert sorted(p.name for p in lasot.iterdir() if p.is_dir()) == sorted(mini.LASOT_CATEGORIES)
    assert sorted(name.rsplit("-", 1)[0] for name in testing) == sorted(
        mini.LASOT_CATEGORIES * mini.LASOT_TEST_PER_CATEGORY)
    every = sorted(f"{c}-{k}" for c in mini.LASOT_CATEGORIES for k in range(1, mini.LASOT_PER_CATEGORY + 1))
    assert sorted(testing + training) == every and not set(testing) & set(training)
    for name in every:
        folder = lasot / name.rsplit("-", 1)[0] / name
        assert {p.name for p in folder.iterdir()} == {"img", "groundtruth.txt", "full_occlusion.txt",
                                                      "out_of_view.txt", "nlp.txt"}
        n = len(frame_numbers(folder / "img"))
        assert frame_numbers(folder / "img") == list(range(1, n + 1))
        gt = (folder / "groundtruth.txt").read_text().splitlines()
        assert len(gt) == n and all(LASOT_BOX.match(line) for line in gt)
        for flags in ("full_occlusion.txt", "out_of_view.txt"):
            lines = (folder / flags).read_text().splitlines()
            assert len(lines) == 1 and re.fullmatch(r"[01](,[01])*", lines[0]) and len(lines[0].split(",")) == n
        assert len((folder / "nlp.txt").read_text().splitlines()) == 1


def test_generators_are_deterministic_and_small(got, lasot, tmp_path):
    mini.make_got10k(tmp_path / "got", seed=0)
    mini.make_lasot(tmp_path / "lasot", seed=0)
    assert digest(tmp_path / "got") == digest(got)
    assert digest(tmp_path / "lasot") == digest(lasot)
    mini.make_lasot(tmp_path / "lasot1", seed=1)
    assert digest(tmp_path / "lasot1") != digest(lasot)
    size = sum(p.stat().st_size for root in (got, lasot) for p in root.rglob("*") if p.is_file())
    assert size < 12e6


def test_got10k_labels_agree_with_boxes(got):
    covers, cuts, absent_frames = [], [], 0
    for split in ("train", "val"):
        for name in (got / split / "list.txt").read_text().split():
            folder = got / split / name
            gt = np.loadtxt(folder / "groundtruth.txt", delimiter=",", ndmin=2)
            absence, cover, cut = (np.loadtxt(folder / f, dtype=int, ndmin=1)
                                   for f in ("absence.label", "cover.label", "cut_by_image.label"))
            w, h = (int(v) for v in re.findall(r"\d+", toolkit_meta(folder / "meta_info.ini")["resolution"]))
            absent = absence == 1
            assert ((cover == 0) == absent).all() and (gt[absent] == -1).all()
            vis = gt[~absent]
            assert (vis[:, :2] >= 0).all() and (vis[:, 0] + vis[:, 2] <= w).all() and (vis[:, 1] + vis[:, 3] <= h).all()
            assert (vis[:, 2:] >= 1).all() and (cover[cut == 1] < 8).all()
            assert absence[0] == 0 and cover[0] == 8  # the target is fully visible in the first frame
            covers += cover.tolist()
            cuts += cut.tolist()
            absent_frames += int(absent.sum())
    assert absent_frames > 0 and sum(cuts) > 0 and set(range(1, 9)) <= set(covers)


def test_lasot_flags_agree_with_boxes(lasot):
    occluded = out = 0
    for name in (lasot / "training_set.txt").read_text().split() + (lasot / "testing_set.txt").read_text().split():
        folder = lasot / name.rsplit("-", 1)[0] / name
        gt = np.loadtxt(folder / "groundtruth.txt", delimiter=",", dtype=int, ndmin=2)
        fo = np.loadtxt(folder / "full_occlusion.txt", delimiter=",", dtype=int)
        oov = np.loadtxt(folder / "out_of_view.txt", delimiter=",", dtype=int)
        hidden = (fo == 1) | (oov == 1)
        assert not (fo & oov).any() and (gt[hidden] == 0).all() and (gt[~hidden, 2:] >= 1).all()
        assert not hidden[0]
        occluded += int(fo.sum())
        out += int(oov.sum())
    assert occluded > 0 and out > 0


@pytest.mark.parametrize("index", [0, 1, 2, 5])
def test_boxes_are_the_rendered_objects_visible_extent(index):
    rng = np.random.default_rng([7, index])
    clip = mini.render_clip(rng, 30, with_backgrounds=True, **mini._events(index))
    for t in np.flatnonzero(~clip.absent):
        x, y, w, h = clip.boxes[t]
        diff = np.abs(clip.frames[t].astype(int) - clip.backgrounds[t].astype(int)).max(axis=2)
        assert diff[y:y + h, x:x + w].mean() > 8  # the object is in the box
        if clip.ratio[t] == clip.inside[t]:  # not behind the bar (whose blended edge may show more of it)
            changed = np.argwhere(diff > 0)  # nowhere else but in 1 px of edge blend
            assert changed[:, 0].min() >= y - 1 and changed[:, 0].max() <= y + h
            assert changed[:, 1].min() >= x - 1 and changed[:, 1].max() <= x + w
        box = diff[y:y + h, x:x + w] > 0  # the box is tight: every edge row / column shows the object
        assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()


def test_written_frames_and_boxes_are_the_rendered_clip(got):
    rng = np.random.default_rng([0, 0, 0, 3])  # seed, GOT-10k, train, sequence 4
    clip = mini.render_clip(rng, 40 + int(rng.integers(-4, 5)), **mini._events(3))
    seq = got10k_sequences(got, "train")[3]
    assert len(seq) == len(clip.frames)
    assert np.array_equal(seq.boxes[~clip.absent], clip.boxes[~clip.absent].astype(float))
    for t in (0, len(seq) - 1):
        assert np.abs(load_frame(seq.frames[t]).astype(int) - clip.frames[t]).mean() < 4  # JPEG q90


def test_cover_levels():
    assert [mini.cover_level(r) for r in (0, 0.01, 0.15, 0.16, 0.45, 0.9, 0.95, 1.0)] == [0, 1, 1, 2, 3, 6, 7, 8]


# ------------------------------------------------------------------------------------------------ readers

def test_readers_on_mini_data(got, lasot):
    train, val, test = (got10k_sequences(got, s) for s in ("train", "val", "test"))
    assert [len(train), len(val), len(test)] == [24, 6, 3]
    assert [s.name for s in val] == (got / "val" / "list.txt").read_text().split()
    for seq in train + val:
        assert seq.boxes.shape == (len(seq), 4) and seq.boxes.dtype == np.float64
        assert seq.visible.dtype == bool and seq.visible.shape == (len(seq),) and seq.visible[0]
        assert seq.cover.shape == (len(seq),) and seq.cover.max() <= 8
        assert seq.frames[0].name == "00000001.jpg" and seq.frames[-1].is_file()
        assert not seq.frames[-1].with_name(f"{len(seq) + 1:08d}.jpg").exists()
        assert load_frame(seq.frames[0]).shape == (seq.resolution[1], seq.resolution[0], 3)
    for seq in test:
        assert seq.boxes.shape == (1, 4) and seq.visible.all() and len(seq.visible) == len(seq) >= 16
        assert seq.cover is None and seq.resolution is not None and seq.frames[-1].is_file()
    ltrain, ltest = lasot_sequences(lasot, "train"), lasot_sequences(lasot, "test")
    assert len(ltrain) == 24 and len(ltest) == 8
    assert [s.name for s in ltest] == (lasot / "testing_set.txt").read_text().split()
    for seq in ltrain + ltest:
        folder = seq.frames[0].parent.parent
        flags = np.loadtxt(folder / "full_occlusion.txt", delimiter=",") + np.loadtxt(folder / "out_of_view.txt",
                                                                                       delimiter=",")
        assert np.array_equal(seq.visible, flags == 0) and seq.frames[0].parent.name == "img"
        assert seq.cover is None and seq.resolution is None


def write_got_fixture(root: Path, boxes: str = "1,2,30,40\n-1,-1,-1,-1\n3.5,4.25,20,10\n",
                      absence: str = "0\n1\n0\n", cover: str = "8\n0\n5\n") -> Path:
    folder = root / "train" / "GOT-10k_Train_000001"
    folder.mkdir(parents=True)
    (root / "train" / "list.txt").write_text("GOT-10k_Train_000001\n")
    for i in range(1, 4):
        cv2.imwrite(str(folder / f"{i:08d}.jpg"), np.full((48, 64, 3), 40 * i, np.uint8))
    (folder / "groundtruth.txt").write_text(boxes)
    (folder / "absence.label").write_text(absence)
    (folder / "cover.label").write_text(cover)
    (folder / "cut_by_image.label").write_text("0\n0\n1\n")
    (folder / "meta_info.ini").write_text("[METAINFO]\nurl: x\nanno_fps: 10Hz\nresolution: (64, 48)\n")
    return folder


def write_lasot_fixture(root: Path) -> Path:
    folder = root / "bear" / "bear-2"
    (folder / "img").mkdir(parents=True)
    for i in range(1, 4):
        cv2.imwrite(str(folder / "img" / f"{i:08d}.jpg"), np.zeros((8, 8, 3), np.uint8))
    (folder / "groundtruth.txt").write_text("1,2,3,4\n0,0,0,0\n5,6,7,8\n")
    (folder / "full_occlusion.txt").write_text("0,0,0")
    (folder / "out_of_view.txt").write_text("0,1,0\n")
    (folder / "nlp.txt").write_text("a bear\n")
    (root / "testing_set.txt").write_text("bear-2\n")
    (root / "training_set.txt").write_text("bear-2\n")
    return folder


def test_readers_on_handwritten_fixture(tmp_path):
    folder = write_got_fixture(tmp_path / "got")
    (seq,) = got10k_sequences(tmp_path / "got", "train")
    assert seq.name == "GOT-10k_Train_000001" and len(seq) == 3 and seq.resolution == (64, 48)
    assert np.array_equal(seq.boxes, [[1, 2, 30, 40], [-1, -1, -1, -1], [3.5, 4.25, 20, 10]])
    assert seq.visible.tolist() == [True, False, True] and seq.cover.tolist() == [8, 0, 5]
    assert tuple(seq.frames) == tuple(folder / f"{i:08d}.jpg" for i in (1, 2, 3))
    assert load_frame(seq.frames[2])[0, 0].tolist() == [120, 120, 120]
    write_lasot_fixture(tmp_path / "lasot")
    (lseq,) = lasot_sequences(tmp_path / "lasot", "test")
    assert lseq.name == "bear-2" and len(lseq) == 3 and lseq.visible.tolist() == [True, False, True]
    assert lseq.frames[1] == tmp_path / "lasot" / "bear" / "bear-2" / "img" / "00000002.jpg"


def test_readers_give_the_annotation_frame_rate(got, lasot, tmp_path):
    """GOT-10k: meta_info.ini's anno_fps (its documented 10 Hz when the line is missing); LaSOT: 30 fps."""
    assert {s.fps for s in got10k_sequences(got, "train") + got10k_sequences(got, "test")} == {10.0}
    assert {s.fps for s in lasot_sequences(lasot, "train")} == {30.0}
    folder = write_got_fixture(tmp_path / "a")
    meta = folder / "meta_info.ini"
    meta.write_text(meta.read_text().replace("anno_fps: 10Hz", "anno_fps: 25Hz"))
    assert got10k_sequences(tmp_path / "a", "train")[0].fps == 25.0
    meta.write_text(meta.read_text().replace("anno_fps: 25Hz\n", ""))
    assert got10k_sequences(tmp_path / "a", "train")[0].fps == 10.0
    meta.write_text(meta.read_text() + "anno_fps: fast\n")
    with pytest.raises(DataError, match="anno_fps"):
        got10k_sequences(tmp_path / "a", "train")


def test_frame_files_behave_like_a_tuple(tmp_path):
    frames = FrameFiles(tmp_path, 3)
    paths = tuple(tmp_path / f"{i:08d}.jpg" for i in (1, 2, 3))
    assert len(frames) == 3 and frames == paths and frames[-1] == paths[-1] and frames[1:] == paths[1:]
    assert list(frames) == list(paths) and pickle.loads(pickle.dumps(frames)) == frames
    with pytest.raises(IndexError):
        frames[3]


@pytest.mark.parametrize("file,text,match", [
    ("groundtruth.txt", "1,2,30,40\n1,2,3\n3,4,20,10\n", "groundtruth.txt"),
    ("groundtruth.txt", "1,2,30,40\n1,2,x,4\n3,4,20,10\n", "groundtruth.txt.*'x'"),
    ("groundtruth.txt", "", "groundtruth.txt"),
    ("absence.label", "0\n1\n", "absence.label: 2 labels for 3 frames"),
    ("cover.label", "8\n9\n5\n", "cover.label.*0..8"),
    ("cover.label", "8\n0.5\n5\n", "cover.label"),
])
def test_malformed_got10k_labels_name_the_file(tmp_path, file, text, match):
    folder = write_got_fixture(tmp_path)
    (folder / file).write_text(text)
    with pytest.raises(DataError, match=match):
        got10k_sequences(tmp_path, "train")


def test_missing_files_name_the_file(tmp_path):
    folder = write_got_fixture(tmp_path / "got")
    (folder / "cover.label").unlink()
    with pytest.raises(DataError, match="missing file .*cover.label"):
        got10k_sequences(tmp_path / "got", "train")
    lfolder = write_lasot_fixture(tmp_path / "lasot")
    (lfolder / "out_of_view.txt").write_text("0,1\n")
    with pytest.raises(DataError, match="out_of_view.txt: 2 labels for 3 frames"):
        lasot_sequences(tmp_path / "lasot", "train")
    (tmp_path / "lasot" / "testing_set.txt").write_text("bear\n")
    with pytest.raises(DataError, match="'bear' is not '<category>-<number>'"):
        lasot_sequences(tmp_path / "lasot", "test")
    with pytest.raises(DataError, match="missing file .*list.txt"):
        got10k_sequences(tmp_path / "got", "val")


def test_load_frame_errors(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="bad.jpg is unreadable"):
        load_frame(tmp_path / "bad.jpg")
    with pytest.raises(DataError, match="gone.jpg is missing"):
        load_frame(tmp_path / "gone.jpg")


# ------------------------------------------------------------------------------------------------ layout checks

def test_check_got10k(got, tmp_path):
    layout.check_got10k(got, ("train", "val", "test"))
    with pytest.raises(DataError, match="nowhere does not exist"):
        layout.check_got10k(tmp_path / "nowhere")
    root = tmp_path / "got"
    shutil.copytree(got, root)
    (root / "val" / "list.txt").unlink()
    with pytest.raises(DataError, match=r"missing .*val/list.txt"):
        layout.check_got10k(root)
    layout.check_got10k(root, ("train",))
    shutil.rmtree(root / "train" / "GOT-10k_Train_000017")
    with pytest.raises(DataError, match="1 of the 24 sequences .* missing .*GOT-10k_Train_000017"):
        layout.check_got10k(root, ("train",))
    shutil.rmtree(root / "test" / "GOT-10k_Test_000002")
    with pytest.raises(DataError, match="GOT-10k_Test_000002"):
        layout.check_got10k(root, ("test",))


@pytest.mark.parametrize("change,match", [
    (lambda f: (f / "groundtruth.txt").unlink(), "missing file .*GOT-10k_Train_000002/groundtruth.txt"),
    (lambda f: (f / "cut_by_image.label").write_text("0\n"), "cut_by_image.label: 1 labels"),
    (lambda f: (f / "meta_info.ini").unlink(), "meta_info.ini is missing"),
    (lambda f: (f / f"{len(list(f.glob('*.jpg'))):08d}.jpg").unlink(), "frame .*jpg is missing"),
    (lambda f: (f / "groundtruth.txt").write_text("".join((f / "groundtruth.txt").read_text().splitlines(True)[:-1])),
     "absence.label: .* labels for"),
])
def test_check_got10k_sampled_sequence(got, tmp_path, change, match):
    root = tmp_path / "got"
    shutil.copytree(got / "val", root / "val")
    change(root / "val" / "GOT-10k_Val_000002")
    match = match.replace("Train", "Val")
    with pytest.raises(DataError, match=match):
        layout.check_got10k(root, ("val",))


def test_check_got10k_more_frames_than_labels(got, tmp_path):
    root = tmp_path / "got"
    shutil.copytree(got / "val", root / "val")
    folder = root / "val" / "GOT-10k_Val_000001"
    for name in ("groundtruth.txt", "absence.label", "cover.label", "cut_by_image.label"):
        (folder / name).write_text("".join((folder / name).read_text().splitlines(True)[:-1]))
    with pytest.raises(DataError, match="more frames"):
        layout.check_got10k(root, ("val",))


def test_check_lasot(lasot, tmp_path):
    layout.check_lasot(lasot)
    with pytest.raises(DataError, match="nowhere does not exist"):
        layout.check_lasot(tmp_path / "nowhere")
    root = tmp_path / "lasot"
    shutil.copytree(lasot, root)
    (root / "testing_set.txt").rename(root / "kept.txt")
    with pytest.raises(DataError, match="missing .*testing_set.txt"):
        layout.check_lasot(root)
    (root / "kept.txt").rename(root / "testing_set.txt")
    name = (root / "training_set.txt").read_text().split()[-1]
    shutil.rmtree(root / name.rsplit("-", 1)[0] / name)
    with pytest.raises(DataError, match=f"1 sequences .* missing .*{name}"):
        layout.check_lasot(root)
    (root / "training_set.txt").write_text("")
    with pytest.raises(DataError, match="training_set.txt lists no sequences"):
        layout.check_lasot(root)


# ------------------------------------------------------------------------------------------------ crops

def test_crop_round_trip_and_geometry():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    box = np.array([30.3, 20.7, 17.2, 11.9])
    crop = crops.crop_around(img, box, 4.0, 64)
    side = np.ceil(np.sqrt(17.2 * 11.9) * 4)
    assert crop.image.shape == (64, 64, 3) and crop.image.dtype == np.uint8
    assert crop.scale == pytest.approx(64 / side)
    assert np.allclose(crop.to_image(crop.to_crop(box)), box)
    x, y, w, h = crop.to_crop(box)
    assert (x + w / 2, y + h / 2) == pytest.approx((32, 32))  # centred
    many = rng.uniform(0, 50, (5, 4))
    assert np.allclose(crop.to_crop(crop.to_image(many)), many)
    moved = crops.crop_around(img, box, 4.0, 64, center=(50.0, 40.0))
    assert moved.to_crop([50.0, 40.0, 0, 0])[:2] == pytest.approx((32, 32))


def test_crop_pixels():
    img = np.zeros((40, 60, 3), np.uint8)
    img[..., 0] = np.arange(60)[None, :]
    img[..., 1] = np.arange(40)[:, None]
    img[..., 2] = 7
    # scale 1, integer origin: the crop is exactly the image window
    crop = crops.crop_around(img, [10, 12, 8, 8], 2.0, 16)
    assert crop.origin == (6.0, 8.0) and np.array_equal(crop.image, img[8:24, 6:22])
    # scale 2: bilinear sampling of a linear ramp gives the ramp at each crop pixel centre
    crop = crops.crop_around(img, [20.5, 10.5, 5, 5], 2.0, 20)
    j = 10
    expect = crop.origin[0] + (j + 0.5) / crop.scale - 0.5
    assert abs(int(crop.image[j, j, 0]) - expect) <= 1 and abs(int(crop.image[j, j, 1]) - (expect - 10)) <= 1


def test_crop_pads_with_the_mean_colour():
    img = np.zeros((50, 50, 3), np.uint8)
    img[:, :25] = (200, 100, 0)
    crop = crops.crop_around(img, [0, 0, 10, 10], 4.0, 40)  # centred at (5, 5): the top-left 3/8 is outside
    mean = np.round(np.array(cv2.mean(img)[:3])).astype(int)
    assert mean.tolist() == [100, 50, 0]
    assert np.abs(crop.image[:10, :10].astype(int) - mean).max() <= 1
    assert np.abs(crop.image[30, 30].astype(int) - [200, 100, 0]).max() <= 1  # image pixel (10, 10)


def test_crop_rejects_empty_boxes():
    with pytest.raises(ValueError, match="positive"):
        crops.crop_around(np.zeros((8, 8, 3), np.uint8), [1, 1, 0, 5], 2.0, 16)


def test_hann_window_and_normalize():
    win = crops.hann_window(16)
    k = np.arange(1, 17)
    one = 0.5 * (1 - np.cos(2 * np.pi * k / 17))
    assert win.dtype == np.float32 and win.shape == (16, 16) and np.allclose(win, np.outer(one, one))
    assert np.allclose(win, win.T) and np.allclose(win, win[::-1, ::-1]) and win.min() > 0
    t = crops.normalize(np.full((4, 4, 3), 255, np.uint8), (0.5, 0.5, 0.5), (0.5, 0.25, 0.5))
    assert t.shape == (3, 4, 4) and t.dtype == torch.float32 and t[:, 0, 0].tolist() == [1.0, 2.0, 1.0]


# ------------------------------------------------------------------------------------------------ pair dataset

SQUARE, BACKGROUND = (220, 30, 40), (90, 140, 90)


def square_sequence(folder: Path, n: int = 24, hidden=(5, 6)) -> Sequence:
    """A red square drifting over a green-grey frame; JPEG q100 so the colours survive."""
    folder.mkdir(parents=True)
    boxes, visible = np.zeros((n, 4)), np.ones(n, bool)
    for t in range(n):
        img = np.empty((80, 100, 3), np.uint8)
        img[:] = BACKGROUND
        x, y, s = 20 + 2 * t, 15 + t, 16 + t % 5
        if t in hidden:
            visible[t], boxes[t] = False, -1
        else:
            img[y:y + s, x:x + s] = SQUARE
            boxes[t] = x, y, s, s
        cv2.imwrite(str(folder / f"{t + 1:08d}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 100])
    return Sequence(folder.name, FrameFiles(folder, n), boxes, visible)


@pytest.fixture(scope="module")
def squares(tmp_path_factory) -> list[Sequence]:
    root = tmp_path_factory.mktemp("squares")
    return [square_sequence(root / "a"), square_sequence(root / "b", 30, hidden=(0, 29))]


def unnormalize(x: torch.Tensor) -> np.ndarray:
    mean, std = np.array(crops.IMAGENET_MEAN)[:, None, None], np.array(crops.IMAGENET_STD)[:, None, None]
    return ((x.numpy() * std + mean) * 255).transpose(1, 2, 0)


def test_pair_dataset_items(squares):
    ds = crops.PairDataset(squares, 40, template_size=32, search_size=64, gray_prob=0.0, brightness=0.0)
    assert len(ds) == 40 and ds.skipped == 0
    for i in range(12):
        item = ds[i]
        assert set(item) == {"template", "search", "box"}
        assert item["template"].shape == (3, 32, 32) and item["search"].shape == (3, 64, 64)
        assert all(v.dtype == torch.float32 for v in item.values()) and item["box"].shape == (4,)
        cx, cy, w, h = item["box"].tolist()
        assert -1e-6 <= cx - w / 2 < cx + w / 2 <= 1 + 1e-6 and -1e-6 <= cy - h / 2 < cy + h / 2 <= 1 + 1e-6
        # the box is where the square is: its inside is the square's colour, a ring around it the background
        img = unnormalize(item["search"])
        x0, x1, y0, y1 = ((cx - w / 2) * 64, (cx + w / 2) * 64, (cy - h / 2) * 64, (cy + h / 2) * 64)
        inner = img[int(y0) + 2:int(np.ceil(y1)) - 2, int(x0) + 2:int(np.ceil(x1)) - 2].reshape(-1, 3)
        assert np.abs(inner.mean(0) - SQUARE).max() < 12
        ring = img[max(int(y0) - 4, 0):int(y0) - 1, int(x0):int(x1)].reshape(-1, 3)
        if len(ring):
            assert np.abs(np.median(ring, 0) - BACKGROUND).max() < 12
        # the template is centred on the square, half of it (factor 2)
        timg = unnormalize(item["template"])
        assert np.abs(timg[10:22, 10:22].reshape(-1, 3).mean(0) - SQUARE).max() < 12


def test_pair_dataset_is_deterministic_and_flips(squares):
    kw = dict(template_size=32, search_size=64, gray_prob=0.0)
    a, b = crops.PairDataset(squares, 10, **kw), crops.PairDataset(squares, 10, **kw)
    other = crops.PairDataset(squares, 10, seed=1, **kw)
    for i in range(4):
        x, y = a[i], b[i]
        assert all(torch.equal(x[k], y[k]) for k in x) and all(torch.equal(x[k], a[i][k]) for k in x)
    assert not all(torch.equal(a[i]["search"], other[i]["search"]) for i in range(4))
    flipped = crops.PairDataset(squares, 10, flip_prob=1.0, **kw)
    straight = crops.PairDataset(squares, 10, flip_prob=0.0, **kw)
    for i in range(4):
        f, s = flipped[i], straight[i]
        assert torch.equal(f["search"], s["search"].flip(-1)) and torch.equal(f["template"], s["template"].flip(-1))
        assert f["box"][0].item() == pytest.approx(1 - s["box"][0].item()) and torch.equal(f["box"][1:], s["box"][1:])
    batch = next(iter(torch.utils.data.DataLoader(pickle.loads(pickle.dumps(a)), batch_size=4)))
    assert batch["search"].shape == (4, 3, 64, 64) and batch["box"].shape == (4, 4)


def test_pair_sampling_is_causal_within_max_gap(squares):
    ds = crops.PairDataset(squares, 10, template_size=16, search_size=32, max_gap=3)
    rng = np.random.default_rng(0)
    for _ in range(300):
        k, t, s = ds.sample_frames(rng)
        vis = ds.sequences[k].visible
        assert vis[t] and vis[s] and t < s <= t + 3


def old_causal_pair(ds: crops.PairDataset, rng: np.random.Generator) -> tuple[int, int, int]:
    """The causal rule as it was before the interval rule existed (OSTrack's), written out independently."""
    k = int(rng.integers(len(ds.sequences)))
    vis = np.flatnonzero(ds.sequences[k].visible)
    starts = np.flatnonzero(np.diff(vis) <= ds.max_gap)
    if len(starts) == 0:
        j = int(rng.integers(len(vis) - 1))
        return k, int(vis[j]), int(vis[j + 1])
    j = int(starts[rng.integers(len(starts))])
    after = vis[j + 1:][vis[j + 1:] <= vis[j] + ds.max_gap]
    return k, int(vis[j]), int(after[rng.integers(len(after))])


def long_sequence(n: int, fps: float | None, hidden=()) -> Sequence:
    """A sequence for the sampler only (no frame is read): n frames, boxes everywhere, ``hidden`` invisible."""
    visible = np.ones(n, bool)
    visible[list(hidden)] = False
    return Sequence(f"long{n}", FrameFiles(Path("/nonexistent"), n), np.tile([10.0, 10, 20, 20], (n, 1)), visible,
                    fps=fps)


def test_causal_rule_is_unchanged_when_selected(squares):
    """frame_sampling='causal' (the default, one-stream) draws exactly the pairs of the old rule, also with
    fps_scaled_gap on sequences without a frame rate."""
    for kw in ({}, dict(frame_sampling="causal", fps_scaled_gap=True)):
        ds = crops.PairDataset(squares + [long_sequence(300, None, hidden=range(40, 140))], 10, template_size=16,
                               search_size=32, max_gap=5, **kw)
        a, b = np.random.default_rng(3), np.random.default_rng(3)
        assert [ds.sample_frames(a) for _ in range(500)] == [old_causal_pair(ds, b) for _ in range(500)]


def test_interval_pairs_lie_on_both_sides_within_the_fps_scaled_range():
    """SwinTrack's interval rule: two different visible frames at most R apart, the search frame before or after
    the template; R = max(round(fps / 30 * max_gap), 1) with fps_scaled_gap, max_gap otherwise or without fps."""
    hidden = set(range(100, 130)) | {7, 8, 9}
    kw = dict(template_size=16, search_size=32, max_gap=30, frame_sampling="interval")
    cases = [(10.0, True, 10), (30.0, True, 30), (None, True, 30), (10.0, False, 30), (1.0, True, 1),
             (60.0, True, 60)]
    for fps, scaled, R in cases:
        seq = long_sequence(400, fps, hidden)
        ds = crops.PairDataset([seq], 10, fps_scaled_gap=scaled, **kw)
        assert ds.frame_range(seq) == R
        rng = np.random.default_rng(0)
        pairs = [ds.sample_frames(rng)[1:] for _ in range(3000)]
        gaps = np.array([s - t for t, s in pairs])
        assert all(seq.visible[t] and seq.visible[s] for t, s in pairs)
        assert np.abs(gaps).max() == R and (gaps != 0).all(), (fps, scaled)
        assert (gaps < 0).mean() == pytest.approx(0.5, abs=0.05)  # either side, equally often
    # a sequence no longer than R + 1 frames: any two different visible frames, either order
    short = long_sequence(25, 30.0, hidden=(3,))
    ds = crops.PairDataset([short], 10, fps_scaled_gap=True, **kw)
    rng = np.random.default_rng(1)
    pairs = {ds.sample_frames(rng)[1:] for _ in range(4000)}
    vis = np.flatnonzero(short.visible)
    assert pairs == {(int(t), int(s)) for t in vis for s in vis if t != s}
    # visible frames further apart than R everywhere: neighbouring visible frames, either order
    sparse = long_sequence(60, None, hidden=set(range(60)) - {0, 15, 30, 45, 59})
    ds = crops.PairDataset([sparse], 10, **{**kw, "max_gap": 5})
    rng = np.random.default_rng(2)
    assert {tuple(sorted(ds.sample_frames(rng)[1:])) for _ in range(200)} <= {(0, 15), (15, 30), (30, 45), (45, 59)}
    with pytest.raises(ValueError, match="frame_sampling"):
        crops.PairDataset([sparse], 10, template_size=16, search_size=32, frame_sampling="both")


def test_interval_window_follows_swintrack():
    """Two different frames drawn from a window of R + 1 frames (every frame visible, far from the ends): a window
    holds 2 (R + 1 - g) of its (R + 1) R ordered pairs at gap |g|, so a gap g (0 < g <= R) has probability
    proportional to R + 1 - g (causal sampling would make every gap equally likely)."""
    R, n = 8, 2000
    ds = crops.PairDataset([long_sequence(n, None)], 10, template_size=16, search_size=32, max_gap=R,
                           frame_sampling="interval")
    rng = np.random.default_rng(0)
    gaps = np.abs([np.subtract(*ds.sample_frames(rng)[1:]) for _ in range(20000)])
    freq = np.bincount(gaps, minlength=R + 1)[1:] / len(gaps)
    expected = (R + 1 - np.arange(1, R + 1)) / np.sum(R + 1 - np.arange(1, R + 1))
    assert np.abs(freq - expected).max() < 0.01, (freq, expected)


def test_color_jitter_is_torchvisions_at_a_fixed_draw():
    """crops.color_jitter = torchvision's ColorJitter(0.4, 0.4, 0.4) (SwinTrack's transform, on the float crop in
    [0, 1]) for the same factors and order, and draw_color_jitter's factors and orders cover torchvision's ranges."""
    import itertools

    from torchvision.transforms import ColorJitter
    from torchvision.transforms import functional as TF

    rng = np.random.default_rng(0)
    img = rng.random((24, 20, 3), dtype=np.float32)
    img[:6] = np.clip(img[:6] * 2.0, 0, 1)  # saturated values: the clamps matter
    img[6:9] = [1.0, 0.0, 0.2]
    t = torch.from_numpy(img.transpose(2, 0, 1).copy())
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for order in itertools.permutations(range(3)):
        for factors in ((0.6, 1.4, 0.75), (1.3, 0.65, 1.4), (1.0, 1.0, 1.0)):
            ref = t
            for op in order:
                ref = ops[op](ref, factors[op])
            got = crops.color_jitter(img, *factors, order=order)
            assert got.dtype == np.float32 and np.allclose(got, ref.numpy().transpose(1, 2, 0), atol=1e-6)
    jitter = ColorJitter(0.4, 0.4, 0.4)
    for seed in range(5):  # torchvision's own draw, replayed
        torch.manual_seed(seed)
        expected = jitter(t)
        torch.manual_seed(seed)
        fn_idx, b, c, s, h = jitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
        assert h is None
        got = crops.color_jitter(img, b, c, s, order=[int(i) for i in fn_idx if int(i) != 3])
        assert np.allclose(got, expected.numpy().transpose(1, 2, 0), atol=1e-6)
    draws = [crops.draw_color_jitter(rng, 0.4) for _ in range(3000)]
    factors = np.array([f for _, f in draws])
    assert factors.min() >= 0.6 and factors.max() <= 1.4 and factors.min() < 0.61 and factors.max() > 1.39
    assert np.abs(factors.mean(0) - 1.0).max() < 0.02
    assert {o for o, _ in draws} == set(itertools.permutations(range(3)))
    assert crops.draw_color_jitter(rng, 1.5)[1].min() >= 0.0  # torchvision's max(0, 1 - c)


def test_pair_dataset_colour_jitter_per_crop(squares, monkeypatch):
    """color_jitter > 0: each crop gets its own draw, applied to the float crop after the other photometric steps;
    the crops and every other draw are those of color_jitter = 0."""
    kw = dict(template_size=32, search_size=64, gray_prob=0.0, brightness=0.0, frame_sampling="interval")
    plain = crops.PairDataset(squares, 10, **kw)
    jittered = crops.PairDataset(squares, 10, color_jitter=0.4, **kw)
    drawn = []
    real = crops.draw_color_jitter
    monkeypatch.setattr(crops, "draw_color_jitter", lambda rng, c: drawn.append(real(rng, c)) or drawn[-1])
    for i in range(4):
        drawn.clear()
        a, b = plain[i], jittered[i]
        assert len(drawn) == 2 and not np.allclose(drawn[0][1], drawn[1][1])  # independent per crop
        assert torch.equal(a["box"], b["box"])
        for key, (order, f) in zip(("template", "search"), drawn, strict=True):
            x = np.clip(unnormalize(a[key]) / 255, 0, 1)
            want = crops.normalize(crops.color_jitter(x, *f, order=order))
            assert torch.allclose(b[key], want, atol=1e-4)


def test_pair_recipe_is_resolved_by_design():
    """Left null, the pair sampling and colour parameters take the design's values (one-stream OSTrack's, two-stream
    SwinTrack's) on both tasks; a value set by the preset or --set (e.g. the old rule) is kept."""
    from tasks.tracking.adapter import GOT10k, LaSOT

    keys = ("frame_sampling", "fps_scaled_gap", "max_gap", "color_jitter", "brightness", "gray_prob", "flip_prob")
    want = {"vit_base_patch16_224": ("causal", False, 200, 0.0, 0.2, 0.05, 0.5),
            "swinv2_base_window8_256": ("interval", True, 100, 0.4, 0.0, 0.05, 0.0)}
    for task in (GOT10k, LaSOT):
        defaults = {k: v.default for k, v in task.params.items()}
        assert all(defaults[k] is None for k in keys if k != "gray_prob")
        for arch, values in want.items():
            resolved, _ = task.resolve_family(defaults, arch)
            assert tuple(resolved[k] for k in keys) == values, (task.__name__, arch)
        old = dict(defaults, frame_sampling="causal", fps_scaled_gap=False, color_jitter=0.0, brightness=0.2)
        resolved, _ = task.resolve_family(old, "swinv2_base_window8_256")
        assert tuple(resolved[k] for k in keys[:5]) == ("causal", False, 100, 0.0, 0.2)
    with pytest.raises(Exception, match="frame_sampling"):
        GOT10k.params["frame_sampling"].check("frame_sampling", "both", "--set")


def test_pair_dataset_skips_short_and_unannotated_sequences(squares, tmp_path):
    short = square_sequence(tmp_path / "short", 12)
    hidden = square_sequence(tmp_path / "hidden", 24, hidden=range(20))
    first_only = Sequence("test", squares[0].frames, squares[0].boxes[:1], squares[0].visible)
    ds = crops.PairDataset([short, squares[0], hidden, first_only], 5, template_size=16, search_size=32)
    assert ds.sequences == [squares[0]] and ds.skipped == 3
    with pytest.raises(DataError, match="none of the 2 training sequences"):
        crops.PairDataset([short, hidden], 5, template_size=16, search_size=32)


def test_pair_dataset_on_mini_data(got, lasot):
    seqs = got10k_sequences(got, "train") + lasot_sequences(lasot, "train")
    ds = crops.PairDataset(seqs, 50, template_size=32, search_size=64)
    assert ds.skipped == 0
    for i in range(20):
        box = ds[i]["box"]
        assert ((box >= 0) & (box <= 1)).all() and box[2] > 0 and box[3] > 0


# ------------------------------------------------------------------------------------------------ crop rules

# PairDataset(squares, 40, template_size=32, search_size=64, seed=7, **kw)[0:6] recorded before crop_rule existed:
# (box, template mean, search mean) per item, for the default (one-stream) draws and for the interval + colour jitter
# draws; the ostrack crop rule must keep producing exactly these
OSTRACK_RECORDED = {
    "default": ({}, [[0.648079, 0.223193, 0.285714, 0.285714], [0.449063, 0.498706, 0.283582, 0.283582],
                     [0.313355, 0.664568, 0.266667, 0.266667], [0.327772, 0.570494, 0.204301, 0.204301],
                     [0.611033, 0.689814, 0.283582, 0.283582], [0.433616, 0.378767, 0.271429, 0.271429]],
                [0.1739, -0.3102, -0.5037, -0.2383, -0.1703, -0.1705], [0.006, -0.1372, 0.0512, 0.1518, -0.3737,
                                                                        -0.3392]),
    "interval": (dict(frame_sampling="interval", fps_scaled_gap=True, color_jitter=0.4),
                 [[0.648079, 0.223193, 0.285714, 0.285714], [0.449108, 0.498707, 0.283333, 0.283333],
                  [0.314728, 0.663358, 0.264706, 0.264706], [0.42981, 0.274225, 0.236111, 0.236111],
                  [0.610936, 0.689648, 0.283333, 0.283333], [0.433616, 0.378767, 0.271429, 0.271429]],
                 [-0.209, -0.9734, -0.9109, -0.3527, -0.0952, 0.2595], [0.093, -0.3524, 0.233, 0.7825, -0.6195,
                                                                       0.0373]),
}


@pytest.mark.parametrize("rule", [None, "ostrack"])
@pytest.mark.parametrize("case", sorted(OSTRACK_RECORDED))
def test_ostrack_crop_rule_is_unchanged(squares, case, rule):
    kw, boxes, t_means, s_means = OSTRACK_RECORDED[case]
    ds = crops.PairDataset(squares, 40, template_size=32, search_size=64, seed=7, **kw,
                           **({} if rule is None else {"crop_rule": rule}))
    items = [ds[i] for i in range(6)]
    assert np.allclose([it["box"].numpy() for it in items], boxes, atol=2e-6)
    assert np.allclose([float(it["template"].mean()) for it in items], t_means, atol=1e-3)
    assert np.allclose([float(it["search"].mean()) for it in items], s_means, atol=1e-3)
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    a = crops.crop_around(img, [10.2, 5.5, 30, 8], 4.0, 48)
    b = crops.crop_around(img, [10.2, 5.5, 30, 8], 4.0, 48, rule="ostrack")
    assert np.array_equal(a.image, b.image) and a.origin == b.origin and a.scales == b.scales


def siamfc_side_reference(w: float, h: float, factor: float) -> float:
    """sqrt((w + p)(h + p)), p = (factor - 1)(w + h) / 2, written as sqrt(w h + (factor^2 - 1) ((w + h) / 2)^2)."""
    return float(np.sqrt(w * h + (factor ** 2 - 1) * ((w + h) / 2) ** 2))


def test_swintrack_crop_uses_siamfcs_context():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    for w, h in ((40.0, 10.0), (7.5, 30.0), (16.0, 16.0)):
        box = np.array([30.3, 20.7, w, h])
        for factor, size in ((2.0, 32), (4.0, 64)):
            crop = crops.crop_around(img, box, factor, size, rule="swintrack")
            side = siamfc_side_reference(w, h, factor)
            assert crops.siamfc_side(box, factor) == pytest.approx(side)
            assert crop.scales == pytest.approx((size / side, size / side))
            if w == h:  # a square box: factor x its side, like OSTrack's but not rounded up
                assert side == pytest.approx(factor * w)
            else:  # an elongated box gets more context than sqrt(w h) x factor
                assert side > factor * np.sqrt(w * h) + 1
            x, y, bw, bh = crop.to_crop(box)
            assert (x + bw / 2, y + bh / 2) == pytest.approx((size / 2, size / 2))
            assert bw / bh == pytest.approx(w / h)  # no jitter: the aspect ratio is kept
            assert np.allclose(crop.to_image(crop.to_crop(box)), box)
    # the test-time floor on the box size: a 4 x 3 box is cropped as a 10 x 10 one around the same centre
    small = crops.crop_around(img, [50, 40, 4, 3], 4.0, 64, rule="swintrack", min_size=10)
    assert small.scale == pytest.approx(64 / 40) and small.to_crop([52, 41.5, 0, 0])[:2] == pytest.approx((32, 32))
    assert crops.TEST_MIN_SIZE == {"ostrack": 0.0, "swintrack": 10.0}
    with pytest.raises(ValueError, match="crop rule"):
        crops.crop_around(img, box, 2.0, 16, rule="siamfc")
    with pytest.raises(ValueError, match="positive"):
        crops.crop_around(img, [1, 1, 0, 5], 2.0, 16, rule="swintrack")


def test_anisotropic_crop_pixels_and_round_trip():
    img = np.zeros((60, 80, 3), np.uint8)
    img[..., 0] = np.arange(80)[None, :]
    img[..., 1] = np.arange(60)[:, None]
    crop = crops.crop_at(img, (10.25, 5.5), (1.5, 0.75), 32)
    sx, sy = crop.scales
    assert (sx, sy) == (1.5, 0.75) and crop.scale_y == 0.75
    for i, j in ((3, 5), (16, 20), (28, 30)):
        x = crop.origin[0] + (j + 0.5) / sx - 0.5  # the image pixel index under crop pixel (i, j)
        y = crop.origin[1] + (i + 0.5) / sy - 0.5
        assert abs(int(crop.image[i, j, 0]) - x) <= 1 and abs(int(crop.image[i, j, 1]) - y) <= 1
    boxes = np.random.default_rng(1).uniform(0, 50, (6, 4))
    assert np.allclose(crop.to_image(crop.to_crop(boxes)), boxes)
    assert np.allclose(crop.to_crop(boxes)[:, 2:], boxes[:, 2:] * [1.5, 0.75])


def replay_swintrack(box, factor, size, rng, scale_jitter, translation_jitter):
    """SwinTrack's search curation written out from its code: per draw (randn(2), then rand(2)) the per-axis scale,
    the translation and the crop box; returns every draw up to the first whose box overlaps [0.5, size - 0.5]."""
    x, y, w, h = box
    w_z, h_z = w + (factor - 1) * (w + h) / 2, h + (factor - 1) * (w + h) / 2
    draws = []
    while True:
        scaling = np.sqrt(size * size / (w_z * h_z)) / np.exp(rng.standard_normal(2) * scale_jitter)
        translate = (rng.random(2) - 0.5) * (np.array([w, h]) * scaling).sum() * 0.5 * translation_jitter
        target = size / 2 - translate
        x1, y1 = target + (np.array([x, y]) - (np.array([x, y]) + [w / 2, h / 2])) * scaling
        x2, y2 = target + (np.array([x + w, y + h]) - (np.array([x, y]) + [w / 2, h / 2])) * scaling
        hit = min(x2, size - 0.5) > max(x1, 0.5) and min(y2, size - 0.5) > max(y1, 0.5)
        draws.append((scaling, target, (x1, y1, x2, y2), hit))
        if hit:
            return draws


def test_swintrack_jitter_follows_swintracks_draws():
    box = np.array([100.0, 50.0, 60.0, 20.0])  # 3 : 1
    size, factor = 224, 4.0
    # no jitter: the plain SiamFC crop, centred
    origin, (sx, sy) = crops.swintrack_jitter(box, factor, size, np.random.default_rng(0), 0.0, 0.0)
    assert sx == sy == pytest.approx(size / siamfc_side_reference(60, 20, factor))
    assert (origin[0] + size / 2 / sx, origin[1] + size / 2 / sy) == pytest.approx((130, 60))
    # the draws, replayed from SwinTrack's formulas
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(200):
        origin, scales = crops.swintrack_jitter(box, factor, size, a, 0.25, 3.0)
        scaling, target, xyxy, _ = replay_swintrack(box, factor, size, b, 0.25, 3.0)[-1]
        crop_box = crops._to_crop(box, origin, *scales)
        assert scales == pytest.approx(tuple(scaling))
        assert crop_box[:2] + crop_box[2:] / 2 == pytest.approx(target)
        assert np.concatenate([crop_box[:2], crop_box[:2] + crop_box[2:]]) == pytest.approx(np.array(xyxy))
    assert a.random() == b.random()  # the same number of draws
    # distributions: log scale N(0, 0.25^2) per axis, so the aspect ratio in the crop varies; centre shift
    # U(-0.5, 0.5) x 3 x half the jittered box's w + h (crop pixels), not its sqrt(area)
    rng = np.random.default_rng(1)
    s0 = size / siamfc_side_reference(60, 20, factor)
    stats = []
    for _ in range(20000):
        origin, (sx, sy) = crops.swintrack_jitter(box, factor, size, rng, 0.25, 3.0)
        x, y, w, h = crops._to_crop(box, origin, sx, sy)
        stats.append((np.log(sx / s0), np.log(sy / s0), np.log((w / h) / 3.0),
                      (size / 2 - (x + w / 2)) / (3.0 * (w + h) / 2), (size / 2 - (y + h / 2)) / (3.0 * (w + h) / 2),
                      (size / 2 - (x + w / 2)) / (3.0 * np.sqrt(w * h))))
    lx, ly, aspect, tx, ty, t_area = np.array(stats).T
    assert abs(lx.std() - 0.25) < 0.01 and abs(ly.std() - 0.25) < 0.01 and abs(np.corrcoef(lx, ly)[0, 1]) < 0.03
    assert abs(aspect.std() - 0.25 * np.sqrt(2)) < 0.01 and abs(aspect.mean()) < 0.01
    for t in (tx, ty):
        assert -0.5 <= t.min() < -0.49 and 0.49 < t.max() <= 0.5 and abs(t.var() - 1 / 12) < 0.003
    assert t_area.max() > 0.55  # measured by sqrt(area) the shift exceeds OSTrack's bound (0.5)


def test_swintrack_jitter_redraws_only_the_jitter(monkeypatch):
    """A thin tall box with a strong jitter misses the crop now and then: the jitter alone is drawn again until the
    box overlaps the crop (the frames stay), and the box is clipped to the crop's pixel centres."""
    box = np.array([40.0, 10.0, 2.0, 120.0])
    size, factor, sj, tj = 64, 4.0, 1.0, 3.0
    retried = 0
    for seed in range(300):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        origin, scales = crops.swintrack_jitter(box, factor, size, a, sj, tj)
        draws = replay_swintrack(box, factor, size, b, sj, tj)
        retried += len(draws) > 1
        assert scales == pytest.approx(tuple(draws[-1][0])) and a.random() == b.random()
        if len(draws) > 1:  # one try only: the first draw misses, nothing is returned
            assert crops.swintrack_jitter(box, factor, size, np.random.default_rng(seed), sj, tj, tries=1) is None
    assert retried > 5
    # in the pair dataset: frames drawn once, then the jitter (with its retries), the box clipped to [0.5, S - 0.5]
    seq = long_sequence(40, None)
    seq.boxes[:] = [30.0, 5.0, 3.0, 60.0]
    ds = crops.PairDataset([seq], 50, template_size=16, search_size=size, crop_rule="swintrack", scale_jitter=sj,
                           gray_prob=0.0, flip_prob=0.0, brightness=0.0)
    frame = np.full((80, 100, 3), 128, np.uint8)
    ds_frames = []
    monkeypatch.setattr(crops, "load_frame", lambda path: ds_frames.append(path) or frame)
    clipped = 0
    for i in range(50):
        rng = np.random.default_rng([ds.seed, i])
        _, t, s = ds.sample_frames(rng)
        origin, scales = crops.swintrack_jitter(seq.boxes[s], factor, size, rng, sj, 3.0)
        want = crops.box_in_crop(crops.crop_at(frame, origin, scales, size), seq.boxes[s], 0.5)
        ds_frames.clear()
        got = ds[i]["box"].numpy()
        assert ds_frames == [seq.frames[t], seq.frames[s]] and np.allclose(got, want, atol=1e-6)
        x0, y0, x1, y1 = got[0] - got[2] / 2, got[1] - got[3] / 2, got[0] + got[2] / 2, got[1] + got[3] / 2
        assert min(x0, y0) >= 0.5 / size - 1e-6 and max(x1, y1) <= 1 - 0.5 / size + 1e-6
        clipped += max(x1, y1) > 1 - 0.5 / size - 1e-6 or min(x0, y0) < 0.5 / size + 1e-6
    assert clipped > 0


def test_swintrack_pairs_show_the_target(squares):
    """crop_rule='swintrack' pairs: the search box lies on the square, whose aspect ratio in the crop now varies
    (per-axis scale jitter); the template is the SiamFC crop of factor 2 (a square box: 2x its side), centred."""
    ds = crops.PairDataset(squares, 40, template_size=32, search_size=64, crop_rule="swintrack", gray_prob=0.0,
                           brightness=0.0, frame_sampling="interval")
    aspects = []
    for i in range(12):
        item = ds[i]
        cx, cy, w, h = item["box"].tolist()
        assert 0.5 / 64 - 1e-6 <= cx - w / 2 < cx + w / 2 <= 1 - 0.5 / 64 + 1e-6
        img = unnormalize(item["search"])
        x0, x1, y0, y1 = ((cx - w / 2) * 64, (cx + w / 2) * 64, (cy - h / 2) * 64, (cy + h / 2) * 64)
        inner = img[int(y0) + 2:int(np.ceil(y1)) - 2, int(x0) + 2:int(np.ceil(x1)) - 2].reshape(-1, 3)
        assert np.abs(inner.mean(0) - SQUARE).max() < 12
        if min(cx - w / 2, cy - h / 2) > 0.05 and max(cx + w / 2, cy + h / 2) < 0.95:  # not cut by the crop
            aspects.append(w / h)
        timg = unnormalize(item["template"])
        assert np.abs(timg[10:22, 10:22].reshape(-1, 3).mean(0) - SQUARE).max() < 12
        assert np.abs(np.median(timg[:6].reshape(-1, 3), 0) - BACKGROUND).max() < 12
    assert np.std(np.log(aspects)) > 0.1  # the square is stretched
    with pytest.raises(ValueError, match="crop_rule"):
        crops.PairDataset(squares, 10, template_size=16, search_size=32, crop_rule="siamfc")


def test_crop_rule_is_resolved_by_design():
    from tasks.tracking.adapter import DESIGN_RECIPES, LASOT_RECIPES, GOT10k, LaSOT

    for task in (GOT10k, LaSOT):
        defaults = {k: v.default for k, v in task.params.items()}
        assert defaults["crop_rule"] is None
        for arch, rule in (("vit_base_patch16_224", "ostrack"), ("swinv2_base_window8_256", "swintrack"),
                           ("swin_base_patch4_window7_224", "swintrack")):
            assert task.resolve_family(defaults, arch)[0]["crop_rule"] == rule, (task.__name__, arch)
        assert task.resolve_family(dict(defaults, crop_rule="ostrack"), "swinv2_base_window8_256")[0][
            "crop_rule"] == "ostrack"
    assert {d: r.values["crop_rule"] for d, r in DESIGN_RECIPES.items()} == {"one-stream": "ostrack",
                                                                            "two-stream": "swintrack"}
    assert LASOT_RECIPES["two-stream"].values["crop_rule"] == "swintrack"
    with pytest.raises(Exception, match="crop_rule"):
        GOT10k.params["crop_rule"].check("crop_rule", "siamfc", "--set")
