"""Crop geometry shared by training and inference, and the template/search pair dataset (OSTrack's recipe).

Coordinates are continuous pixels: pixel (i, j) covers [j, j+1) x [i, i+1), a box ``x, y, w, h`` covers
[x, x+w) x [y, y+h). A crop is a square of side ``ceil(sqrt(w*h) * factor)`` image pixels centred on the box,
resampled to ``out_size`` pixels with one ``cv2.warpAffine`` (bilinear), so the crop and the box transforms
(:meth:`Crop.to_crop`, :meth:`Crop.to_image`) are exact inverses with sub-pixel origins: OSTrack rounds the
crop's corner to whole pixels and maps boxes through the crop centre ``(S-1)/2``, which is half a pixel off.
Parts of the crop outside the image are filled with the image's mean colour (as SiamFC / SiamRPN do), not with
OSTrack's zeros plus an attention mask: after normalisation zeros are a strong, artificial edge, and the
trackers here take no padding mask.

:class:`PairDataset` follows OSTrack's GOT-10k training (``TrackingSampler`` with its default ``causal`` mode,
``STARKProcessing``, the transforms in ``build_dataloaders``):

- a sequence is drawn uniformly (OSTrack: ``random.randint`` over sequences, no length weighting), or, with
  ``sequence_groups`` / ``group_weights``, a dataset is drawn by its weight first (OSTrack's ``DATASETS_RATIO``,
  SwinTrack's ``sampling.weight``) and one of its sequences uniformly; sequences
  with fewer than ``min_frames`` frames or at most 4 visible frames are skipped (OSTrack's
  ``sample_seq_from_dataset``: ``len >= 20`` and ``visible.sum() > 2 * (1 + 1)``);
- causal pair: a visible template frame, then a visible search frame *after* it, at most ``max_gap`` frames
  later; templates are drawn among visible frames that have such a successor (OSTrack redraws the template and
  widens the gap by 5 until one is found; the two agree unless visible frames are > max_gap apart, where this
  takes the next visible frame);
- template: crop 2x the box, no jitter (OSTrack's TEMPLATE.CENTER_JITTER = SCALE_JITTER = 0); search: crop 4x a
  jittered box, size ``w, h * exp(N(0,1) * scale_jitter)`` (independently per side), centre moved by
  ``sqrt(jittered area) * center_jitter * U(-0.5, 0.5)`` per axis, exactly OSTrack's ``_get_jittered_box``;
  the target box is clipped to the search crop;
- grayscale with ``gray_prob`` for both crops together; brightness ``x * U(1 - b, 1 + b)`` clamped to [0, 1],
  drawn per crop (OSTrack's ``ToTensorAndJitter(0.2)``); horizontal flip with ``flip_prob`` of *both* crops
  together. OSTrack flips the whole frames jointly and then each crop again independently
  (``RandomHorizontalFlip_Norm`` under ``joint=False``), so its template and search are mirrored relative to
  each other half of the time; a pair mirrored against each other never occurs at test time, so it is not
  reproduced here;
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


@dataclass(frozen=True, eq=False)
class Crop:
    """A square crop: ``image`` (S, S, 3) uint8 whose top-left corner is ``origin`` in image coordinates,
    ``scale`` crop pixels per image pixel."""

    image: np.ndarray
    origin: tuple[float, float]
    scale: float

    @property
    def size(self) -> int:
        return self.image.shape[0]

    def to_crop(self, box_xywh) -> np.ndarray:
        """Image-coordinate box(es) ``(..., 4)`` x, y, w, h to crop pixels."""
        b = np.asarray(box_xywh, dtype=np.float64)
        ox, oy = self.origin
        return np.stack([(b[..., 0] - ox) * self.scale, (b[..., 1] - oy) * self.scale,
                         b[..., 2] * self.scale, b[..., 3] * self.scale], axis=-1)

    def to_image(self, box_xywh) -> np.ndarray:
        """Crop-pixel box(es) ``(..., 4)`` x, y, w, h back to image coordinates."""
        b = np.asarray(box_xywh, dtype=np.float64)
        ox, oy = self.origin
        return np.stack([b[..., 0] / self.scale + ox, b[..., 1] / self.scale + oy,
                         b[..., 2] / self.scale, b[..., 3] / self.scale], axis=-1)


def crop_side(box_xywh, factor: float) -> int:
    """Side in image pixels of the square crop around a box: ``ceil(sqrt(w * h) * factor)`` (OSTrack's)."""
    w, h = float(box_xywh[2]), float(box_xywh[3])
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise ValueError(f"cannot crop around a box of size {w} x {h}: it needs a positive, finite size")
    return max(1, math.ceil(math.sqrt(w * h) * factor))


def crop_around(image: np.ndarray, box_xywh, factor: float, out_size: int, center=None) -> Crop:
    """The square crop of side ``ceil(sqrt(w*h) * factor)`` centred on the box (or on ``center`` = (cx, cy)),
    resized to ``out_size`` x ``out_size`` (bilinear); outside the image it shows the image's mean colour."""
    x, y, w, h = (float(v) for v in box_xywh[:4])
    side = crop_side(box_xywh, factor)
    cx, cy = (x + w / 2, y + h / 2) if center is None else (float(center[0]), float(center[1]))
    ox, oy = cx - side / 2, cy - side / 2
    s = out_size / side
    # pixel centres: image index p maps to crop index (p + 0.5 - origin) * s - 0.5
    m = np.array([[s, 0.0, (0.5 - ox) * s - 0.5], [0.0, s, (0.5 - oy) * s - 0.5]])
    fill = cv2.mean(image)[:3]
    out = cv2.warpAffine(image, m, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=fill)
    return Crop(out, (ox, oy), s)


def normalize(crop: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD, brightness: float = 1.0) -> torch.Tensor:
    """An (S, S, 3) uint8 RGB crop as a (3, S, S) float32 tensor: ``(clamp(x / 255 * brightness) - mean) / std``."""
    x = crop.astype(np.float32) * np.float32(brightness / 255.0)
    if brightness != 1.0:
        np.clip(x, 0.0, 1.0, out=x)
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


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


def box_in_crop(crop: Crop, box_xywh: np.ndarray) -> np.ndarray | None:
    """The box in the crop clipped to it, as (cx, cy, w, h) normalised by the crop size; None if nothing is left."""
    x, y, w, h = crop.to_crop(box_xywh) / crop.size
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, 1.0), min(y + h, 1.0)
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
                 seed: int = 0, sequence_groups: list[int] | None = None, group_weights: list[float] | None = None):
        self.length = int(length)
        self.template_size, self.search_size = int(template_size), int(search_size)
        self.template_factor, self.search_factor = float(template_factor), float(search_factor)
        self.center_jitter, self.scale_jitter = float(center_jitter), float(scale_jitter)
        self.max_gap = int(max_gap)
        self.gray_prob, self.flip_prob, self.brightness = float(gray_prob), float(flip_prob), float(brightness)
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

    def sample_frames(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """(sequence index, template frame, search frame): causal, search after template within max_gap. The
        sequence is uniform over all kept sequences, or, with group weights, uniform within a weighted group."""
        if self._group_p is not None:
            members = self._groups[int(rng.choice(len(self._groups), p=self._group_p))]
            k = int(members[rng.integers(len(members))])
        else:
            k = int(rng.integers(len(self.sequences)))
        vis = self._visible[k]
        gaps = np.diff(vis)
        starts = np.flatnonzero(gaps <= self.max_gap)
        if len(starts) == 0:  # visible frames further apart than max_gap: pair each with the next visible one
            j = int(rng.integers(len(vis) - 1))
            return k, int(vis[j]), int(vis[j + 1])
        j = int(starts[rng.integers(len(starts))])
        t = int(vis[j])
        after = vis[j + 1:]
        after = after[after <= t + self.max_gap]
        return k, t, int(after[rng.integers(len(after))])

    def __getitem__(self, i) -> dict:
        rng = np.random.default_rng([self.seed, int(i)])
        for _ in range(MAX_TRIES):
            k, t, s = self.sample_frames(rng)
            seq = self.sequences[k]
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
        return {"template": normalize(t_img, self.mean, self.std, b_t),
                "search": normalize(s_img, self.mean, self.std, b_s),
                "box": torch.from_numpy(box.astype(np.float32))}


def _gray(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    return np.repeat(g[:, :, None], 3, axis=2)
