"""mmseg 1.2.2 parts for the depth tasks; importing this module registers them.

- ``KITTIEigenDataset`` (mmseg DATASETS): the KITTI Eigen split from a BTS split file, data_info dicts in
  NYUDataset's format (so mmseg's ``LoadDepthAnnotation`` reads them) plus ``focal``.
- ``KBCrop`` (mmseg TRANSFORMS): KITTI's bottom-centre crop of image and depth GT, recorded as ``kb_crop``.
- ``DepthColorAug`` (mmseg TRANSFORMS): the paper's photometric training augmentation (albumentations'
  RandomBrightnessContrast, RandomGamma and HueSaturationValue at their defaults, each with probability 0.5).
- ``MIMDepthMetric`` (mmseg METRICS): the depth metrics of the paper's code, per image then averaged over images,
  with the NYU Eigen / KITTI Garg / KITTI Eigen crops placed on the frame the GT is evaluated at (KITTI: the
  352×1216 KB crop), as the paper's depth code (SwinTransformer/MIM-Depth-Estimation, utils/metrics.py), GLPDepth
  and the BinsFormer toolbox do; ``crop_frame='full'`` places them on the full frame instead.

A test pipeline that uses them (the metric needs ``kb_crop`` in the meta keys)::

    [dict(type='LoadImageFromFile'),
     dict(type='LoadDepthAnnotation', depth_rescale_factor=1 / 256),     # 1e-3 for NYU (millimetres)
     dict(type='KBCrop', crop_size=(352, 1216)),                          # KITTI only
     dict(type='PackSegInputs', meta_keys=META_KEYS)]

The GT must reach the metric at ``ori_shape`` (mmseg resizes predictions to it). To resize the test input after
KBCrop use ``type='mmcv.Resize'``: mmseg's own ``Resize`` resizes ``gt_depth_map`` too. Pipelines name these
transforms by bare type, so the default scope must be 'mmseg' (as under a Runner with default_scope='mmseg').
"""

from __future__ import annotations

import math
import os.path as osp
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log
from mmseg.datasets import BaseSegDataset
from mmseg.evaluation.metrics import DepthMetric
from mmseg.registry import DATASETS, METRICS, TRANSFORMS

from benchmark.errors import DataError
from tasks.depth.layout import parse_split_file, under

META_KEYS = ('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
             'flip_direction', 'category_id', 'focal', 'kb_crop')
CROPS = (None, 'eigen_nyu', 'garg', 'eigen_kitti')
CROP_FRAMES = ('eval', 'full')
NYU_EIGEN = (45, 471, 41, 601, 480, 640)  # rows 45:471, cols 41:601 of a 480×640 NYU frame


@DATASETS.register_module()
class KITTIEigenDataset(BaseSegDataset):
    """KITTI Eigen split as listed in a BTS split file (``ann_file``, relative to ``data_root``).

    Lines read ``<rgb path> <gt path or None> <focal>``; rgb paths are relative to ``<data_root>/<rgb_root>``
    (BTS's --data_path), gt paths to ``<data_root>/<gt_root>`` (BTS's --gt_path). Lines without GT ('None', or,
    outside test mode, a GT file that does not exist) are skipped and counted; in test mode a named but missing
    GT file is a DataError, since dropping it would change the evaluated set.
    """

    METAINFO = dict(classes=('kitti', ))  # one scene category: the split file carries none

    def __init__(self, ann_file: str = 'eigen_test_files.txt', rgb_root: str = 'raw', gt_root: str = 'gt_depth',
                 **kwargs) -> None:
        self.skipped = 0
        kwargs.setdefault('data_prefix', dict(img_path=rgb_root, depth_map_path=gt_root))
        super().__init__(ann_file=ann_file, img_suffix='.png', seg_map_suffix='.png', **kwargs)

    def load_data_list(self) -> list[dict]:
        rgb_dir, gt_dir = self.data_prefix['img_path'], self.data_prefix['depth_map_path']
        data_list, no_gt, missing = [], 0, []
        for entry in parse_split_file(self.ann_file):
            if entry.gt is None:
                no_gt += 1
                continue
            gt_path = under(gt_dir, entry.gt)
            if not gt_path.is_file():
                missing.append(gt_path)
                continue
            data_list.append(dict(img_path=str(under(rgb_dir, entry.rgb)), depth_map_path=str(gt_path),
                                  seg_fields=[], category_id=0, focal=entry.focal))
        if missing and self.test_mode:
            raise DataError(f"{len(missing)} depth maps named in {self.ann_file} are missing (e.g. {missing[0]})",
                            f"gt paths are relative to {gt_dir}; extract KITTI's data_depth_annotated into it")
        self.skipped = no_gt + len(missing)
        print_log(f"KITTIEigenDataset {osp.basename(self.ann_file)}: {len(data_list)} samples, skipped "
                  f"{no_gt} lines without GT ('None') and {len(missing)} with a missing GT file", logger='current')
        return data_list


@TRANSFORMS.register_module()
class KBCrop(BaseTransform):
    """KITTI's bottom-centre "KB crop" of the image and every seg field (the depth GT) to ``crop_size`` (h, w).

    top = H − h, left = (W − w) // 2, as BTS / AdaBins / GLPDepth do. Sets ``img_shape`` and ``ori_shape`` to the
    cropped size (mmseg's postprocess resizes predictions to ``ori_shape``, which must match the cropped GT) and
    records ``kb_crop = (top, left, H, W)`` (used by the metric only with ``crop_frame='full'``).
    """

    def __init__(self, crop_size: Sequence[int] = (352, 1216)) -> None:
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))

    def transform(self, results: dict) -> dict:
        full_h, full_w = results['img'].shape[:2]
        h, w = self.crop_size
        if full_h < h or full_w < w:
            raise DataError(f"KBCrop: image {results.get('img_path', '?')} is {full_h}×{full_w}, smaller than "
                            f"the crop {h}×{w}", "set the task's kb_crop to at most the image size (real KITTI: "
                            "352×1216; the mini data's dataset_overrides.json gives its own)")
        top, left = full_h - h, (full_w - w) // 2
        results['img'] = results['img'][top:top + h, left:left + w]
        for key in results.get('seg_fields', []):
            if results[key].shape[:2] != (full_h, full_w):
                raise DataError(f"KBCrop: {key} of {results.get('img_path', '?')} is {results[key].shape[:2]}, "
                                f"the image {(full_h, full_w)}", "image and depth map must have the same size; "
                                "put KBCrop before any resize")
            results[key] = results[key][top:top + h, left:left + w]
        results['img_shape'] = (h, w)
        results['ori_shape'] = (h, w)
        results['kb_crop'] = (top, left, full_h, full_w)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(crop_size={self.crop_size})'


@TRANSFORMS.register_module()
class DepthColorAug(BaseTransform):
    """The photometric part of the paper's depth training pipeline (SwinTransformer/MIM-Depth-Estimation,
    dataset/base_dataset.py: albumentations ``RandomBrightnessContrast()``, ``RandomGamma()``,
    ``HueSaturationValue()``, default arguments), re-implemented for a uint8 BGR image with albumentations' uint8
    formulas, each step applied with probability ``prob``:

    - brightness / contrast: pixel × α + β · 255, α = 1 + U(−0.2, 0.2), β = U(−0.2, 0.2), clipped to [0, 255];
    - gamma: 255 · (pixel / 255)^γ, γ = U(0.8, 1.2), truncated to uint8;
    - HSV (OpenCV's 8-bit HSV, hue in 0..179): hue + U(−20, 20) modulo 180, saturation + U(−30, 30) and value +
      U(−20, 20), both clipped to [0, 255].

    The depth GT is untouched.
    """

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = float(prob)

    def transform(self, results: dict) -> dict:
        import cv2

        img = results['img']
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise DataError(f"DepthColorAug needs a uint8 3-channel image, got {img.dtype} {img.shape}",
                            "load images with LoadImageFromFile (uint8 BGR)")
        levels = np.arange(256, dtype=np.float32)
        if np.random.rand() < self.prob:
            alpha, beta = 1.0 + np.random.uniform(-0.2, 0.2), np.random.uniform(-0.2, 0.2)
            img = cv2.LUT(img, np.clip(levels * alpha + beta * 255, 0, 255).astype(np.uint8))
        if np.random.rand() < self.prob:
            gamma = np.random.uniform(80, 120) / 100
            img = cv2.LUT(img, ((levels / 255) ** gamma * 255).astype(np.uint8))
        if np.random.rand() < self.prob:
            hue, sat, val = (np.random.uniform(-lim, lim) for lim in (20, 30, 20))
            h, s, v = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
            h = cv2.LUT(h, np.mod(levels + hue, 180).astype(np.uint8))
            s = cv2.LUT(s, np.clip(levels + sat, 0, 255).astype(np.uint8))
            v = cv2.LUT(v, np.clip(levels + val, 0, 255).astype(np.uint8))
            img = cv2.cvtColor(cv2.merge((h, s, v)), cv2.COLOR_HSV2BGR)
        results['img'] = np.ascontiguousarray(img)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(prob={self.prob})'


def crop_box(crop: str | None, full_h: int, full_w: int) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of an evaluation crop on a ``full_h`` × ``full_w`` frame."""
    if crop is None:
        return 0, full_h, 0, full_w
    if crop == 'eigen_nyu':
        # scaled from the 480×640 definition and rounded half up, so it is exact at 480×640
        r0, r1, c0, c1, h0, w0 = NYU_EIGEN
        sy, sx = full_h / h0, full_w / w0
        return (math.floor(r0 * sy + 0.5), math.floor(r1 * sy + 0.5), math.floor(c0 * sx + 0.5),
                math.floor(c1 * sx + 0.5))
    if crop == 'garg':
        return (int(0.40810811 * full_h), int(0.99189189 * full_h), int(0.03594771 * full_w),
                int(0.96405229 * full_w))
    if crop == 'eigen_kitti':
        return (int(0.3324324 * full_h), int(0.91351351 * full_h), int(0.0359477 * full_w),
                int(0.96405229 * full_w))
    raise ValueError(f'unknown crop {crop!r}; use one of {CROPS}')


def crop_mask(crop: str | None, shape: tuple[int, int], kb_crop: Sequence[int] | None = None) -> np.ndarray:
    """Boolean mask over a GT of ``shape``: the crop placed on that GT's own frame; with ``kb_crop = (top, left,
    H, W)`` it is placed on the full H × W frame instead and shifted by the KB crop's offset."""
    h, w = shape
    top, left, full_h, full_w = kb_crop if kb_crop is not None else (0, 0, h, w)
    if top + h > full_h or left + w > full_w:
        raise ValueError(f'kb_crop {tuple(kb_crop)} does not contain a {h}×{w} depth map')
    full = np.zeros((full_h, full_w), dtype=bool)
    r0, r1, c0, c1 = crop_box(crop, full_h, full_w)
    full[r0:r1, c0:c1] = True
    return full[top:top + h, left:left + w]


@METRICS.register_module()
class MIMDepthMetric(DepthMetric):
    """Depth metrics as the paper's depth code computes them, averaged over images (not pooled over pixels).

    Valid pixels: min_depth_eval < gt < max_depth_eval inside ``crop`` (None, 'eigen_nyu', 'garg' or
    'eigen_kitti'). ``crop_frame``: 'eval' (default, the paper's depth code, GLPDepth, BinsFormer) computes the crop
    box on the GT as evaluated, i.e. on KITTI's 352×1216 KB crop (Garg: rows 143:349, cols 43:1172); 'full' computes
    it on the full frame and shifts it by the sample's ``kb_crop`` metainfo (BTS / AdaBins style, evaluating the
    full-frame prediction; rows 130:348, cols 31:1184 of the KB crop for a 375×1242 frame). Predictions are
    clipped to [min_depth_eval, max_depth_eval] first (BTS / GLPDepth), which also
    keeps log() finite. Images without a valid pixel are skipped and counted. Returns d1 d2 d3 abs_rel sq_rel rmse
    rmse_log log10 silog (silog with the 0.5 factor, errors in the GT's unit).
    """

    def __init__(self, min_depth_eval: float = 1e-3, max_depth_eval: float = float('inf'),
                 crop: str | None = None, crop_frame: str = 'eval', collect_device: str = 'cpu',
                 prefix: str | None = None) -> None:
        if crop not in CROPS:
            raise ValueError(f'MIMDepthMetric: unknown crop {crop!r}; use one of {CROPS}')
        if crop_frame not in CROP_FRAMES:
            raise ValueError(f'MIMDepthMetric: unknown crop_frame {crop_frame!r}; use one of {CROP_FRAMES}')
        if not 0 < min_depth_eval < max_depth_eval:
            raise ValueError(f'MIMDepthMetric: need 0 < min_depth_eval < max_depth_eval, got {min_depth_eval}, '
                             f'{max_depth_eval} (predictions are clipped to min_depth_eval before log())')
        # depth_metrics must stay unset: mmseg 1.2.2 raises TypeError on it
        super().__init__(min_depth_eval=min_depth_eval, max_depth_eval=max_depth_eval,
                         collect_device=collect_device, prefix=prefix)
        self.crop = crop
        self.crop_frame = crop_frame

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append(self.image_metrics(sample))

    def image_metrics(self, sample: dict) -> dict | None:
        """The metrics of one data sample (a SegDataSample as dict), or None if it has no valid pixel."""
        pred = _tensor(sample['pred_depth_map']).squeeze().double().cpu()
        gt = _tensor(sample['gt_depth_map']).squeeze().double().cpu()
        if pred.shape != gt.shape:
            raise ValueError(f"MIMDepthMetric: prediction {tuple(pred.shape)} and GT {tuple(gt.shape)} differ for "
                             f"{sample.get('img_path', '?')}; ori_shape must be the GT's size")
        mask = (gt > self.min_depth_eval) & (gt < self.max_depth_eval)
        kb_crop = sample.get('kb_crop') if self.crop_frame == 'full' else None
        mask &= torch.from_numpy(crop_mask(self.crop, tuple(gt.shape), kb_crop))
        if not mask.any():
            return None
        pred = pred.clamp(self.min_depth_eval, self.max_depth_eval)
        return self._calc_all_metrics(gt[mask], pred[mask])

    def compute_metrics(self, results: list) -> dict[str, float]:
        scored = [r for r in results if r is not None]
        skipped = len(results) - len(scored)
        if not scored:
            raise DataError(f"depth evaluation: none of {len(results)} images has a GT pixel in "
                            f"({self.min_depth_eval}, {self.max_depth_eval}) inside crop {self.crop!r}",
                            "check depth_rescale_factor (NYU 1e-3, KITTI 1/256), the depth range and the crop")
        sums = defaultdict(float)
        for r in scored:
            for key in self.METRICS:
                sums[key] += r[key]
        metrics = {key: sums[key] / len(scored) for key in self.METRICS}
        print_log(f"MIMDepthMetric: {len(scored)} images scored, {skipped} skipped without a valid GT pixel; "
                  + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()), logger='current')
        return metrics


def _tensor(field) -> torch.Tensor:
    """The data of a PixelData, whether still an object or already a dict (mmengine's Evaluator converts)."""
    data = field['data'] if isinstance(field, dict) else field.data
    return torch.as_tensor(data)
