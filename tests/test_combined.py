"""The combined tasks end to end through `benchmark run`: COCO Mask R-CNN (mmdet), ADE20K UperNet and Mask2Former
(mmseg) on generated mini data, tiny backbones, CPU. The mini data and layout checks are tested in
test_detection_data.py and test_segmentation_data.py; the metrics are OpenMMLab's own (mmdet CocoMetric, mmseg
IoUMetric)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.conftest import TINY_SWIN, db_extra, db_results, make_ckpt, run_cli

pytestmark = [pytest.mark.mm, pytest.mark.slow]

COCO_METRICS = {f"{k}_{m}" for k in ("bbox", "segm") for m in ("AP", "AP50", "AP75")}


@pytest.fixture(scope="module")
def combined(tmp_path_factory, tiny_vit_ckpt):
    """The three tasks (ci preset) on the tiny ViT, and the same after one training iteration."""
    wd = tmp_path_factory.mktemp("combined")
    db = wd / "r.db"
    common = ["--ckpt", tiny_vit_ckpt, "--data", "mini", "--work-dir", wd / "wd", "--db", db]
    out = run_cli("run", "--suite", "combined", "--jobs", "2", *common)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    untrained = run_cli("run", "--suite", "combined", "--set", "iters=1", "--jobs", "2", *common)
    assert untrained.returncode == 0, untrained.stderr[-3000:]
    return wd, db


def test_the_three_tasks_store_the_openmmlab_metrics(combined):
    _, db = combined
    ci = db_results(db).query("preset == 'ci'")
    assert set(ci[ci.task == "coco_det"].metric) == COCO_METRICS
    assert set(ci[ci.task == "ade20k_seg"].metric) == {"mIoU", "aAcc", "mAcc"}
    assert set(ci[ci.task == "ade20k_m2f"].metric) == {"mIoU"}
    assert ((ci.value >= 0) & (ci.value <= 100)).all(), ci
    extra = db_extra(db, "coco_det", "ci")
    assert all(v >= 0 for k, v in extra.items() if k.endswith(("APs", "APm", "APl"))), extra  # never a -1
    assert db_extra(db, "ade20k_seg", "ci")["test"] == "single-scale, whole"


def test_the_mini_data_is_learnable(combined):
    """Measured (tiny random-init ViT, ci preset vs 1 iteration): ADE20K UperNet mIoU 41.0 vs 1.9 and Mask2Former
    56.3 vs 6.2 (150 iterations; 73.0 and 86.4 at 300); COCO box AP50 8.5 vs 0, mask AP50 3.4 vs 0 (300 iterations;
    at 150 only 1.0 / 0.6: a tiny Mask R-CNN learns slowly on the CPU; the numbers show the path learns)."""
    _, db = combined
    res = db_results(db).set_index(["task", "preset", "metric"])["value"]
    assert res["ade20k_seg", "ci", "mIoU"] > res["ade20k_seg", "ci+iters=1", "mIoU"] + 20, res
    assert res["ade20k_m2f", "ci", "mIoU"] > res["ade20k_m2f", "ci+iters=1", "mIoU"] + 20, res
    assert res["coco_det", "ci", "bbox_AP50"] > res["coco_det", "ci+iters=1", "bbox_AP50"] + 4, res
    assert res["coco_det", "ci", "segm_AP50"] > res["coco_det", "ci+iters=1", "segm_AP50"] + 1, res


def test_multi_scale_flip_testing_is_its_own_row(combined):
    """mmseg's TestTimeAug + SegTTAModel after the same training: stored under its own preset label."""
    wd, db = combined
    with sqlite3.connect(db) as conn:
        ckpt = conn.execute("SELECT ckpt_path FROM runs LIMIT 1").fetchone()[0]
    out = run_cli("run", "--ckpt", ckpt, "--tasks", "ade20k_seg", "--data", "mini", "--set", "test_aug=msflip",
                  "--set", "tta_ratios=[0.75,1.0,1.25]", "--work-dir", wd / "wd", "--db", db)
    assert out.returncode == 0, out.stderr[-3000:]
    label = "ci+test_aug=msflip,tta_ratios=[0.75, 1.0, 1.25]"
    res = db_results(db).set_index(["task", "preset", "metric"])["value"]
    assert res["ade20k_seg", label, "mIoU"] > res["ade20k_seg", "ci+iters=1", "mIoU"] + 20, res
    assert db_extra(db, "ade20k_seg", label)["test"] == "multi-scale [0.75, 1.0, 1.25] + flip, whole"
    assert "SegTTAModel" in next((wd / "wd").rglob("ade20k_seg/*test_aug=msflip*/worker.log")).read_text()


def test_swin_under_two_process_ddp(combined, tmp_path):
    wd, _ = combined
    swin = make_ckpt(tmp_path / "swin.pth", TINY_SWIN)
    out = run_cli("run", "--ckpt", swin, "--suite", "combined", "--data", "mini", "--nproc", "2",
                  "--set", "iters=4", "--work-dir", wd / "wd", "--db", tmp_path / "s.db")
    assert out.returncode == 0, out.stderr[-3000:]
    for task in ("coco_det", "ade20k_seg", "ade20k_m2f"):
        assert db_extra(tmp_path / "s.db", task, "ci+iters=4")["iterations"] == 4


def test_bad_combined_data_is_one_line(combined, tmp_path):
    wd, db = combined
    with sqlite3.connect(db) as conn:
        ckpt = conn.execute("SELECT ckpt_path FROM runs LIMIT 1").fetchone()[0]
    ade = tmp_path / "ADEChallengeData2016"
    for sub in ("images/training", "images/validation", "annotations/training", "annotations/validation"):
        (ade / sub).mkdir(parents=True)
    (ade / "images/training/ADE_train_00000001.jpg").write_bytes(b"x")
    (ade / "images/validation/ADE_val_00000001.jpg").write_bytes(b"x")
    out = run_cli("run", "--ckpt", ckpt, "--tasks", "ade20k_seg", "--data-root", tmp_path, "--work-dir",
                  tmp_path / "w", "--db", tmp_path / "b.db")
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1 and "ADE_train_00000001" in errors[0], out.stderr
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / "train2017").mkdir()
    (coco / "val2017").mkdir()
    bad = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "persn", "supercategory": "x"}]}
    for split in ("train", "val"):
        (coco / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(bad))
    out = run_cli("run", "--ckpt", ckpt, "--tasks", "coco_det", "--data-root", tmp_path, "--work-dir",
                  tmp_path / "w", "--db", tmp_path / "b.db")
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1 and "persn" in errors[0], out.stderr
