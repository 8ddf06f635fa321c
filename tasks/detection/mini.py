"""A small, learnable COCO-2017-instances dataset in the exact on-disk format that mmdet's CocoDataset reads.

Classes (``CLASSES``): four real COCO categories whose real-world look is close to a flat 2D shape, so they can be
drawn convincingly and told apart by a tiny Mask R-CNN within a few hundred CPU iterations:

    stop sign (13)    red octagon with a white inner ring and a white bar (the lettering): 8 corners, red/white
    frisbee (34)      flat ellipse (aspect 0.3–0.5), one flat saturated colour with a lighter rim: smooth, elongated
    sports ball (37)  disc, shaded like a sphere, patched (football) or seamed (basketball): smooth, round, textured
    kite (38)         deltoid (a rhombus pulled long), two-tone panels with dark struts: 4 sharp corners

Outlines differ (octagon / ellipse / circle / deltoid) and so do surfaces (red-white / flat / shaded-patterned /
two-tone), so either cue alone separates them; ids, names and supercategories are COCO's own, because mmdet maps
categories to its 80 COCO classes by name. The ``categories`` list holds these four only, in id order.

Each image (96–128 px per side, above mmdet's 32 px ``min_size`` filter) is a low-contrast crop of one of
scikit-image's bundled public-domain / CC0 photos with 1–4 objects, 16–56 px across, drawn one after another.
Each object after the first is placed to overlap an earlier one with probability 1/2 (with seed 0 about a quarter
of the objects end up partly hidden, in half of the images): the hidden object's annotation is then its *visible*
part. Placements are redrawn until every object keeps at least half of its pixels, at least ``MIN_AREA``
of them, and no occluded mask gets a hole (COCO polygons cannot describe holes); objects cut by the image border
keep at least 60% of their pixels. The first object of image ``i`` has class ``i mod 4``, so every class is in both
splits.

Labels are exact: ``area`` is the visible mask's pixel count, ``bbox`` its tight pixel box [x, y, w, h], and
``segmentation`` its outer contours as polygons in COCO's pixel-edge coordinates (pixel x spans [x, x+1]), traced on
an 8× finer grid and simplified by 0.5 px, so pycocotools' ``annToMask`` gives back the mask (± a few pixels).

Files written (relative to ``out_dir``)::

    annotations/instances_{train,val}2017.json, {train,val}2017/<12-digit id>.jpg

Everything is a pure function of ``seed``: each image has its own ``numpy`` generator seeded by (seed, split,
index), JSON is written with a fixed key order and JPEGs by OpenCV's deterministic encoder (quality 90). Images are
written first and the annotation files last, each atomically, so an interrupted run leaves no annotation file.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from benchmark.files import write_bytes_atomic, write_text_atomic


class Category(NamedTuple):
    id: int
    name: str
    supercategory: str


CLASSES = (Category(13, "stop sign", "outdoor"), Category(34, "frisbee", "sports"),
           Category(37, "sports ball", "sports"), Category(38, "kite", "sports"))

ANN_FILES = {"train": "annotations/instances_train2017.json", "val": "annotations/instances_val2017.json"}
IMG_DIRS = {"train": "train2017", "val": "val2017"}
SPLIT_CODES = {"train": 1, "val": 2}

# Bundled with scikit-image (no download), public domain / CC0 / "no known copyright restrictions".
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "immunohistochemistry",
               "hubble_deep_field", "grass", "gravel", "brick")

IMAGE_SIDE = (96, 128)  # px, inclusive, drawn per side
OBJECT_SIZE = (16.0, 56.0)  # longest extent, px
MAX_OBJECTS = 4
OVERLAP_P = 0.5  # chance that an object after the first is placed to overlap an earlier one
ATTEMPTS = 15  # placements tried per object before it is left out
MIN_IN_IMAGE = 0.6  # share of an object's pixels that must lie inside the image
MIN_VISIBLE = 0.5  # share of its in-image pixels an object keeps under later objects
MIN_AREA = 20  # px; annotations with a smaller visible area are dropped (placement already avoids them)
JPEG_QUALITY = 90
UPSAMPLE, SIMPLIFY = 8, 4.0  # contour tracing grid (cells per px) and approxPolyDP tolerance on it (= 0.5 px)
SHIFT = 4  # OpenCV fixed-point bits, for sub-pixel vertices
PAD = 64  # objects are drawn on a canvas this much larger on every side, so border cuts can be measured

# BGR
FRISBEE_COLOURS = ((0, 215, 255), (60, 210, 60), (220, 110, 20), (190, 60, 230), (255, 255, 255))
KITE_COLOURS = (((0, 230, 255), (200, 60, 20)), ((40, 40, 220), (0, 220, 255)), ((210, 40, 170), (60, 220, 90)),
                ((255, 160, 0), (20, 20, 20)))
WHITE, DARK = (235, 235, 235), (30, 30, 30)


@dataclass
class Placed:
    """One drawn object: its class, where it went, and the part of it still visible."""

    category: Category
    cx: float
    cy: float
    size: float
    visible: np.ndarray  # bool, image-sized
    shown: int  # pixels inside the image when it was drawn


# --------------------------------------------------------------------------------------------------- backgrounds
@functools.lru_cache(maxsize=1)
def _backgrounds() -> tuple[np.ndarray, ...]:
    import skimage.data  # imported here: only the generator needs it

    out = []
    for name in BACKGROUNDS:
        img = np.asarray(getattr(skimage.data, name)())
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR)
        out.append(np.ascontiguousarray(img, dtype=np.uint8))
    return tuple(out)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    src = _backgrounds()[rng.integers(len(BACKGROUNDS))]
    sh, sw = src.shape[:2]
    scale = rng.uniform(0.25, 0.8) * min(sh / height, sw / width)  # crop = scale × output size
    ch, cw = int(height * scale), int(width * scale)
    y0, x0 = rng.integers(0, sh - ch + 1), rng.integers(0, sw - cw + 1)
    crop = cv2.resize(src[y0:y0 + ch, x0:x0 + cw], (width, height), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = np.ascontiguousarray(crop[:, ::-1])
    # Lower contrast: the objects, not the photo's clutter, should carry the strongest edges.
    return cv2.convertScaleAbs(crop, alpha=0.7, beta=38)


# ------------------------------------------------------------------------------------------------------ objects
def _fix(points) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * (1 << SHIFT)).astype(np.int32)


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x * (1 << SHIFT)), round(y * (1 << SHIFT))


def _len(v: float) -> int:
    return max(1, round(v * (1 << SHIFT)))


def _rotated(local, angle: float, cx: float, cy: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.asarray(local, dtype=np.float64) @ np.array([[c, s], [-s, c]]) + (cx, cy)


def _jitter(rng: np.random.Generator, colour, amount: int = 20) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _stop_sign(rng, mask, layer, cx, cy, size) -> None:
    r = size / 2  # circumradius
    rot = rng.uniform(-0.2, 0.2)
    ang = rot + math.pi / 8 + np.arange(8) * (math.pi / 4)
    unit = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    outer = _fix(unit * r + (cx, cy))
    cv2.fillPoly(mask, [outer], 1, cv2.LINE_8, SHIFT)
    red = (int(rng.integers(20, 60)), int(rng.integers(20, 60)), int(rng.integers(180, 236)))
    cv2.fillPoly(layer, [outer], red, cv2.LINE_8, SHIFT)
    cv2.polylines(layer, [_fix(unit * 0.8 * r + (cx, cy))], True, WHITE, max(1, round(size / 16)), cv2.LINE_8, SHIFT)
    bar = _rotated([(-0.5 * r, -0.13 * r), (0.5 * r, -0.13 * r), (0.5 * r, 0.13 * r), (-0.5 * r, 0.13 * r)],
                   rot, cx, cy)
    cv2.fillPoly(layer, [_fix(bar)], WHITE, cv2.LINE_8, SHIFT)


def _frisbee(rng, mask, layer, cx, cy, size) -> None:
    axes = (_len(size / 2), _len(size / 2 * rng.uniform(0.3, 0.5)))
    angle = rng.uniform(0.0, 180.0)
    centre = _pt(cx, cy)
    cv2.ellipse(mask, centre, axes, angle, 0, 360, 1, -1, cv2.LINE_8, SHIFT)
    colour = _jitter(rng, FRISBEE_COLOURS[rng.integers(len(FRISBEE_COLOURS))])
    cv2.ellipse(layer, centre, axes, angle, 0, 360, colour, -1, cv2.LINE_8, SHIFT)
    rim = tuple(int(c * 0.6) if sum(colour) > 600 else (c + 255) // 2 for c in colour)  # lighter, or darker on white
    cv2.ellipse(layer, centre, (round(axes[0] * 0.75), round(axes[1] * 0.65)), angle, 0, 360, rim, 1, cv2.LINE_8,
                SHIFT)


def _sports_ball(rng, mask, layer, cx, cy, size) -> None:
    r = size / 2
    centre = _pt(cx, cy)
    cv2.circle(mask, centre, _len(r), 1, -1, cv2.LINE_8, SHIFT)
    if rng.random() < 0.5:  # football: white with dark patches
        cv2.circle(layer, centre, _len(r), _jitter(rng, WHITE, 10), -1, cv2.LINE_8, SHIFT)
        for _ in range(int(rng.integers(4, 7))):
            rho, phi = 0.7 * r * math.sqrt(rng.random()), rng.uniform(0.0, 2 * math.pi)
            cv2.circle(layer, _pt(cx + rho * math.cos(phi), cy + rho * math.sin(phi)), _len(0.22 * r), DARK, -1,
                       cv2.LINE_8, SHIFT)
    else:  # basketball: orange with dark seams
        cv2.circle(layer, centre, _len(r), _jitter(rng, (30, 110, 225)), -1, cv2.LINE_8, SHIFT)
        a = rng.uniform(0.0, math.pi)
        d, n = np.array([math.cos(a), math.sin(a)]) * r, np.array([-math.sin(a), math.cos(a)]) * r
        c = np.array([cx, cy])
        for u in (d, n):
            cv2.line(layer, _pt(*(c - u)), _pt(*(c + u)), (20, 40, 70), 1, cv2.LINE_8, SHIFT)
        for sgn in (-1.0, 1.0):
            cv2.ellipse(layer, _pt(*(c + sgn * 0.95 * n)), (_len(0.9 * r), _len(0.5 * r)), math.degrees(a), 0, 360,
                        (20, 40, 70), 1, cv2.LINE_8, SHIFT)
    # Sphere shading, lit from the top left: sets the ball apart from the flat frisbee.
    ys, xs = np.nonzero(mask)
    dist2 = ((xs + 0.5 - (cx - 0.3 * r)) ** 2 + (ys + 0.5 - (cy - 0.3 * r)) ** 2) / (r * r)
    gain = np.clip(1.1 - 0.35 * dist2, 0.45, 1.1)[:, None]
    layer[ys, xs] = np.clip(layer[ys, xs] * gain, 0, 255).astype(np.uint8)


def _kite(rng, mask, layer, cx, cy, size) -> None:
    length, half_w = size, size * rng.uniform(0.55, 0.75) / 2
    angle = rng.uniform(-0.6, 0.6)
    # top, right, bottom, left, then where the spars cross (a third of the way down)
    local = [(0, -0.5 * length), (half_w, -0.15 * length), (0, 0.5 * length), (-half_w, -0.15 * length),
             (0, -0.15 * length)]
    pts = _rotated(local, angle, cx, cy)
    outline = _fix(pts[:4])
    cv2.fillPoly(mask, [outline], 1, cv2.LINE_8, SHIFT)
    a, b = (_jitter(rng, c) for c in KITE_COLOURS[rng.integers(len(KITE_COLOURS))])
    cv2.fillPoly(layer, [outline], a, cv2.LINE_8, SHIFT)
    for k in (1, 3):  # alternate panels in the second colour
        cv2.fillPoly(layer, [_fix([pts[k], pts[(k + 1) % 4], pts[4]])], b, cv2.LINE_8, SHIFT)
    for i, j in ((0, 2), (1, 3)):
        cv2.line(layer, _pt(*pts[i]), _pt(*pts[j]), DARK, 1, cv2.LINE_8, SHIFT)


DRAW = {"stop sign": _stop_sign, "frisbee": _frisbee, "sports ball": _sports_ball, "kite": _kite}


def _render(rng, category: Category, cx: float, cy: float, size: float, height: int, width: int):
    """(mask in the image, colour layer in the image, the object's total pixel count)."""
    mask = np.zeros((height + 2 * PAD, width + 2 * PAD), np.uint8)
    layer = np.zeros((*mask.shape, 3), np.uint8)
    DRAW[category.name](rng, mask, layer, cx + PAD, cy + PAD, size)
    inner = (slice(PAD, PAD + height), slice(PAD, PAD + width))
    # the layer's pixels off the mask are never used: shading and texture may spill there
    return mask[inner].astype(bool), layer[inner], int(mask.sum())


# ------------------------------------------------------------------------------------------------------- scenes
def _has_hole(mask: np.ndarray) -> bool:
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    _, hierarchy = cv2.findContours(padded, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0][:, 3] >= 0).any())


def _position(rng, placed: list[Placed], overlap: bool, size: float, height: int, width: int):
    if not placed:  # the first object lies wholly inside the image
        return rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2)
    if overlap:
        other = placed[rng.integers(len(placed))]
        dist = rng.uniform(0.4, 0.85) * (other.size + size) / 2
        phi = rng.uniform(0.0, 2 * math.pi)
        return other.cx + dist * math.cos(phi), other.cy + dist * math.sin(phi)
    return rng.uniform(0.0, width), rng.uniform(0.0, height)


def _fits(mask: np.ndarray, total: int, placed: list[Placed], overlap: bool) -> bool:
    shown = int(mask.sum())
    if shown < max(MIN_AREA, MIN_IN_IMAGE * total):
        return False
    hit = [p for p in placed if (p.visible & mask).any()]
    if bool(hit) != overlap:
        return False
    for p in hit:
        rest = p.visible & ~mask
        if rest.sum() < max(MIN_AREA, MIN_VISIBLE * p.shown) or _has_hole(rest):
            return False
    return True


def _scene(rng: np.random.Generator, first_class: int) -> tuple[np.ndarray, list[Placed]]:
    height, width = (int(v) for v in rng.integers(IMAGE_SIDE[0], IMAGE_SIDE[1] + 1, size=2))
    image = _background(rng, height, width)
    placed: list[Placed] = []
    for j in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        category = CLASSES[first_class if j == 0 else rng.integers(len(CLASSES))]
        size = rng.uniform(*OBJECT_SIZE)
        overlap = j > 0 and rng.random() < OVERLAP_P
        for _ in range(ATTEMPTS):
            cx, cy = _position(rng, placed, overlap, size, height, width)
            mask, layer, total = _render(rng, category, cx, cy, size, height, width)
            if _fits(mask, total, placed, overlap):
                break
        else:
            continue  # no room for this one
        for p in placed:
            p.visible &= ~mask
        image[mask] = layer[mask]
        placed.append(Placed(category, cx, cy, size, mask, int(mask.sum())))
    return image, placed


# -------------------------------------------------------------------------------------------------- annotations
def _polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of ``mask`` in COCO's pixel-edge coordinates, ≥ 3 points each."""
    ys, xs = np.nonzero(mask)
    y0, x0 = int(ys.min()), int(xs.min())
    crop = mask[y0:ys.max() + 1, x0:xs.max() + 1].astype(np.uint8)
    fine = np.repeat(np.repeat(crop, UPSAMPLE, axis=0), UPSAMPLE, axis=1)
    fine = cv2.copyMakeBorder(fine, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    contours, _ = cv2.findContours(fine, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        pts = cv2.approxPolyDP(c, SIMPLIFY, True).reshape(-1, 2).astype(np.float64)
        # Contours run through the boundary cells' centres of the fine grid, 1/16 px inside the pixel edges; at
        # pixel-centre resolution (pycocotools' rasteriser) that is the mask itself, not one shrunk by half a pixel.
        pts = (pts - 1 + 0.5) / UPSAMPLE + (x0, y0)
        if len(pts) >= 3:
            polys.append([float(v) for v in pts.ravel()])
    return polys


def _annotation(ann_id: int, image_id: int, obj: Placed) -> dict | None:
    area = int(obj.visible.sum())
    if area < MIN_AREA:
        return None
    ys, xs = np.nonzero(obj.visible)
    x0, y0 = int(xs.min()), int(ys.min())
    bbox = [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)]
    return {"segmentation": _polygons(obj.visible), "area": float(area), "iscrowd": 0, "image_id": image_id,
            "bbox": bbox, "category_id": obj.category.id, "id": ann_id}


def _image_ids(seed: int, n: int) -> list[int]:
    # COCO 2017's image id range; distinct over both splits
    return [int(v) for v in np.random.default_rng([seed, 11]).choice(np.arange(1, 581_930), size=n, replace=False)]


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    write_bytes_atomic(path, buf.tobytes())


def make_coco_instances(out_dir: Path, seed: int = 0, *, n_train: int = 120, n_val: int = 30) -> None:
    """Write the mini COCO 2017 instances dataset under ``out_dir`` (see the module docstring)."""
    out_dir = Path(out_dir)
    ids = _image_ids(seed, n_train + n_val)
    split_ids = {"train": sorted(ids[:n_train]), "val": sorted(ids[n_train:])}
    info = {"description": "mimbench mini COCO instances (synthetic objects on scikit-image CC0 photos)", "url": "",
            "version": "1.0", "year": 2017, "contributor": "mimbench", "date_created": "2017/09/01"}
    licenses = [{"url": "https://creativecommons.org/publicdomain/zero/1.0/", "id": 1, "name": "CC0 1.0"}]
    categories = [{"supercategory": c.supercategory, "id": c.id, "name": c.name} for c in CLASSES]
    files, ann_id = {}, 1
    for split, image_ids in split_ids.items():
        images, anns = [], []
        for i, image_id in enumerate(image_ids):
            rng = np.random.default_rng([seed, SPLIT_CODES[split], i])
            image, objects = _scene(rng, first_class=i % len(CLASSES))
            name = f"{image_id:012d}.jpg"
            _write_jpeg(out_dir / IMG_DIRS[split] / name, image)
            images.append({"license": 1, "file_name": name, "coco_url": "", "height": image.shape[0],
                           "width": image.shape[1], "date_captured": "2017-09-01 00:00:00", "flickr_url": "",
                           "id": image_id})
            for obj in objects:
                ann = _annotation(ann_id, image_id, obj)
                if ann is not None:
                    anns.append(ann)
                    ann_id += 1
        files[ANN_FILES[split]] = {"info": info, "licenses": licenses, "images": images, "annotations": anns,
                                   "categories": categories}
    for rel, data in files.items():
        write_text_atomic(out_dir / rel, json.dumps(data))
