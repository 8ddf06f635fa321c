"""Tracking metrics (GOT-10k AO/SR, LaSOT success/precision) by hand, against the official GOT-10k toolkit, and the
GOT-10k server submission zip."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmark.errors import BenchmarkError
from tasks.tracking.metrics import (
    NORM_PRECISION_THRESHOLDS,
    PRECISION_THRESHOLDS,
    SUCCESS_THRESHOLDS,
    SequenceResult,
    centers,
    got10k_scores,
    iou,
    lasot_scores,
)
from tasks.tracking.submission import write_got10k_submission


def B(*rows) -> np.ndarray:
    return np.array(rows, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------------- iou

def test_iou_hand_cases():
    gt = B([0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 10])
    pred = B([0, 0, 10, 10], [20, 20, 5, 5], [5, 0, 10, 10], [0, 0, 10, 10], [10, 0, 10, 10])
    # identical, disjoint, shifted by half a width (50 / 150), half of the gt, touching edges (continuous: no overlap)
    np.testing.assert_allclose(iou(pred, gt), [1.0, 0.0, 1 / 3, 0.5, 0.0], rtol=0, atol=1e-15)


def test_iou_zero_area_is_zero_not_nan():
    out = iou(B([5, 5, 0, 0], [5, 5, 0, 10]), B([5, 5, 0, 0], [0, 0, 10, 10]))
    assert np.array_equal(out, [0.0, 0.0])


def test_iou_clips_to_the_image_like_the_got10k_toolkit_and_leaves_inputs_alone():
    pred = B([-10, 0, 20, 10], [90, 90, 20, 20], [150, 10, 10, 10])
    gt = B([0, 0, 20, 10], [90, 90, 10, 10], [95, 10, 5, 10])
    before = pred.copy(), gt.copy()
    # x < 0 is moved to 0 with the width kept (not cut to 10); a box past the right edge is cut at W; a box wholly
    # right of the image collapses to zero width at x = W
    np.testing.assert_allclose(iou(pred, gt, bound=(100, 100)), [1.0, 1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(iou(pred, gt), [1 / 3, 0.25, 0.0], atol=1e-15)
    assert np.array_equal(pred, before[0]) and np.array_equal(gt, before[1])


def test_iou_refuses_mismatched_shapes():
    with pytest.raises(BenchmarkError):
        iou(B([0, 0, 1, 1]), B([0, 0, 1, 1], [0, 0, 1, 1]))
    with pytest.raises(BenchmarkError):
        iou(np.zeros((3, 5)), np.zeros((3, 5)))


# ----------------------------------------------------------------------------------------------------------- GOT-10k

GT10 = [0, 0, 10, 10]
HIT = [0, 0, 10, 10]  # IoU 1 with GT10
MISS = [50, 50, 10, 10]  # IoU 0 with GT10
JUNK = [-500, 900, 3, 3]


def _seq(name, pred_rows, cover=None, **kw):
    gt = B(*([GT10] * len(pred_rows)))
    return SequenceResult(name, B(*pred_rows), gt, cover=None if cover is None else np.array(cover), **kw)


def test_got10k_pools_frames_over_sequences_and_skips_frame_one():
    a = _seq("a", [JUNK, HIT, MISS])  # frames 2..3: IoU 1, 0 -> 50
    b = _seq("b", [JUNK, MISS, MISS, MISS, HIT])  # frames 2..5: 0, 0, 0, 1 -> 25
    s = got10k_scores([a, b])
    assert s["AO"] == pytest.approx(100 * 2 / 6, abs=1e-12)  # pooled, not (50 + 25) / 2
    assert s["AO"] != pytest.approx(37.5)
    assert s["per_sequence"] == {"a": pytest.approx(50.0), "b": pytest.approx(25.0)}
    assert s["SR50"] == pytest.approx(100 * 2 / 6) and s["SR75"] == pytest.approx(100 * 2 / 6)
    assert s["frames"] == 6


def test_got10k_counts_only_frames_with_cover_above_zero():
    b = _seq("b", [JUNK, MISS, MISS, MISS, HIT], cover=[8, 0, 0, 3, 1])  # frame 1's cover is irrelevant too
    s = got10k_scores([b])
    assert s["AO"] == pytest.approx(50.0) and s["frames"] == 2
    # without cover, the visible mask is the fallback; cover wins when both are given
    vis = _seq("b", [JUNK, MISS, MISS, MISS, HIT])
    vis.visible = np.array([True, False, False, True, True])
    assert got10k_scores([vis])["AO"] == pytest.approx(50.0)
    vis.cover = np.array([1, 1, 1, 1, 1])
    assert got10k_scores([vis])["AO"] == pytest.approx(25.0)


def test_got10k_pools_repetitions_of_one_sequence():
    runs = [_seq("a", [JUNK, HIT, HIT]), _seq("a", [JUNK, MISS, MISS]), _seq("a", [JUNK, HIT, MISS])]
    s = got10k_scores(runs)
    assert s["AO"] == pytest.approx(50.0) and s["per_sequence"] == {"a": pytest.approx(50.0)} and s["frames"] == 6


def test_got10k_success_rates_are_strictly_greater():
    gt = B(*[[0, 0, 40, 20]] * 4)
    # IoU exactly 0.5 (20x20 inside 40x20) and exactly 0.75 (30x20), then 0.75 < 0.8 and 1
    pred = B([0, 0, 40, 20], [0, 0, 20, 20], [0, 0, 30, 20], [0, 0, 40, 20])
    ious = iou(pred[1:], gt[1:])
    assert ious.tolist() == [0.5, 0.75, 1.0]
    s = got10k_scores([SequenceResult("s", pred, gt)])
    assert s["SR50"] == pytest.approx(100 * 2 / 3)  # 0.5 is not > 0.5
    assert s["SR75"] == pytest.approx(100 * 1 / 3)  # 0.75 is not > 0.75
    assert s["AO"] == pytest.approx(100 * 2.25 / 3)


def test_got10k_clips_with_the_resolution():
    gt = B([0, 0, 20, 10], [0, 0, 20, 10])
    pred = B([0, 0, 20, 10], [-10, 0, 20, 10])
    assert got10k_scores([SequenceResult("s", pred, gt, resolution=(100, 100))])["AO"] == pytest.approx(100.0)
    assert got10k_scores([SequenceResult("s", pred, gt)])["AO"] == pytest.approx(100 / 3)


def test_got10k_nan_box_makes_ao_nan_and_counts_as_a_failure_in_sr_like_the_toolkit():
    a = _seq("a", [JUNK, HIT, [np.nan, 0, 10, 10]], resolution=(640, 480))
    s = got10k_scores([a, _seq("b", [JUNK, HIT])])
    assert math.isnan(s["AO"]) and math.isnan(s["per_sequence"]["a"])
    assert s["per_sequence"]["b"] == pytest.approx(100.0)
    assert s["SR50"] == pytest.approx(100 * 2 / 3)


def test_got10k_refuses_bad_input():
    with pytest.raises(BenchmarkError, match="predicted boxes"):
        got10k_scores([SequenceResult("a", B(HIT, HIT), B(GT10, GT10, GT10))])
    with pytest.raises(BenchmarkError, match="cover"):
        got10k_scores([_seq("a", [HIT, HIT, HIT], cover=[1, 1])])
    with pytest.raises(BenchmarkError, match="no results"):
        got10k_scores([])
    with pytest.raises(BenchmarkError, match="no frame"):
        got10k_scores([_seq("a", [HIT, HIT], cover=[1, 0])])


def test_got10k_empty_sequence_ao_is_nan_but_the_pool_still_scores():
    s = got10k_scores([_seq("a", [HIT, HIT], cover=[1, 0]), _seq("b", [HIT, HIT])])
    assert math.isnan(s["per_sequence"]["a"]) and s["AO"] == pytest.approx(100.0)


# ------------------------------------------------------------------------------------------------------------- LaSOT

G100 = [0, 0, 100, 100]


def test_lasot_auc_by_hand_on_four_frames():
    gt = B(G100, G100, G100, [0, 0, 0, 0])
    # frame 1 junk (replaced by the GT: IoU 1), IoU 0.62, IoU 0.33, frame 4 absent although predicted perfectly
    pred = B(JUNK, [0, 0, 100, 62], [0, 0, 100, 33], G100)
    visible = np.array([True, True, True, False])
    s = lasot_scores([SequenceResult("s", pred, gt, visible=visible)])
    # thresholds passed: IoU 1 -> t < 1 (20 of 21), 0.62 -> t <= 0.60 (13), 0.33 -> t <= 0.30 (7), absent -> 0
    assert s["success_auc"] == pytest.approx(100 * (20 + 13 + 7 + 0) / (4 * 21), abs=1e-12)
    expected = [100 * (int(t < 1) + int(t < 0.62) + int(t < 0.33)) / 4 for t in SUCCESS_THRESHOLDS]
    np.testing.assert_allclose(s["curves"]["success"]["values"], expected, atol=1e-12)
    assert len(s["curves"]["success"]["thresholds"]) == 21
    assert s["per_sequence"]["s"] == pytest.approx(s["success_auc"])


def test_lasot_frame_one_is_the_ground_truth():
    gt = B(G100, G100)
    s = lasot_scores([SequenceResult("s", B([np.nan, 0, 0, 0], G100), gt)])
    assert s["success_auc"] == pytest.approx(100 * 20 / 21)  # IoU 1 on both frames: every t < 1
    assert s["precision"] == 100.0 and s["norm_precision"] == 100.0


def test_lasot_absent_frames_are_failures_over_all_frames():
    gt = B(G100, G100, G100, G100)
    pred = B(G100, G100, G100, G100)  # perfect everywhere, but frames 3 and 4 are absent
    s = lasot_scores([SequenceResult("s", pred, gt, visible=np.array([1, 1, 0, 0], bool))])
    assert s["precision"] == pytest.approx(50.0) and s["norm_precision"] == pytest.approx(50.0)
    assert s["success_auc"] == pytest.approx(50.0 * 20 / 21)
    assert s["curves"]["precision"]["values"][50] == pytest.approx(50.0)  # even at 50 px


def test_lasot_zero_size_gt_on_a_visible_frame_fails():
    s = lasot_scores([SequenceResult("s", B(G100, G100), B(G100, [0, 0, 0, 0]))])
    assert s["precision"] == pytest.approx(50.0)


def test_lasot_precision_boundary_at_20_px_and_centre_convention():
    assert centers(B([10, 20, 5, 7])).tolist() == [[12.0, 23.0]]  # x + (w - 1) / 2
    gt = B([10, 10, 20, 20], [10, 10, 20, 20], [10, 10, 20, 20], [0, 0, 10, 10])
    # error exactly 20 (x), exactly 20 (12, 16), 20.5 (x), and a wider box whose centre is 20 px right
    pred = B([10, 10, 20, 20], [30, 10, 20, 20], [22, 26, 20, 20], [0, 0, 50, 10])
    frames = [SequenceResult(f"f{i}", np.vstack([gt[i], pred[i]]), np.vstack([gt[i], gt[i]])) for i in range(4)]
    frames.append(SequenceResult("far", B([10, 10, 20, 20], [30.5, 10, 20, 20]), B([10, 10, 20, 20], [10, 10, 20, 20])))
    per = [lasot_scores([f])["precision"] for f in frames]
    assert per == [100.0, 100.0, 100.0, 100.0, 50.0]  # <= 20 counts, 20.5 does not
    curve = lasot_scores(frames[-1:])["curves"]["precision"]
    assert curve["thresholds"] == PRECISION_THRESHOLDS.tolist() and curve["values"][21] == 100.0


def test_lasot_normalized_precision_is_per_axis_and_read_at_0_2():
    gt = B([0, 0, 50, 100], [0, 0, 50, 100])
    # 5 px in x (0.1 of w) and 15 px in y (0.15 of h): 0.18 normalized although 15.8 px; dividing y by w would
    # give 0.32 and fail
    near = lasot_scores([SequenceResult("s", B([0, 0, 50, 100], [5, 15, 50, 100]), gt)])
    assert near["norm_precision"] == 100.0
    # 0.21 of w: fails at 0.20 (the mean over the curve would be far above 50)
    far = lasot_scores([SequenceResult("s", B([0, 0, 50, 100], [10.5, 0, 50, 100]), gt)])
    assert far["norm_precision"] == pytest.approx(50.0)
    assert np.mean(far["curves"]["norm_precision"]["values"]) > 60
    assert far["curves"]["norm_precision"]["thresholds"] == NORM_PRECISION_THRESHOLDS.tolist()
    assert far["curves"]["norm_precision"]["thresholds"][20] == 0.2


def test_lasot_averages_sequences_equally():
    short = SequenceResult("short", B(G100, G100), B(G100, G100))  # 100 %
    long = SequenceResult("long", B(G100, *[[500, 500, 10, 10]] * 9), B(*[G100] * 10))  # 10 %
    assert lasot_scores([short, long])["precision"] == pytest.approx(55.0)


def test_lasot_invalid_predictions_take_the_previous_box():
    gt = B(G100, G100, G100, G100)
    pred = B(G100, [0, 0, 100, 60], [0, 0, 0, 5], [np.nan, 1, 1, 1])  # frames 3 and 4 reuse frame 2's box
    s = lasot_scores([SequenceResult("s", pred, gt)])
    fixed = lasot_scores([SequenceResult("s", B(G100, *[[0, 0, 100, 60]] * 3), gt)])
    assert s["curves"] == fixed["curves"]


def test_lasot_lengths_longer_is_cut_shorter_refused_and_duplicates_refused():
    gt = B(G100, G100)
    assert lasot_scores([SequenceResult("s", B(G100, G100, JUNK), gt)])["precision"] == 100.0
    with pytest.raises(BenchmarkError, match="predicted boxes"):
        lasot_scores([SequenceResult("s", B(G100), gt)])
    with pytest.raises(BenchmarkError, match="more than once"):
        lasot_scores([SequenceResult("s", gt, gt), SequenceResult("s", gt, gt)])


# ------------------------------------------------------------------------------------------------ submission (GOT-10k)

def _read_zip(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n).decode() for n in zf.namelist()}


def test_submission_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    preds = {"GOT-10k_Test_000002": [rng.uniform(-5, 500, (4, 4)) for _ in range(3)],
             "GOT-10k_Test_000001": [rng.uniform(0, 500, (6, 4))]}
    times = {k: [rng.uniform(0.001, 0.1, len(v[0])) for _ in v] for k, v in preds.items()}
    out = write_got10k_submission(tmp_path / "sub.zip", preds, times)
    assert out == tmp_path / "sub.zip"
    files = _read_zip(out)
    assert sorted(files) == sorted(
        ["GOT-10k_Test_000001/", "GOT-10k_Test_000001/GOT-10k_Test_000001_001.txt",
         "GOT-10k_Test_000001/GOT-10k_Test_000001_time.txt", "GOT-10k_Test_000002/",
         *[f"GOT-10k_Test_000002/GOT-10k_Test_000002_{s}.txt" for s in ("001", "002", "003", "time")]])
    for seq, runs in preds.items():
        for i, boxes in enumerate(runs, start=1):
            text = files[f"{seq}/{seq}_{i:03d}.txt"]
            assert text.splitlines()[0] == ",".join(f"{v:.3f}" for v in boxes[0])
            np.testing.assert_allclose(np.loadtxt(io.StringIO(text), delimiter=","), boxes, rtol=0, atol=5e-4)
        t = np.loadtxt(io.StringIO(files[f"{seq}/{seq}_time.txt"]), delimiter=",", ndmin=2)
        assert t.shape == (len(runs[0]), len(runs))  # one line per frame, one column per run
        np.testing.assert_allclose(t, np.stack(times[seq], axis=1), rtol=0, atol=5e-9)
    # same input, same bytes
    again = write_got10k_submission(tmp_path / "again.zip", preds, times)
    assert again.read_bytes() == out.read_bytes()


def _ok():
    return {"s": [np.zeros((3, 4)) + 1]}, {"s": [np.full(3, 0.01)]}


@pytest.mark.parametrize("mutate, match", [
    (lambda p, t: p["s"][0].__setitem__((1, 2), np.nan), "NaN"),
    (lambda p, t: p.__setitem__("s", [np.zeros((3, 5))]), "shape"),
    (lambda p, t: (p["s"].append(np.ones((4, 4))), t["s"].append(np.ones(4))), "frames"),
    (lambda p, t: t.__setitem__("s", [np.full(2, 0.01)]), "times of shape"),
    (lambda p, t: t.__setitem__("s", [np.full(3, np.nan)]), "time"),
    (lambda p, t: t.__setitem__("s", []), "times for"),
    (lambda p, t: t.__setitem__("other", [np.ones(3)]), "different sequences"),
    (lambda p, t: (p.__setitem__("../x", p.pop("s")), t.__setitem__("../x", t.pop("s"))), "sequence name"),
])
def test_submission_refuses_bad_input_and_writes_nothing(tmp_path, mutate, match):
    preds, times = _ok()
    mutate(preds, times)
    target = tmp_path / "sub.zip"
    target.write_bytes(b"previous submission")
    with pytest.raises(BenchmarkError, match=match):
        write_got10k_submission(target, preds, times)
    assert target.read_bytes() == b"previous submission"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.zip"]


def test_submission_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    preds, times = _ok()
    preds["t"], times["t"] = preds["s"], times["s"]
    calls = {"n": 0}
    real = zipfile.ZipFile.writestr

    def failing(self, info, data, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # after some entries made it into the temp file
            raise OSError("disk full")
        return real(self, info, data, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing)
    with pytest.raises(OSError, match="disk full"):
        write_got10k_submission(tmp_path / "sub.zip", preds, times)
    assert list(tmp_path.iterdir()) == []  # no sub.zip and no temp file


def test_submission_needs_a_zip_name(tmp_path):
    with pytest.raises(BenchmarkError, match=".zip"):
        write_got10k_submission(tmp_path / "sub.tar", *_ok())


# ------------------------------------------------------------------------------- cross-check: official GOT-10k toolkit

def _fake_got10k_val(root: Path, rng: np.random.Generator) -> dict:
    """A tiny GOT-10k val layout the official toolkit can read; returns {seq: (gt, cover, resolution)}."""
    from PIL import Image

    jpg = io.BytesIO()
    Image.new("RGB", (4, 4)).save(jpg, format="JPEG")
    seqs = {"GOT-10k_Val_000001": (9, (64, 48)), "GOT-10k_Val_000002": (17, (1280, 720)),
            "GOT-10k_Val_000003": (5, (100, 80)), "GOT-10k_Val_000004": (12, (320, 240))}
    (root / "val").mkdir(parents=True)
    (root / "val" / "list.txt").write_text("\n".join(seqs) + "\n")
    out = {}
    for seq, (n, (w, h)) in seqs.items():
        d = root / "val" / seq
        d.mkdir()
        xy = rng.uniform(0, [w * 0.7, h * 0.7], (n, 2))
        wh = rng.uniform(2, [w * 0.3, h * 0.3], (n, 2))
        gt = np.round(np.hstack([xy, wh]), 4)
        gt[-1, :2] = [w - gt[-1, 2] / 2, 0]  # a ground truth hanging off the right edge: clipped too
        cover = rng.integers(0, 9, n)
        cover[1] = 0  # at least one hidden frame after the first
        np.savetxt(d / "groundtruth.txt", gt, fmt="%.4f", delimiter=",")
        np.savetxt(d / "cover.label", cover, fmt="%d")
        np.savetxt(d / "absence.label", (cover == 0).astype(int), fmt="%d")
        np.savetxt(d / "cut_by_image.label", rng.integers(0, 2, n), fmt="%d")
        (d / "meta_info.ini").write_text(
            "[METAINFO]\nurl: https://example.invalid/v\nbegin: 00:00:01\nend: 00:00:10\nanno_fps: 10Hz\n"
            "object_class: cat\nmotion_class: walking\nmajor_class: mammal\nroot_class: animal\n"
            f"motion_adverb: slowly\nresolution: ({w}, {h})\n")
        for f in range(1, n + 1):
            (d / f"{f:08d}.jpg").write_bytes(jpg.getvalue())
        out[seq] = (np.loadtxt(d / "groundtruth.txt", delimiter=","), cover, (w, h))
    return out


def _fake_predictions(gt: np.ndarray, res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    n = len(gt)
    pred = gt + rng.normal(0, 0.15, (n, 4)) * gt[:, [2, 3, 2, 3]]
    pred[0] = [-1e3, -1e3, 1, 1]  # frame 1 is never scored
    k = rng.permutation(np.arange(1, n))
    pred[k[0]] = [-30, -20, gt[k[0], 2] + 25, gt[k[0], 3] + 15]  # starts left of and above the image
    pred[k[1]] = [res[0] - 5, res[1] - 5, 60, 60]  # runs off the bottom right
    pred[k[2]] = [res[0] + 10, 3, 8, 8]  # wholly outside
    if n > 4:
        pred[k[3]] = gt[k[3]]  # exact
    return pred


def test_got10k_scores_equal_the_official_toolkit(tmp_path, monkeypatch):
    got10k_exp = pytest.importorskip("got10k.experiments", reason="the official GOT-10k toolkit (pip got10k) is "
                                     "not installed: scripts/setup.sh installs it")
    rng = np.random.default_rng(7)
    data = _fake_got10k_val(tmp_path / "data", rng)
    repeats = {"GOT-10k_Val_000002": 3}
    preds = {s: [_fake_predictions(gt, res, rng) for _ in range(repeats.get(s, 1))]
             for s, (gt, _, res) in data.items()}
    times = {s: [rng.uniform(0.01, 0.05, len(p[0])) for _ in p] for s, p in preds.items()}

    # our submission writer produces the toolkit's result layout: unzip it where the toolkit reads results
    zpath = write_got10k_submission(tmp_path / "mine.zip", preds, times)
    tracker_dir = tmp_path / "results" / "GOT-10k" / "mine"
    with zipfile.ZipFile(zpath) as zf:
        zf.extractall(tracker_dir)

    exp = got10k_exp.ExperimentGOT10k(str(tmp_path / "data"), subset="val", result_dir=str(tmp_path / "results"),
                                      report_dir=str(tmp_path / "reports"))
    monkeypatch.setattr(exp, "plot_curves", lambda *a, **k: None)  # a 300-dpi figure adds nothing to the check
    official = exp.report(["mine"])["mine"]

    results = []
    for s, (gt, cover, res) in data.items():
        for i in range(len(preds[s])):
            pred = np.loadtxt(tracker_dir / s / f"{s}_{i + 1:03d}.txt", delimiter=",")  # what the toolkit read
            results.append(SequenceResult(s, pred, gt, cover=cover, resolution=res))
    ours = got10k_scores(results)

    assert ours["AO"] == pytest.approx(100 * official["overall"]["ao"], abs=1e-9)
    assert ours["SR50"] == pytest.approx(100 * official["overall"]["sr"], abs=1e-9)
    assert ours["SR75"] == pytest.approx(100 * official["overall"]["succ_curve"][75], abs=1e-9)
    for s in data:
        assert ours["per_sequence"][s] == pytest.approx(100 * official["seq_wise"][s]["ao"], abs=1e-9)
    # the case mix is not degenerate: clipping matters and some, not all, frames succeed
    unclipped = got10k_scores([SequenceResult(r.name, r.pred, r.gt, cover=r.cover) for r in results])
    assert abs(unclipped["AO"] - ours["AO"]) > 1e-3
    assert 0 < ours["SR50"] < 100 and ours["frames"] < sum(len(r.gt) - 1 for r in results)
