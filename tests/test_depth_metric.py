"""MIMDepthMetric against a direct numpy computation of the paper's depth metrics (per image, then mean)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.errors import DataError

pytestmark = pytest.mark.mm
KEYS = ["d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"]


@pytest.fixture(scope="module")
def parts():
    pytest.importorskip("mmseg")
    from tasks.depth import mmseg_parts
    return mmseg_parts


# ------------------------------------------------------------------------------------------------ reference

def ref_image(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray, lo: float, hi: float) -> dict:
    """The paper's definitions, written out in numpy."""
    g = gt[mask].astype(np.float64)
    p = np.clip(pred[mask].astype(np.float64), lo, hi)
    ratio = np.maximum(g / p, p / g)
    err_log = np.log(p) - np.log(g)
    return {"d1": np.mean(ratio < 1.25), "d2": np.mean(ratio < 1.25 ** 2), "d3": np.mean(ratio < 1.25 ** 3),
            "abs_rel": np.mean(np.abs(p - g) / g), "sq_rel": np.mean((p - g) ** 2 / g),
            "rmse": np.sqrt(np.mean((p - g) ** 2)), "rmse_log": np.sqrt(np.mean(err_log ** 2)),
            "log10": np.mean(np.abs(np.log10(p) - np.log10(g))),
            "silog": np.sqrt(np.mean(err_log ** 2) - 0.5 * np.mean(err_log) ** 2)}


def ref_mean(items: list[dict]) -> dict:
    return {k: float(np.mean([it[k] for it in items])) for k in KEYS}


def box_mask(shape, rows, cols) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


def ref_crop(crop, h, w):
    """The crop boxes exactly as the task protocol states them."""
    if crop is None:
        return (0, h), (0, w)
    if crop == "eigen_nyu":
        r = lambda x: math.floor(x + 0.5)  # noqa: E731  (round half up)
        return (r(45 * h / 480), r(471 * h / 480)), (r(41 * w / 640), r(601 * w / 640))
    if crop == "garg":
        return (int(0.40810811 * h), int(0.99189189 * h)), (int(0.03594771 * w), int(0.96405229 * w))
    return (int(0.3324324 * h), int(0.91351351 * h)), (int(0.0359477 * w), int(0.96405229 * w))


def make_pair(rng, shape, max_depth):
    """GT with invalid zeros and out-of-range values; a prediction with zeros, negatives and huge values."""
    gt = rng.uniform(0.5, max_depth, shape).astype(np.float32)
    gt[rng.random(shape) < 0.2] = 0
    gt[rng.random(shape) < 0.05] = max_depth * 1.5
    pred = (gt + rng.normal(0, 0.3, shape)).astype(np.float32)
    pred[rng.random(shape) < 0.03] = 0
    pred[rng.random(shape) < 0.03] = -1
    pred[rng.random(shape) < 0.03] = max_depth * 3
    return gt, pred


def sample(gt: np.ndarray, pred: np.ndarray, **meta) -> dict:
    """A data sample as mmengine's Evaluator hands it to the metric (SegDataSample.to_dict())."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    s = SegDataSample(metainfo=meta)
    s.gt_depth_map = PixelData(data=torch.from_numpy(gt)[None])
    s.pred_depth_map = PixelData(data=torch.from_numpy(pred)[None])
    return s.to_dict()


def evaluate(metric, samples: list[dict]) -> dict:
    metric.process({}, samples)
    return metric.evaluate(len(samples))


# ------------------------------------------------------------------------------------------------ tests

def test_nyu_eigen_crop_per_image_mean_with_an_empty_image(parts):
    rng = np.random.default_rng(0)
    metric = parts.METRICS.build(dict(type="MIMDepthMetric", min_depth_eval=1e-3, max_depth_eval=10.0,
                                      crop="eigen_nyu"))
    pairs = [make_pair(rng, (60, 80), 10.0) for _ in range(3)]
    empty = (np.zeros((60, 80), np.float32), rng.uniform(1, 5, (60, 80)).astype(np.float32))
    out = evaluate(metric, [sample(g, p) for g, p in pairs + [empty]])
    mask = box_mask((60, 80), *ref_crop("eigen_nyu", 60, 80))
    expected = ref_mean([ref_image(g, p, mask & (g > 1e-3) & (g < 10), 1e-3, 10.0) for g, p in pairs])
    assert list(out) == KEYS
    assert out == pytest.approx(expected, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("crop", [None, "eigen_nyu", "garg", "eigen_kitti"])
def test_each_crop(parts, crop):
    rng = np.random.default_rng(1)
    pairs = [make_pair(rng, (47, 155), 80.0) for _ in range(2)]
    metric = parts.MIMDepthMetric(min_depth_eval=1e-3, max_depth_eval=80.0, crop=crop)
    out = evaluate(metric, [sample(g, p) for g, p in pairs])
    mask = box_mask((47, 155), *ref_crop(crop, 47, 155))
    expected = ref_mean([ref_image(g, p, mask & (g > 1e-3) & (g < 80), 1e-3, 80.0) for g, p in pairs])
    assert out == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_crop_boxes(parts):
    assert parts.crop_box("eigen_nyu", 480, 640) == (45, 471, 41, 601)
    assert parts.crop_box("garg", 375, 1242) == (153, 371, 44, 1197)
    assert parts.crop_box("eigen_kitti", 375, 1242) == (124, 342, 44, 1197)
    for crop in ("eigen_nyu", "garg", "eigen_kitti"):
        (r0, r1), (c0, c1) = ref_crop(crop, 47, 155)
        assert parts.crop_box(crop, 47, 155) == (r0, r1, c0, c1)


def test_kb_cropped_sample_garg_crop_placement(parts):
    """Default (the paper's depth code, GLPDepth): the Garg crop is computed on the KB-cropped GT as evaluated;
    crop_frame='full' places it on the full frame and shifts it by the kb_crop metainfo (BTS / AdaBins)."""
    rng = np.random.default_rng(2)
    gt, pred = make_pair(rng, (47, 155), 80.0)
    top, left, h, w = 3, 1, 44, 152
    gt_c, pred_c = gt[top:top + h, left:left + w].copy(), pred[top:top + h, left:left + w].copy()
    out = evaluate(parts.MIMDepthMetric(min_depth_eval=1e-3, max_depth_eval=80.0, crop="garg"),
                   [sample(gt_c.copy(), pred_c.copy(), kb_crop=(top, left, 47, 155))])
    mask = box_mask((h, w), *ref_crop("garg", h, w))
    expected = ref_image(gt_c, pred_c, mask & (gt_c > 1e-3) & (gt_c < 80), 1e-3, 80.0)
    assert out == pytest.approx({k: float(v) for k, v in expected.items()}, rel=1e-6, abs=1e-9)
    full = evaluate(parts.MIMDepthMetric(min_depth_eval=1e-3, max_depth_eval=80.0, crop="garg", crop_frame="full"),
                    [sample(gt_c.copy(), pred_c.copy(), kb_crop=(top, left, 47, 155))])
    mask = box_mask((47, 155), *ref_crop("garg", 47, 155))
    expected = ref_image(gt, pred, mask & (gt > 1e-3) & (gt < 80), 1e-3, 80.0)
    assert full == pytest.approx({k: float(v) for k, v in expected.items()}, rel=1e-6, abs=1e-9)
    assert full["rmse"] != pytest.approx(out["rmse"], rel=1e-9)  # two different pixel sets


def test_kb_crop_mask_is_the_full_frame_mask_shifted(parts):
    full = parts.crop_mask("garg", (47, 155))
    assert np.array_equal(parts.crop_mask("garg", (44, 152), (3, 1, 47, 155)), full[3:47, 1:153])
    with pytest.raises(ValueError, match="does not contain"):
        parts.crop_mask("garg", (44, 152), (5, 1, 47, 155))


def test_perfect_prediction(parts):
    rng = np.random.default_rng(3)
    gt, _ = make_pair(rng, (60, 80), 10.0)
    out = evaluate(parts.MIMDepthMetric(min_depth_eval=1e-3, max_depth_eval=10.0, crop="eigen_nyu"),
                   [sample(gt, gt.copy())])
    assert out["rmse"] == 0 and out["abs_rel"] == 0 and out["log10"] == 0
    assert out["d1"] == out["d2"] == out["d3"] == 1


def test_zero_predictions_are_clipped_not_nan(parts):
    gt = np.full((8, 8), 2.0, np.float32)
    out = evaluate(parts.MIMDepthMetric(min_depth_eval=1e-3, max_depth_eval=10.0), [sample(gt, np.zeros_like(gt))])
    assert all(np.isfinite(v) for v in out.values())
    assert out["rmse"] == pytest.approx(2.0 - 1e-3)


def test_no_valid_pixel_anywhere_is_a_data_error(parts):
    gt = np.full((8, 8), 20.0, np.float32)  # all beyond max_depth_eval
    metric = parts.MIMDepthMetric(min_depth_eval=1e-3, max_depth_eval=10.0)
    metric.process({}, [sample(gt, gt.copy())])
    with pytest.raises(DataError, match="none of 1 images"):
        metric.compute_metrics(metric.results)


def test_bad_arguments_and_shapes(parts):
    with pytest.raises(ValueError, match="unknown crop"):
        parts.MIMDepthMetric(crop="nyu_crop")
    with pytest.raises(ValueError, match="min_depth_eval"):
        parts.MIMDepthMetric(min_depth_eval=0.0, max_depth_eval=10.0)
    metric = parts.MIMDepthMetric(max_depth_eval=10.0)
    with pytest.raises(ValueError, match="differ"):
        metric.process({}, [sample(np.ones((8, 8), np.float32), np.ones((4, 4), np.float32))])


def test_through_mmengine_evaluator_with_segdatasamples(parts):
    """The path a Runner takes: Evaluator converts SegDataSamples to dicts, kb_crop travels as metainfo."""
    import torch
    from mmengine.evaluator import Evaluator
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    rng = np.random.default_rng(4)
    gt, pred = make_pair(rng, (44, 152), 80.0)
    s = SegDataSample(metainfo=dict(kb_crop=(3, 1, 47, 155), img_path="x.png"))
    s.gt_depth_map = PixelData(data=torch.from_numpy(gt)[None])
    s.pred_depth_map = PixelData(data=torch.from_numpy(pred)[None])
    init_default_scope("mmseg")  # as the Runner does; the metric is found in mmseg's registry
    ev = Evaluator(dict(type="MIMDepthMetric", min_depth_eval=1e-3, max_depth_eval=80.0, crop="garg",
                        crop_frame="full"))
    ev.process([s])
    out = ev.evaluate(1)
    mask = parts.crop_mask("garg", (44, 152), (3, 1, 47, 155)) & (gt > 1e-3) & (gt < 80)
    assert out == pytest.approx({k: float(v) for k, v in ref_image(gt, pred, mask, 1e-3, 80.0).items()}, rel=1e-6)
