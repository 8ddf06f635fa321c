"""Crop geometry shared by training and inference, and the template/search pair dataset (OSTrack's recipe).

Coordinates are continuous pixels: pixel (i, j) covers [j, j+1) x [i, i+1), a box ``x, y, w, h`` covers
[x, x+w) x [y, y+h). A crop is a square of side ``ceil(sqrt(w*h) * factor)`` image pixels centred on the box
(``rule='ostrack'``), or SwinTrack's (SiamFC's) context ``sqrt((w+p) * (h+p))``, ``p = (factor-1) * (w+h) / 2``,
not rounded (``rule='swintrack'``: data/tracking/methods/SiamFC/common/siamfc_curation.py; the two agree for square
boxes up to the rounding, SiamFC's is larger for elongated ones), resampled to ``out_size`` pixels with one
``cv2.warpAffine`` (bilinear), so the crop and the box transforms
(:meth:`Crop.to_crop`, :meth:`Crop.to_image`) are exact inverses with sub-pixel origins: OSTrack rounds the
crop's corner to whole pixels and maps boxes through the crop centre ``(S-1)/2``, which is half a pixel off.
Parts of the crop outside the image are filled with the image's mean colour (as SiamFC / SiamRPN do), not with
OSTrack's zeros plus an attention mask: after normalisation zeros are a strong, artificial edge, and the
trackers here take no padding mask.

:class:`PairDataset` follows OSTrack's GOT-10k training (``TrackingSampler`` with its default ``causal`` mode,
``STARKProcessing``, the transforms in ``build_dataloaders``); ``frame_sampling='interval'``, ``fps_scaled_gap``,
``color_jitter`` and ``crop_rule='swintrack'`` switch in SwinTrack's frame pairs, colour jitter and crops (see below):

- a sequence is drawn uniformly (OSTrack: ``random.randint`` over sequences, no length weighting), or, with
  ``sequence_groups`` / ``group_weights``, a dataset is drawn by its weight first (OSTrack's ``DATASETS_RATIO``,
  SwinTrack's ``sampling.weight``) and one of its sequences uniformly; sequences
  with fewer than ``min_frames`` frames or at most 4 visible frames are skipped (OSTrack's
  ``sample_seq_from_dataset``: ``len >= 20`` and ``visible.sum() > 2 * (1 + 1)``);
- causal pair: a visible template frame, then a visible search frame *after* it, at most ``max_gap`` frames
  later; templates are drawn among visible frames that have such a successor (OSTrack redraws the template and
  widens the gap by 5 until one is found; the two agree unless visible frames are > max_gap apart, where this
  takes the next visible frame);
- interval pair (``frame_sampling='interval'``, SwinTrack's ``Siamese`` sampler with ``sampling_method: interval``
  and ``enforce_fine_positive_sample``, data/tracking/sampler/_sampling_algos/stateless/random.py): a visible frame
  ``m`` drawn uniformly opens a window of ``R + 1`` frames around it, ``[m - (R+1)//2, m + (R+1) - (R+1)//2)`` clipped
  to the sequence (the whole sequence when it has at most ``R + 1`` frames), and two *different* visible frames of
  the window are drawn without replacement, the first the template, the second the search frame: the search frame
  lies on either side of the template, at most ``R`` frames away (``m`` itself need not be one of them). A window
  with fewer than two visible frames gives up the draw and a new sequence is drawn (SwinTrack moves on to the next
  sequence); after ``MAX_TRIES`` such draws two neighbouring visible frames are taken;
- ``R`` is ``max_gap``; with ``fps_scaled_gap`` it is ``max(round(fps / 30 * max_gap), 1)`` for a sequence with a
  known frame rate (SwinTrack's ``enable_adaptive_frame_range``: GOT-10k's 10 Hz annotations give 33 for 100;
  SwinTrack knows no frame rate for LaSOT and keeps 100, which is what LaSOT's 30 fps gives here); applies to both
  rules;
- ``crop_rule='ostrack'``: template: crop 2x the box, no jitter (OSTrack's TEMPLATE.CENTER_JITTER = SCALE_JITTER
  = 0); search: crop 4x a jittered box, size ``w, h * exp(N(0,1) * scale_jitter)`` (independently per side),
  centre moved by ``sqrt(jittered area) * center_jitter * U(-0.5, 0.5)`` per axis, exactly OSTrack's
  ``_get_jittered_box`` (the crop stays isotropic: the target keeps its aspect ratio); the target box is clipped to
  the search crop, and a pair whose clipped box is under a crop pixel wide or high is redrawn from new frames;
- ``crop_rule='swintrack'`` (SwinTrack's ``SiamTrackerProcessor`` -> ``prepare_SiamFC_curation_with_position_
  augmentation``; ``area_factor`` 2 / 4, ``scale_jitter_factor`` 0 / 0.25, ``translation_jitter_factor`` 0 / 3):
  template: SiamFC crop of factor 2, no jitter; search: the SiamFC scale ``s = S / sqrt((w+p)(h+p))`` (factor 4)
  divided *per axis* by ``exp(N(0,1) * scale_jitter)``, so the crop is anisotropic and the target's aspect ratio
  changes by ``exp((n_y - n_x) * scale_jitter)``; the box centre lands at ``S/2 - t``, ``t = U(-0.5, 0.5) *
  center_jitter * (w*sx + h*sy) / 2`` per axis in crop pixels (half the jittered box's w + h, not sqrt(area));
  only this jitter is redrawn until the box overlaps the crop's pixel centres ``[0.5, S - 0.5]`` (SwinTrack's
  ``while True``; here at most ``MAX_TRIES`` times, then new frames), and the target box is clipped to that range
  (SwinTrack's ``bbox_restrict_in_image_boundary_``), with no minimum size. SwinTrack resamples with
  ``F.interpolate`` (bilinear, ``align_corners=True``) on whole-pixel windows of image and crop and pads with the
  image's float mean; the exact affine warp here differs from it by under a pixel;
- grayscale with ``gray_prob`` for both crops together; brightness ``x * U(1 - b, 1 + b)`` clamped to [0, 1],
  drawn per crop (OSTrack's ``ToTensorAndJitter(0.2)``); horizontal flip with ``flip_prob`` of *both* crops
  together. OSTrack flips the whole frames jointly and then each crop again independently
  (``RandomHorizontalFlip_Norm`` under ``joint=False``), so its template and search are mirrored relative to
  each other half of the time; a pair mirrored against each other never occurs at test time, so it is not
  reproduced here;
- colour jitter ``color_jitter = c > 0`` (SwinTrack: data/tracking/methods/SiamFC/pipeline/processor.py and
  pipeline.py): torchvision's ``ColorJitter(c, c, c)`` (no hue) on each crop *independently* (its own factors and
  order), on the float crop in [0, 1] after the grayscale draw and before normalisation: brightness, contrast and
  saturation factors each ``U(max(0, 1 - c), 1 + c)`` applied in a random order, each step clamped to [0, 1]
  (:func:`color_jitter`); drawn after the brightness factors, so ``c = 0`` leaves every other draw unchanged;
- deterministic: sample ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` only (no global RNG), the
  same in every epoch and every worker; vary ``seed`` per epoch for fresh pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from benchmark.errors import DataError

from .sequences import Sequence, load_frame

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_VISIBLE = 5  # OSTrack: visible.sum() > 2 * (num_template + num_search)
MAX_TRIES = 50
REFERENCE_FPS = 30.0  # SwinTrack's adaptive frame range: frame_range * fps / 30
FRAME_SAMPLING = ("causal", "interval")
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (contrast mean, saturation)
CROP_RULES = ("ostrack", "swintrack")
SWINTRACK_MARGIN = 0.5  # SwinTrack clips the crop box to the crop's pixel centres, [0.5, S - 0.5]
TEST_MIN_SIZE = {"ostrack": 0.0, "swintrack": 10.0}  # search-crop box size floor at test time (SwinTrack's
# curation_parameter_provider min_object_size: [10, 10]; OSTrack has none)


@dataclass(frozen=True, eq=False)
class Crop:
    """A square crop: ``image`` (S, S, 3) uint8 whose top-left corner is ``origin`` in image coordinates,
    ``scale`` crop pixels per image pixel."""

    image: np.ndarray
    origin: tuple[float, float]
    scale: float
    scale_y: float | None = None  # vertical scale where it differs from ``scale`` (SwinTrack's per-axis jitter)

    @property
    def size(self) -> int:
        return self.image.shape[0]

    @property
    def scales(self) -> tuple[float, float]:
        """(horizontal, vertical) crop pixels per image pixel."""
        return self.scale, self.scale if self.scale_y is None else self.scale_y

    def to_crop(self, box_xywh) -> np.ndarray:
        """Image-coordinate box(es) ``(..., 4)`` x, y, w, h to crop pixels."""
        return _to_crop(box_xywh, self.origin, *self.scales)

    def to_image(self, box_xywh) -> np.ndarray:
        """Crop-pixel box(es) ``(..., 4)`` x, y, w, h back to image coordinates."""
        b = np.asarray(box_xywh, dtype=np.float64)
        ox, oy = self.origin
        sx, sy = self.scales
        return np.stack([b[..., 0] / sx + ox, b[..., 1] / sy + oy, b[..., 2] / sx, b[..., 3] / sy], axis=-1)


def _to_crop(box_xywh, origin, sx: float, sy: float) -> np.ndarray:
    b = np.asarray(box_xywh, dtype=np.float64)
    ox, oy = origin
    return np.stack([(b[..., 0] - ox) * sx, (b[..., 1] - oy) * sy, b[..., 2] * sx, b[..., 3] * sy], axis=-1)


def crop_side(box_xywh, factor: float) -> int:
    """Side in image pixels of the square crop around a box: ``ceil(sqrt(w * h) * factor)`` (OSTrack's)."""
    w, h = float(box_xywh[2]), float(box_xywh[3])
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise ValueError(f"cannot crop around a box of size {w} x {h}: it needs a positive, finite size")
    return max(1, math.ceil(math.sqrt(w * h) * factor))


def siamfc_side(box_xywh, factor: float) -> float:
    """Side in image pixels of SwinTrack's (SiamFC's) square context around a box, not rounded:
    ``sqrt((w + p) * (h + p))`` with ``p = (factor - 1) * (w + h) / 2`` (SwinTrack's ``area_factor``)."""
    w, h = float(box_xywh[2]), float(box_xywh[3])
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise ValueError(f"cannot crop around a box of size {w} x {h}: it needs a positive, finite size")
    p = (float(factor) - 1.0) * (w + h) / 2
    return math.sqrt((w + p) * (h + p))


def crop_around(image: np.ndarray, box_xywh, factor: float, out_size: int, center=None, rule: str = "ostrack",
                min_size: float = 0.0) -> Crop:
    """The square crop centred on the box (or on ``center`` = (cx, cy)) resized to ``out_size`` x ``out_size``
    (bilinear); outside the image it shows the image's mean colour. Its side is ``ceil(sqrt(w*h) * factor)``
    (``rule='ostrack'``) or :func:`siamfc_side` (``'swintrack'``), of the box with ``w``, ``h`` raised to at least
    ``min_size`` (SwinTrack's test-time ``min_object_size``; the centre stays)."""
    if rule not in CROP_RULES:
        raise ValueError(f"crop rule must be one of {CROP_RULES}, not {rule!r}")
    x, y, w, h = (float(v) for v in box_xywh[:4])
    sized = box_xywh if min_size <= 0 else (x, y, max(w, min_size), max(h, min_size))
    side = crop_side(sized, factor) if rule == "ostrack" else siamfc_side(sized, factor)
    cx, cy = (x + w / 2, y + h / 2) if center is None else (float(center[0]), float(center[1]))
    ox, oy = cx - side / 2, cy - side / 2
    s = out_size / side
    return crop_at(image, (ox, oy), (s, s), out_size)


def crop_at(image: np.ndarray, origin, scale, out_size: int) -> Crop:
    """The ``out_size`` x ``out_size`` crop whose top-left corner is ``origin`` (image coordinates), ``scale`` =
    (sx, sy) crop pixels per image pixel: one bilinear ``cv2.warpAffine``, the image's mean colour outside it."""
    ox, oy = origin
    sx, sy = scale
    # pixel centres: image index p maps to crop index (p + 0.5 - origin) * s - 0.5
    m = np.array([[sx, 0.0, (0.5 - ox) * sx - 0.5], [0.0, sy, (0.5 - oy) * sy - 0.5]])
    fill = cv2.mean(image)[:3]
    out = cv2.warpAffine(image, m, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=fill)
    return Crop(out, (ox, oy), sx, None if sy == sx else sy)


def normalize(crop: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD, brightness: float = 1.0) -> torch.Tensor:
    """An (S, S, 3) uint8 RGB crop as a (3, S, S) float32 tensor: ``(clamp(x / 255 * brightness) - mean) / std``;
    a floating-point crop is taken as already in [0, 1] (no division by 255)."""
    scale = brightness / 255.0 if crop.dtype == np.uint8 else brightness
    x = crop.astype(np.float32) * np.float32(scale)
    if brightness != 1.0:
        np.clip(x, 0.0, 1.0, out=x)
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def _luma(x: np.ndarray) -> np.ndarray:
    r, g, b = (x[..., c] for c in range(3))
    return np.float32(GRAY_WEIGHTS[0]) * r + np.float32(GRAY_WEIGHTS[1]) * g + np.float32(GRAY_WEIGHTS[2]) * b


def color_jitter(image: np.ndarray, brightness: float, contrast: float, saturation: float,
                 order=(0, 1, 2)) -> np.ndarray:
    """torchvision's ``ColorJitter`` at a fixed draw (its tensor ops) on an (H, W, 3) RGB image in [0, 1]: for
    ``op`` in ``order`` (0 brightness, 1 contrast, 2 saturation) blend with black, with the image's mean gray level,
    or with each pixel's gray level, ``clamp(f * x + (1 - f) * other, 0, 1)``; float32 out."""
    x = np.asarray(image, np.float32)
    for op in order:
        if op == 0:
            other, f = np.float32(0.0), brightness
        elif op == 1:
            other, f = _luma(x).mean(dtype=np.float32), contrast
        elif op == 2:
            other, f = _luma(x)[..., None], saturation
        else:
            raise ValueError(f"colour jitter op {op} is not 0 (brightness), 1 (contrast) or 2 (saturation)")
        x = np.clip(np.float32(f) * x + np.float32(1.0 - f) * other, 0.0, 1.0).astype(np.float32)
    return x


def draw_color_jitter(rng: np.random.Generator, strength: float) -> tuple[tuple[int, ...], np.ndarray]:
    """(order, (brightness, contrast, saturation) factors) of ``ColorJitter(strength, strength, strength)``: the
    three ops in a random order (torchvision's ``randperm`` with the unused hue dropped), each factor
    ``U(max(0, 1 - strength), 1 + strength)``."""
    order = tuple(int(v) for v in rng.permutation(3))
    factors = rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength, size=3)
    return order, factors


def hann_window(size: int) -> np.ndarray:
    """(size, size) float32 outer product of OSTrack's centred 1-D Hann window,
    ``0.5 * (1 - cos(2 pi k / (size + 1)))`` for k = 1..size: symmetric, positive, without the zero endpoints."""
    k = np.arange(1, size + 1, dtype=np.float64)
    w = 0.5 * (1 - np.cos(2 * np.pi * k / (size + 1)))
    return np.outer(w, w).astype(np.float32)


def jitter_box(box_xywh: np.ndarray, rng: np.random.Generator, center_jitter: float,
               scale_jitter: float) -> np.ndarray:
    """OSTrack's ``_get_jittered_box``: each side scaled by exp(N(0,1) * scale_jitter), the centre moved by
    sqrt(jittered area) * center_jitter * U(-0.5, 0.5) per axis."""
    box = np.asarray(box_xywh, np.float64)
    size = box[2:4] * np.exp(rng.standard_normal(2) * scale_jitter)
    max_offset = math.sqrt(size[0] * size[1]) * center_jitter
    center = box[:2] + box[2:4] / 2 + max_offset * (rng.random(2) - 0.5)
    return np.concatenate([center - size / 2, size])


def swintrack_jitter(box_xywh, factor: float, out_size: int, rng: np.random.Generator, scale_jitter: float,
                     translation_jitter: float, tries: int = MAX_TRIES):
    """SwinTrack's jittered search-crop geometry ``(origin, (sx, sy))`` for :func:`crop_at`, or None when ``tries``
    draws all miss: the unjittered scale ``s = out_size / siamfc_side(box, factor)`` divided per axis by
    ``exp(N(0,1) * scale_jitter)`` (so the target's aspect ratio changes), the box centre placed at
    ``out_size / 2 - t`` with ``t = U(-0.5, 0.5) * translation_jitter * (w * sx + h * sy) / 2`` per axis (crop
    pixels); the draw is repeated until the box overlaps the crop's pixel centres, ``[0.5, out_size - 0.5]``."""
    box = np.asarray(box_xywh, np.float64)[:4]
    scale = out_size / siamfc_side(box, factor)
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2, y + h / 2
    for _ in range(tries):
        sx, sy = (float(v) for v in scale / np.exp(rng.standard_normal(2) * scale_jitter))
        reach = (w * sx + h * sy) * 0.5 * translation_jitter
        tx, ty = (float(v) for v in (rng.random(2) - 0.5) * reach)
        origin = (cx - (out_size / 2 - tx) / sx, cy - (out_size / 2 - ty) / sy)
        if _clip_to_crop(_to_crop(box, origin, sx, sy), out_size, SWINTRACK_MARGIN) is not None:
            return origin, (sx, sy)
    return None


def box_in_crop(crop: Crop, box_xywh: np.ndarray, margin: float = 0.0) -> np.ndarray | None:
    """The box in the crop clipped to it (to ``[margin, size - margin]`` crop pixels), as (cx, cy, w, h)
    normalised by the crop size; None if nothing is left."""
    return _clip_to_crop(crop.to_crop(box_xywh), crop.size, margin)


def _clip_to_crop(box_px: np.ndarray, size: int, margin: float = 0.0) -> np.ndarray | None:
    x, y, w, h = box_px / size
    lo, hi = margin / size, 1.0 - margin / size
    x0, y0, x1, y1 = max(x, lo), max(y, lo), min(x + w, hi), min(y + h, hi)
    if x1 <= x0 or y1 <= y0:
        return None
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])


class PairDataset(torch.utils.data.Dataset):
    """Template / search pairs drawn from tracking sequences (see the module docstring for the recipe).

    Item ``i`` is ``{'template': (3, T, T) float32, 'search': (3, S, S) float32, 'box': (4,) float32}``, both
    crops normalised with ``mean`` / ``std``, ``box`` the target in the search crop as (cx, cy, w, h) in [0, 1].
    ``sequences`` keeps the usable sequences; ``skipped`` counts the others (too short, too few visible frames,
    or ground truth for the first frame only, like GOT-10k test).
    """

    def __init__(self, sequences: list[Sequence], length: int, *, template_size: int, search_size: int,
                 template_factor: float = 2.0, search_factor: float = 4.0, center_jitter: float = 3.0,
                 scale_jitter: float = 0.25, max_gap: int = 200, min_frames: int = 20, gray_prob: float = 0.05,
                 flip_prob: float = 0.5, brightness: float = 0.2, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 seed: int = 0, sequence_groups: list[int] | None = None, group_weights: list[float] | None = None,
                 frame_sampling: str = "causal", fps_scaled_gap: bool = False, color_jitter: float = 0.0,
                 crop_rule: str = "ostrack"):
        if frame_sampling not in FRAME_SAMPLING:
            raise ValueError(f"frame_sampling must be one of {FRAME_SAMPLING}, not {frame_sampling!r}")
        if crop_rule not in CROP_RULES:
            raise ValueError(f"crop_rule must be one of {CROP_RULES}, not {crop_rule!r}")
        self.crop_rule = crop_rule
        self.length = int(length)
        self.template_size, self.search_size = int(template_size), int(search_size)
        self.template_factor, self.search_factor = float(template_factor), float(search_factor)
        self.center_jitter, self.scale_jitter = float(center_jitter), float(scale_jitter)
        self.max_gap = int(max_gap)
        self.gray_prob, self.flip_prob, self.brightness = float(gray_prob), float(flip_prob), float(brightness)
        self.frame_sampling, self.fps_scaled_gap = frame_sampling, bool(fps_scaled_gap)
        self.color_jitter = float(color_jitter)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.seed = int(seed)
        self.sequences: list[Sequence] = []
        self._visible: list[np.ndarray] = []  # visible frame indices per kept sequence
        if (sequence_groups is None) != (group_weights is None) or (
                sequence_groups is not None and len(sequence_groups) != len(sequences)):
            raise ValueError("sequence_groups (one group id per sequence) and group_weights go together")
        kept_groups = []
        for n, seq in enumerate(sequences):
            vis = np.flatnonzero(seq.visible) if len(seq.boxes) == len(seq) else np.empty(0, np.int64)
            if len(seq) >= min_frames and len(vis) >= MIN_VISIBLE:
                self.sequences.append(seq)
                self._visible.append(vis)
                kept_groups.append(None if sequence_groups is None else int(sequence_groups[n]))
        self.skipped = len(sequences) - len(self.sequences)
        self._gap = [self.frame_range(seq) for seq in self.sequences]  # the largest template-search gap per sequence
        # dataset-weighted sampling (OSTrack's DATASETS_RATIO, SwinTrack's sampling weights): a group (dataset) by
        # its weight, then one of its kept sequences uniformly; groups left without sequences drop out
        self._groups: list[np.ndarray] = []
        self._group_p: np.ndarray | None = None
        if group_weights is not None:
            members = {g: np.flatnonzero(np.array(kept_groups) == g) for g in range(len(group_weights))}
            used = [g for g in range(len(group_weights)) if len(members[g]) and float(group_weights[g]) > 0]
            if not used:
                raise DataError(f"no training sequence is left in a source with a positive weight "
                                f"({list(group_weights)})", "check dataset_weights against the training sources")
            if used:
                self._groups = [members[g] for g in used]
                w = np.array([float(group_weights[g]) for g in used])
                self._group_p = w / w.sum()
        if not self.sequences:
            raise DataError(f"none of the {len(sequences)} training sequences has >= {min_frames} frames with "
                            f"ground truth for every frame and >= {MIN_VISIBLE} visible frames",
                            "train on a split with full annotations (GOT-10k train/val, LaSOT train)")

    def __len__(self) -> int:
        return self.length

    def frame_range(self, seq: Sequence) -> int:
        """The largest frame gap between template and search in ``seq``: ``max_gap``, or with ``fps_scaled_gap``
        SwinTrack's ``max(round(fps / 30 * max_gap), 1)`` when the sequence's frame rate is known."""
        fps = getattr(seq, "fps", None)
        if not self.fps_scaled_gap or fps is None:
            return self.max_gap
        return max(int(round(float(fps) / REFERENCE_FPS * self.max_gap)), 1)

    def _draw_sequence(self, rng: np.random.Generator) -> int:
        if self._group_p is not None:
            members = self._groups[int(rng.choice(len(self._groups), p=self._group_p))]
            return int(members[rng.integers(len(members))])
        return int(rng.integers(len(self.sequences)))

    def sample_frames(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """(sequence index, template frame, search frame) by ``frame_sampling`` (see the module docstring): causal,
        search after template within the gap; or interval, two different visible frames at most the gap apart in
        either order. The sequence is uniform over all kept sequences, or, with group weights, uniform within a
        weighted group."""
        if self.frame_sampling == "interval":
            return self._interval_pair(rng)
        k = self._draw_sequence(rng)
        vis, max_gap = self._visible[k], self._gap[k]
        gaps = np.diff(vis)
        starts = np.flatnonzero(gaps <= max_gap)
        if len(starts) == 0:  # visible frames further apart than max_gap: pair each with the next visible one
            j = int(rng.integers(len(vis) - 1))
            return k, int(vis[j]), int(vis[j + 1])
        j = int(starts[rng.integers(len(starts))])
        t = int(vis[j])
        after = vis[j + 1:]
        after = after[after <= t + max_gap]
        return k, t, int(after[rng.integers(len(after))])

    def _interval_pair(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """SwinTrack's positive interval pair: two different visible frames of a window of gap + 1 frames around a
        visible frame, in the order drawn."""
        for _ in range(MAX_TRIES):
            k = self._draw_sequence(rng)
            vis, size, n = self._visible[k], self._gap[k] + 1, len(self.sequences[k])
            if size < n:
                mid = int(vis[rng.integers(len(vis))])
                lo, hi = max(mid - size // 2, 0), min(mid + size - size // 2, n)
                vis = vis[np.searchsorted(vis, lo):np.searchsorted(vis, hi)]
            if len(vis) >= 2:
                t, s = rng.choice(vis, 2, replace=False)
                return k, int(t), int(s)
        j = int(rng.integers(len(self._visible[k]) - 1))  # visible frames further apart than the gap everywhere
        pair = self._visible[k][j:j + 2][rng.permutation(2)]
        return k, int(pair[0]), int(pair[1])

    def __getitem__(self, i) -> dict:
        rng = np.random.default_rng([self.seed, int(i)])
        for _ in range(MAX_TRIES):
            k, t, s = self.sample_frames(rng)
            seq = self.sequences[k]
            if self.crop_rule == "swintrack":
                pair = self._swintrack_crops(seq, t, s, rng)
                if pair is None or pair[2] is None:
                    continue
                template, search, box = pair
                break
            search_box = jitter_box(seq.boxes[s], rng, self.center_jitter, self.scale_jitter)
            template = crop_around(load_frame(seq.frames[t]), seq.boxes[t], self.template_factor, self.template_size)
            search = crop_around(load_frame(seq.frames[s]), search_box, self.search_factor, self.search_size)
            box = box_in_crop(search, seq.boxes[s])
            if box is not None and box[2] * self.search_size >= 1 and box[3] * self.search_size >= 1:
                break
        else:
            raise DataError(f"no usable template/search pair found in {MAX_TRIES} draws (sample {i})",
                            "check the sequences' boxes: visible frames need boxes inside the image")
        t_img, s_img = template.image, search.image
        if rng.random() < self.gray_prob:
            t_img, s_img = _gray(t_img), _gray(s_img)
        if rng.random() < self.flip_prob:
            t_img, s_img = t_img[:, ::-1], s_img[:, ::-1]
            box[0] = 1.0 - box[0]
        lo, hi = max(0.0, 1 - self.brightness), 1 + self.brightness
        b_t, b_s = rng.uniform(lo, hi), rng.uniform(lo, hi)
        return {"template": self._photometric(t_img, b_t, rng), "search": self._photometric(s_img, b_s, rng),
                "box": torch.from_numpy(box.astype(np.float32))}

    def _swintrack_crops(self, seq: Sequence, t: int, s: int, rng: np.random.Generator):
        """(template, search, box) by SwinTrack's curation: the template unjittered, the search crop by
        :func:`swintrack_jitter` (``center_jitter`` is its translation factor), the box clipped to the search crop's
        pixel centres; None when the jitter never lets the box overlap the crop (a degenerate box)."""
        geometry = swintrack_jitter(seq.boxes[s], self.search_factor, self.search_size, rng, self.scale_jitter,
                                    self.center_jitter)
        if geometry is None:
            return None
        template = crop_around(load_frame(seq.frames[t]), seq.boxes[t], self.template_factor, self.template_size,
                               rule="swintrack")
        search = crop_at(load_frame(seq.frames[s]), *geometry, self.search_size)
        return template, search, box_in_crop(search, seq.boxes[s], SWINTRACK_MARGIN)

    def _photometric(self, img: np.ndarray, brightness: float, rng: np.random.Generator) -> torch.Tensor:
        """The crop with its brightness factor and, if ``color_jitter`` > 0, its own colour jitter draw, normalised."""
        if self.color_jitter <= 0:
            return normalize(img, self.mean, self.std, brightness)
        x = img.astype(np.float32) * np.float32(brightness / 255.0)
        if brightness != 1.0:
            np.clip(x, 0.0, 1.0, out=x)
        order, (b, c, s) = draw_color_jitter(rng, self.color_jitter)
        return normalize(color_jitter(x, b, c, s, order), self.mean, self.std)


def _gray(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    return np.repeat(g[:, :, None], 3, axis=2)
