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
