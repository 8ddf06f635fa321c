"""Small, learnable human-pose datasets in the exact on-disk formats of COCO keypoints and CrowdPose.

Each image is a random crop of one of scikit-image's bundled public-domain / CC0 photos with 1–3 articulated 2D
figures drawn on it: a kinematic skeleton (random joint angles, scale 35–100 px tall, position, in-plane rotation)
with thick limbs in a fixed, distinct colour per limb segment (person's left side in warm colours, right side in
cool ones, so a small network can tell left from right), a filled torso and a head ellipse with coloured eye, ear
and nose dots. Keypoints are the integer pixel positions the limbs were drawn from, so labels are exact. Every
figure faces the camera (its left side is on the image's right), so side is also readable from geometry; with
mmpose's RandomFlip (which mirrors the image and swaps left/right labels) the colours stop telling sides apart and
that geometric cue is the one that stays consistent.

Visibility flags follow COCO: 0 = not labelled (outside the image; x = y = 0), 1 = labelled but occluded (covered by
a figure drawn later), 2 = visible. bbox / area / segmentation come from each figure's own silhouette clipped to
the image (bbox tight in pixels, area = pixel count, segmentation = its outer contour polygons).

Files written (relative to ``out_dir``)::

    COCO:      annotations/person_keypoints_{train,val}2017.json, {train,val}2017/<12-digit id>.jpg,
               person_detection_results/COCO_val2017_detections_AP_H_56_person.json
    CrowdPose: annotations/mmpose_crowdpose_{trainval,test}.json, images/<id>.jpg,
               annotations/det_for_crowd_test_0.1_0.5.json

CrowdPose specifics, as in the real files (checked against xtcocoapi's annotations/example_crowdpose_val.json, an
excerpt of crowdpose_val.json): 14 keypoints, images carry ``crowdIndex`` (here the paper's definition: mean over
people of other people's labelled joints inside the person's box / the person's own labelled joints), annotations
have no ``area``, the category names the 13th keypoint "head" (mmpose calls it top_head) and carries COCO's first
12 skeleton pairs verbatim, and ``num_keypoints`` counts the labelled (v > 0) joints among the 12 body joints only
(head and neck are not counted: a fully labelled person has num_keypoints 12). xtcocotools' ``keypoints_crowd``
ignores GT people whose num_keypoints is 0. The test split cycles its images through the three crowdIndex bands
that xtcocotools scores as easy / medium / hard (< 0.2, < 0.8, >= 0.8), so every band is present when n_test >= 3.

Everything is a pure function of ``seed``: each image has its own ``numpy`` generator seeded by
(seed, split, index), JSON is written with a fixed key order and JPEGs by OpenCV's deterministic encoder.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

COCO_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle")
# person_keypoints_*2017.json's own skeleton (1-based keypoint indices).
COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
                 [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]
CROWDPOSE_KEYPOINTS = ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                       "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "top_head",
                       "neck")
# The category block of the real CrowdPose files: "head" for mmpose's top_head, and a skeleton copied from COCO
# (its indices do not fit 14 keypoints; mmpose ignores it and uses its own meta file).
CROWDPOSE_CATEGORY_NAMES = CROWDPOSE_KEYPOINTS[:12] + ("head", "neck")
CROWDPOSE_SKELETON = COCO_SKELETON[:12]
CROWDPOSE_BODY_JOINTS = 12  # num_keypoints counts labelled joints among the first 12 only
# xtcocotools COCOeval._summarizeKps_crowd calls get_type_result(first=0.2, second=0.8): easy if crowdIndex < 0.2,
# medium if < 0.8, hard otherwise.
CROWD_BANDS = (0.2, 0.8)
BANDS = ("easy", "medium", "hard")

COCO_ANN = {"train": "annotations/person_keypoints_train2017.json", "val": "annotations/person_keypoints_val2017.json"}
COCO_IMG = {"train": "train2017", "val": "val2017"}
COCO_DET = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"
CROWD_ANN = {"trainval": "annotations/mmpose_crowdpose_trainval.json", "test": "annotations/mmpose_crowdpose_test.json"}
CROWD_IMG = "images"
CROWD_DET = "annotations/det_for_crowd_test_0.1_0.5.json"

# Bundled with scikit-image (no download), public domain / CC0 / "no known copyright restrictions".
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "immunohistochemistry",
               "hubble_deep_field", "retina", "grass", "gravel", "brick", "cell")

# BGR. Left = warm, right = cool; every segment has its own colour so joints sit at colour changes.
LIMBS = (("left_hip", "left_knee", (170, 0, 200)), ("left_knee", "left_ankle", (0, 230, 230)),
         ("right_hip", "right_knee", (0, 190, 0)), ("right_knee", "right_ankle", (140, 140, 0)),
         ("left_shoulder", "left_elbow", (0, 0, 230)), ("left_elbow", "left_wrist", (0, 140, 255)),
         ("right_shoulder", "right_elbow", (230, 0, 0)), ("right_elbow", "right_wrist", (255, 220, 0)))
DOTS = (("nose", (20, 20, 20)), ("left_eye", (60, 60, 255)), ("right_eye", (255, 90, 40)),
        ("left_ear", (0, 200, 255)), ("right_ear", (255, 255, 80)))
SKIN = ((140, 180, 230), (100, 140, 200), (60, 90, 140), (170, 200, 240), (80, 120, 170))

HEIGHT_RANGE = (35.0, 100.0)
MIN_LABELLED, MIN_VISIBLE = 5, 3  # per person, over the dataset's own keypoint set
SPLIT_CODES = {"train": 1, "val": 2, "trainval": 3, "test": 4}


@dataclass
class Figure:
    """One rendered person: joint pixel positions (all 19 names), colour layer and silhouette."""

    joints: dict[str, tuple[int, int]]
    layer: np.ndarray
    mask: np.ndarray


@dataclass
class Scene:
    image: np.ndarray
    people: list[dict]  # per person: keypoints [[x, y, v]] in the dataset's order, bbox, area, segmentation
    crowd_index: float


# --------------------------------------------------------------------------------------------------- backgrounds
@functools.lru_cache(maxsize=1)
def _backgrounds() -> tuple[np.ndarray, ...]:
    import skimage.data  # imported here: only the generators need it

    out = []
    for name in BACKGROUNDS:
        img = getattr(skimage.data, name)()
        img = np.asarray(img[0] if isinstance(img, tuple) else img)
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR)
        out.append(np.ascontiguousarray(img, dtype=np.uint8))
    return tuple(out)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    src = _backgrounds()[rng.integers(len(BACKGROUNDS))]
    sh, sw = src.shape[:2]
    scale = rng.uniform(0.3, 1.0) * min(sh / height, sw / width)  # crop = scale × output size
    ch, cw = max(8, int(height * scale)), max(8, int(width * scale))
    y0, x0 = rng.integers(0, sh - ch + 1), rng.integers(0, sw - cw + 1)
    crop = cv2.resize(src[y0:y0 + ch, x0:x0 + cw], (width, height), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


# ------------------------------------------------------------------------------------------------------ figures
def _rot(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _body(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], float]:
    """Joint positions in a body frame (unit = body height, y down, origin at the pelvis), front view.

    The person's left is image +x. Returns the points and the head tilt (radians).
    """
    sw = rng.uniform(0.65, 1.0)  # narrower shoulders/hips read as a turned torso
    p = {"neck": np.array([0.0, -0.33]),
         "left_shoulder": np.array([0.12 * sw, -0.31]), "right_shoulder": np.array([-0.12 * sw, -0.31]),
         "left_hip": np.array([0.07 * sw, 0.0]), "right_hip": np.array([-0.07 * sw, 0.0])}
    tilt = rng.uniform(-0.3, 0.3)
    up, side = _rot(tilt) @ np.array([0.0, -1.0]), _rot(tilt) @ np.array([1.0, 0.0])
    head = p["neck"] + 0.085 * up
    turn = rng.uniform(-1.0, 1.0) * (1.0 - sw)  # face shifts toward the way the torso turns
    p["head_centre"] = head
    p["top_head"] = head + 0.075 * up
    p["nose"] = head - 0.012 * up + 0.08 * turn * side
    p["left_eye"] = head + 0.018 * up + (0.026 + 0.06 * turn) * side
    p["right_eye"] = head + 0.018 * up + (-0.026 + 0.06 * turn) * side
    p["left_ear"], p["right_ear"] = head + 0.052 * side, head - 0.052 * side
    for side_name, sgn in (("left", 1.0), ("right", -1.0)):
        # angles from straight down, positive = away from the body
        a1 = rng.uniform(-0.4, 2.8)
        a2 = a1 + rng.uniform(-2.4, 2.4)
        h1 = rng.uniform(-0.25, 0.7)
        h2 = h1 + rng.uniform(-1.0, 0.6)
        sh, hip = p[f"{side_name}_shoulder"], p[f"{side_name}_hip"]
        p[f"{side_name}_elbow"] = sh + 0.16 * np.array([sgn * math.sin(a1), math.cos(a1)])
        p[f"{side_name}_wrist"] = p[f"{side_name}_elbow"] + 0.145 * np.array([sgn * math.sin(a2), math.cos(a2)])
        p[f"{side_name}_knee"] = hip + 0.245 * np.array([sgn * math.sin(h1), math.cos(h1)])
        p[f"{side_name}_ankle"] = p[f"{side_name}_knee"] + 0.235 * np.array([sgn * math.sin(h2), math.cos(h2)])
    return p, tilt


def _render_figure(rng: np.random.Generator, height: float, centre: tuple[float, float],
                   shape: tuple[int, int]) -> Figure:
    body, tilt = _body(rng)
    angle = float(np.clip(rng.normal(0.0, 0.25), -0.6, 0.6))  # whole-body lean
    rot = _rot(angle)
    pix = {k: tuple(int(v) for v in np.round(rot @ pt * height + np.asarray(centre))) for k, pt in body.items()}

    thick = max(2, round(0.08 * height))
    dot = max(1, round(0.02 * height))
    axes = (max(2, round(0.062 * height)), max(2, round(0.08 * height)))
    head_deg = math.degrees(angle + tilt)
    torso_col = tuple(int(c) for c in rng.integers(40, 220, 3))
    skin = SKIN[rng.integers(len(SKIN))]
    shade = rng.uniform(0.8, 1.0)  # per-person lighting, keeps hues distinct
    torso = np.array([pix[k] for k in ("left_shoulder", "neck", "right_shoulder", "right_hip", "left_hip")], np.int32)

    layer = np.zeros((*shape, 3), np.uint8)
    mask = np.zeros(shape, np.uint8)
    for img, paint in ((layer, lambda c: tuple(int(v * shade) for v in c)), (mask, lambda c: 255)):
        for a, b, col in LIMBS[:4]:  # legs under the torso, arms over it
            cv2.line(img, pix[a], pix[b], paint(col), thick)
        cv2.fillPoly(img, [torso], paint(torso_col))
        for a, b, col in LIMBS[4:]:
            cv2.line(img, pix[a], pix[b], paint(col), thick)
        cv2.line(img, pix["neck"], pix["head_centre"], paint(tuple(int(c * 0.8) for c in skin)), thick)
        cv2.ellipse(img, pix["head_centre"], axes, head_deg, 0, 360, paint(skin), -1)
        for name, col in DOTS:
            cv2.circle(img, pix[name], dot, paint(col), -1)
    return Figure(pix, layer, mask > 0)


# ------------------------------------------------------------------------------------------------------- scenes
def _band(crowd_index: float) -> str:
    return BANDS[0] if crowd_index < CROWD_BANDS[0] else BANDS[1] if crowd_index < CROWD_BANDS[1] else BANDS[2]


def _placements(rng: np.random.Generator, band: str, shape: tuple[int, int]) -> list[tuple[float, float, float]]:
    """(height, pelvis x, pelvis y) per person; ``band`` sets how much the people overlap."""
    ih, iw = shape
    n = {"easy": 1 if rng.random() < 0.7 else 2, "medium": 2 if rng.random() < 0.8 else 3,
         "hard": int(rng.integers(2, 4))}[band]
    lo, hi = HEIGHT_RANGE
    h0 = rng.uniform(lo, hi if n == 1 else 0.8 * hi)
    m = 0.3 if rng.random() < 0.25 else 0.0  # a quarter of the scenes let people cross the border
    cx = rng.uniform(0.25 * h0 - m * h0, max(0.25 * h0, iw - 0.25 * h0) + m * h0)
    cy = rng.uniform(0.5 * h0 - m * h0, max(0.5 * h0, ih - 0.5 * h0) + m * h0)
    out = [(h0, cx, cy)]
    gap = {"easy": (0.8, 1.2), "medium": (0.3, 0.6), "hard": (0.0, 0.2)}[band]
    for _ in range(n - 1):
        h = float(np.clip(h0 * rng.uniform(0.8, 1.2), lo, hi))
        x = out[-1][1] + rng.choice([-1.0, 1.0]) * rng.uniform(*gap) * h0
        if not -0.2 * h0 < x < iw + 0.2 * h0:  # reflect back into view
            x = 2 * out[-1][1] - x
        out.append((h, x, cy + rng.uniform(-0.12, 0.12) * h0))
    return sorted(out, key=lambda p: p[2] + 0.5 * p[0])  # lower feet = nearer = drawn later


def _silhouette_ann(mask: np.ndarray) -> tuple[list[float], float, list[list[float]]]:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        c = cv2.approxPolyDP(c, 0.8, True).reshape(-1, 2)
        if len(c) >= 3:
            polys.append([float(v) for v in c.flatten()])
    if not polys:  # a sliver: its box is the honest polygon
        polys = [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]]
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], float(len(xs)), polys


def _keypoints(figs: list[Figure], names: tuple[str, ...], shape: tuple[int, int]) -> list[list[list[int]]]:
    ih, iw = shape
    out = []
    for i, fig in enumerate(figs):
        kps = []
        for name in names:
            x, y = fig.joints[name]
            if not (0 <= x < iw and 0 <= y < ih):
                kps.append([0, 0, 0])
            elif any(other.mask[y, x] for other in figs[i + 1:]):
                kps.append([x, y, 1])
            else:
                kps.append([x, y, 2])
        out.append(kps)
    return out


def crowd_index(keypoints: list[list[list[int]]], boxes: list[list[float]]) -> float:
    """CrowdPose's crowd index: mean over people of (others' labelled joints in my box) / (my labelled joints)."""
    ratios = []
    for i, (kps, (x, y, w, h)) in enumerate(zip(keypoints, boxes)):
        own = sum(v > 0 for _, _, v in kps)
        inside = sum(v > 0 and x <= px <= x + w and y <= py <= y + h
                     for j, other in enumerate(keypoints) if j != i for px, py, v in other)
        ratios.append(inside / max(own, 1))
    return round(float(np.mean(ratios)), 2) if ratios else 0.0


def _scene(rng: np.random.Generator, shape: tuple[int, int], names: tuple[str, ...],
           target: str | None) -> Scene:
    """Sample people until each has enough labelled/visible joints (and the crowd band matches ``target``)."""
    for _ in range(500):
        band = target or str(rng.choice(BANDS, p=(0.45, 0.35, 0.2)))
        figs = [_render_figure(rng, h, (x, y), shape) for h, x, y in _placements(rng, band, shape)]
        kps = _keypoints(figs, names, shape)
        if any(sum(v > 0 for *_, v in k) < MIN_LABELLED or sum(v == 2 for *_, v in k) < MIN_VISIBLE
               or f.mask.sum() < 30 for k, f in zip(kps, figs)):
            continue
        anns = [_silhouette_ann(f.mask) for f in figs]
        if any(b[2] < 4 or b[3] < 4 for b, _, _ in anns):
            continue
        ci = crowd_index(kps, [b for b, _, _ in anns])
        if target is not None and _band(ci) != target:
            continue
        image = _background(rng, *shape)
        for f in figs:
            image[f.mask] = f.layer[f.mask]
        people = [dict(keypoints=k, bbox=b, area=a, segmentation=s) for k, (b, a, s) in zip(kps, anns)]
        return Scene(image, people, ci)
    raise RuntimeError(f"could not sample a valid {target or 'any'} scene in 500 tries")  # never seen


# ------------------------------------------------------------------------------------------------------ writing
def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    path.write_bytes(buf.tobytes())


def _ann(ann_id: int, image_id: int, person: dict, crowdpose: bool) -> dict:
    flat = [int(c) for kp in person["keypoints"] for c in kp]
    vis = flat[2::3]
    if crowdpose:  # real CrowdPose: no area, num_keypoints leaves out head and neck
        return {"num_keypoints": sum(v > 0 for v in vis[:CROWDPOSE_BODY_JOINTS]), "iscrowd": 0, "keypoints": flat,
                "image_id": image_id, "bbox": person["bbox"], "category_id": 1, "id": ann_id}
    return {"segmentation": person["segmentation"], "num_keypoints": sum(v > 0 for v in vis),
            "area": person["area"], "iscrowd": 0, "keypoints": flat, "image_id": image_id, "bbox": person["bbox"],
            "category_id": 1, "id": ann_id}


def _detections(rng: np.random.Generator, image_id: int, people: list[dict], shape: tuple[int, int]) -> list[dict]:
    """GT boxes jittered by a few percent with scores 0.5–1, plus an occasional low-score false positive."""
    ih, iw = shape
    boxes, scores = [], []
    for p in people:
        x, y, w, h = p["bbox"]
        boxes.append((x + rng.normal(0, 0.03) * w, y + rng.normal(0, 0.03) * h,
                      w * (1 + rng.normal(0, 0.04)), h * (1 + rng.normal(0, 0.04))))
        scores.append(rng.uniform(0.5, 1.0))
    if rng.random() < 0.2:
        w, h = rng.uniform(12, 40), rng.uniform(20, 70)
        boxes.append((rng.uniform(0, iw - w), rng.uniform(0, ih - h), w, h))
        scores.append(rng.uniform(0.05, 0.4))
    out = []
    for (x, y, w, h), s in zip(boxes, scores):
        x0, y0 = min(max(x, 0.0), iw - 2.0), min(max(y, 0.0), ih - 2.0)
        x1, y1 = min(max(x + w, x0 + 2.0), float(iw)), min(max(y + h, y0 + 2.0), float(ih))
        out.append({"image_id": image_id, "category_id": 1,
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "score": round(float(s), 4)})
    return out


def _category(names: tuple[str, ...], skeleton: list[list[int]]) -> list[dict]:
    return [{"supercategory": "person", "id": 1, "name": "person", "keypoints": list(names), "skeleton": skeleton}]


def _split(seed: int, split: str, image_ids: list[int], shape: tuple[int, int], names: tuple[str, ...],
           file_name, img_dir: Path, first_ann_id: int, crowdpose: bool, cycle_bands: bool):
    """Render one split: returns (images, annotations, detections)."""
    images, anns, dets = [], [], []
    det_rng = np.random.default_rng([seed, SPLIT_CODES[split], 1_000_003])
    ann_id = first_ann_id
    img_dir.mkdir(parents=True, exist_ok=True)
    for i, image_id in enumerate(image_ids):
        rng = np.random.default_rng([seed, SPLIT_CODES[split], i])
        scene = _scene(rng, shape, names, BANDS[i % 3] if cycle_bands else None)
        name = file_name(image_id)
        _write_jpeg(img_dir / name, scene.image)
        img = {"file_name": name, "id": image_id, "height": shape[0], "width": shape[1]}
        if crowdpose:
            img["crowdIndex"] = scene.crowd_index
        images.append(img)
        for person in scene.people:
            anns.append(_ann(ann_id, image_id, person, crowdpose))
            ann_id += 1
        dets.extend(_detections(det_rng, image_id, scene.people, shape))
    return images, anns, dets


def _ids(seed: int, lo: int, hi: int, n: int) -> list[int]:
    return [int(v) for v in np.random.default_rng([seed, 7]).choice(np.arange(lo, hi), size=n, replace=False)]


def make_coco_pose(out_dir: Path, seed: int = 0, n_train: int = 160, n_val: int = 40,
                   image_size: tuple[int, int] = (128, 128)) -> None:
    """Write a mini COCO-keypoints dataset (``image_size`` is (height, width)) under ``out_dir``."""
    out_dir = Path(out_dir)
    ids = _ids(seed, 1, 581_930, n_train + n_val)  # COCO 2017's id range
    split_ids = {"train": sorted(ids[:n_train]), "val": sorted(ids[n_train:])}
    info = {"description": "mimbench mini COCO keypoints (synthetic figures on scikit-image CC0 photos)",
            "version": "1.0", "year": 2017, "contributor": "mimbench", "date_created": "2017/09/01"}
    licenses = [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}]
    first_ann = 1
    for split, ids_ in split_ids.items():
        images, anns, dets = _split(seed, split, ids_, tuple(image_size), COCO_KEYPOINTS, lambda i: f"{i:012d}.jpg",
                                    out_dir / COCO_IMG[split], first_ann, crowdpose=False, cycle_bands=False)
        first_ann += len(anns)
        _write_json(out_dir / COCO_ANN[split], {"info": info, "licenses": licenses, "images": images,
                                                "annotations": anns,
                                                "categories": _category(COCO_KEYPOINTS, COCO_SKELETON)})
        if split == "val":
            _write_json(out_dir / COCO_DET, dets)


def make_crowdpose(out_dir: Path, seed: int = 0, n_trainval: int = 160, n_test: int = 40,
                   image_size: tuple[int, int] = (128, 128)) -> None:
    """Write a mini CrowdPose dataset (``image_size`` is (height, width)) under ``out_dir``."""
    out_dir = Path(out_dir)
    ids = _ids(seed, 100_000, 120_000, n_trainval + n_test)  # CrowdPose's file ids look like 113585.jpg
    split_ids = {"trainval": sorted(ids[:n_trainval]), "test": sorted(ids[n_trainval:])}
    first_ann = 1
    for split, ids_ in split_ids.items():
        images, anns, dets = _split(seed, split, ids_, tuple(image_size), CROWDPOSE_KEYPOINTS, lambda i: f"{i}.jpg",
                                    out_dir / CROWD_IMG, first_ann, crowdpose=True, cycle_bands=split == "test")
        first_ann += len(anns)
        cats = _category(CROWDPOSE_CATEGORY_NAMES, CROWDPOSE_SKELETON)
        _write_json(out_dir / CROWD_ANN[split], {"images": images, "annotations": anns, "categories": cats})
        if split == "test":
            _write_json(out_dir / CROWD_DET, dets)
