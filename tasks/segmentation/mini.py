"""A small, learnable ADE20K (SceneParsing, ``ADEChallengeData2016``) in the real layout, rendered with numpy.

``make_ade20k`` writes::

    images/training/ADE_train_00000001.jpg …       80 RGB scenes, 64–96 px a side (JPEG quality 90)
    images/validation/ADE_val_00000001.jpg …       20
    annotations/{training,validation}/<same name>.png   single-channel uint8, 0 = other, k = ADE20K class k

Every scene is either outdoors (sky above a tilted horizon, grass below, and one or more of a building skyline, a
road in perspective, trees) or a room (wall above a floor line that bends at the room corner, often a bed). The
eight classes (:data:`CLASSES`: wall 1, building 2, sky 3, floor 4, tree 5, road 7, bed 8, grass 10) are eight of
ADE20K's ten most frequent ones, chosen because together they make plausible scenes with a natural layout (stuff
above, ground below, objects standing on it); ceiling and windowpane are left out to keep the set small. Each keeps
its real label value, so configs, class names and ``reduce_zero_label`` work unchanged.

Every class has its own texture, so it is inferable from appearance alone: scikit-image's bundled CC0 photos
``brick``, ``grass`` and ``gravel`` (building, grass, road) and procedural patterns (sky gradient with clouds,
striped wallpaper, wooden planks, leafy foliage, a striped duvet), each with a class colour that varies only a
little between images. Label 0 covers an occasional 'other' object (a car, a
picture, a cabinet, in a random colour) and, in about half the images, 1-px boundaries between regions.

Everything is drawn from ``numpy.random.default_rng([seed, split, index])``: the same seed gives identical bytes.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import numpy as np

from benchmark.files import write_bytes_atomic

# The classes used, name → value in the annotation PNGs (1-based, ADE20K's order; mmseg's class list spells the
# eighth one "bed " with a trailing space).
CLASSES = {"wall": 1, "building": 2, "sky": 3, "floor": 4, "tree": 5, "road": 7, "bed": 8, "grass": 10}
SPLITS = (("training", "train", 80), ("validation", "val", 20))  # folder, file-name infix, image count
SIDES = (64, 72, 80, 88, 96)  # image heights and widths, drawn independently
JPEG_QUALITY = 90
OTHER = 255  # surface id of an 'other' object while rendering; written as label 0
PHOTO_TEXTURES = {"building": ("brick", (0.72, 0.36, 0.28), 0.30), "grass": ("grass", (0.42, 0.68, 0.22), 0.35),
                  "road": ("gravel", (0.42, 0.42, 0.45), 0.25)}  # class: (photo, colour, contrast)


# --------------------------------------------------------------------------------------------------- textures

@cache
def _photo(name: str) -> np.ndarray:
    """A bundled greyscale photo standardised to mean 0, std 1, so a class's mean colour is its tint."""
    from skimage import data
    img = getattr(data, name)().astype(np.float32)
    return (img - img.mean()) / img.std()


def _noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1] with features about ``cell`` px across (cubic upsampling of a coarse grid)."""
    grid = rng.random((max(2, round(h / cell) + 1), max(2, round(w / cell) + 1))).astype(np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)


def _photo_texture(rng: np.random.Generator, name: str, tint: np.ndarray, contrast: float, h: int, w: int):
    """A random crop of a bundled photo at a random scale, tinted; greyscale detail around the class colour."""
    img = _photo(name)
    side = int(rng.integers(2 * max(h, w), 5 * max(h, w)))  # 2–5 photo pixels per image pixel: a few bricks
    ch, cw = side * h // max(h, w), side * w // max(h, w)
    y0, x0 = int(rng.integers(0, img.shape[0] - ch)), int(rng.integers(0, img.shape[1] - cw))
    crop = cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_AREA)
    return tint * (1 + contrast * crop)[..., None]


def _sky(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Deep blue at the top fading to pale blue, with white clouds on some days."""
    t = (np.arange(h, dtype=np.float32) / h)[:, None, None] * rng.uniform(0.8, 1.4)
    rgb = np.float32([0.30, 0.50, 0.88]) * (1 - t) + np.float32([0.66, 0.78, 0.95]) * t
    cloud = np.clip((_noise(rng, h, w, rng.uniform(10, 24)) - 0.5) * 3, 0, 1) * rng.uniform(0, 0.8)
    return rgb * (1 - cloud[..., None]) + 0.95 * cloud[..., None]


def _wall(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Cream paint or wallpaper with faint vertical stripes."""
    period = rng.uniform(5, 12)
    stripes = 1 + rng.uniform(0.03, 0.08) * np.sign(np.sin(2 * np.pi * np.arange(w) / period))
    rgb = np.float32([0.86, 0.80, 0.66]) * stripes[None, :, None].astype(np.float32)
    return rgb + 0.02 * (_noise(rng, h, w, 2) - 0.5)[..., None]


def _floor(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Honey-coloured wooden planks: per-plank shade, dark seams, horizontal grain."""
    plank = int(rng.integers(4, 9))
    rows = (np.arange(h) + int(rng.integers(0, plank))) // plank
    shade = rng.uniform(0.8, 1.15, rows.max() + 1)[rows]
    shade = np.where((np.arange(h) + 1) % plank == 0, 0.6, shade)  # seam at the bottom row of each plank
    grain = cv2.resize(rng.random((h, max(2, w // 12))).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    factor = shade[:, None] * (0.9 + 0.2 * grain)
    return np.float32([0.70, 0.52, 0.26]) * factor[..., None].astype(np.float32)


def _tree(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Dark green foliage in leafy clumps with a few sunlit yellow-green spots."""
    leaves = _noise(rng, h, w, rng.uniform(2, 4))
    lit = np.clip((_noise(rng, h, w, 6) - 0.7) * 4, 0, 1)[..., None]
    rgb = np.float32([0.16, 0.38, 0.12]) * (0.55 + 0.9 * leaves)[..., None]
    return rgb * (1 - lit) + np.float32([0.55, 0.65, 0.25]) * lit


def _bed(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A duvet with diagonal white and raspberry stripes."""
    period = rng.uniform(6, 11)
    y, x = np.mgrid[0:h, 0:w]
    stripe = ((x + y * rng.choice([-1, 1])) / period + rng.random()) % 1 < 0.5
    dark = np.float32([0.78, 0.22, 0.32]) * rng.uniform(0.9, 1.1)
    return np.where(stripe[..., None], np.float32([0.92, 0.92, 0.95]), dark)


def _other(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An unlabelled object: a random flat colour with mild noise."""
    return rng.uniform(0.05, 0.95, 3).astype(np.float32) * (0.9 + 0.2 * _noise(rng, h, w, 3))[..., None]


PROCEDURAL = {"sky": _sky, "wall": _wall, "floor": _floor, "tree": _tree, "bed": _bed}


def _texture(rng: np.random.Generator, name: str, h: int, w: int) -> np.ndarray:
    if name in PHOTO_TEXTURES:
        photo, tint, contrast = PHOTO_TEXTURES[name]
        return _photo_texture(rng, photo, np.float32(tint) * rng.uniform(0.92, 1.08), contrast, h, w)
    return PROCEDURAL[name](rng, h, w)


# --------------------------------------------------------------------------------------------------- scenes

def _fill(surf: np.ndarray, points, value: int) -> None:
    cv2.fillPoly(surf, [np.round(np.asarray(points, np.float64)).astype(np.int32)], int(value))


def _blob(cx: float, cy: float, r: float, rng: np.random.Generator, n: int = 24) -> np.ndarray:
    """A wobbly closed outline: radius modulated by a few random low harmonics."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radius = np.ones(n)
    for k in (2, 3, 5):
        radius += rng.uniform(0.04, 0.15) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    return np.stack([cx + r * radius * np.cos(theta), cy + r * radius * np.sin(theta)], axis=1)


def _outdoor(rng: np.random.Generator, h: int, w: int, focus: str) -> np.ndarray:
    """Sky, grass below a tilted horizon; ``focus`` (building, tree or road) always, the other two sometimes."""
    surf = np.full((h, w), CLASSES["sky"], np.uint8)
    y0, slope = rng.uniform(0.35, 0.65) * h, rng.uniform(-0.15, 0.15)

    def horizon(x: float) -> float:
        return y0 + slope * (x - w / 2)

    if focus == "building" or rng.random() < 0.35:
        x = rng.uniform(-0.2, 0.3) * w
        for _ in range(rng.integers(1, 4)):  # a skyline of 1–3 houses, left to right, some with gables
            width, top = rng.uniform(0.2, 0.45) * w, rng.uniform(0.05, 0.6) * horizon(x)
            roof = [(x, top), (x + width, top)]
            if rng.random() < 0.4:
                roof.insert(1, (x + width / 2, top - rng.uniform(0.1, 0.25) * h))
            _fill(surf, [(x, horizon(x) + 2), *roof, (x + width, horizon(x + width) + 2)], CLASSES["building"])
            x += width + rng.uniform(0.0, 0.2) * w
    _fill(surf, [(0, horizon(0)), (w, horizon(w)), (w, h), (0, h)], CLASSES["grass"])
    if focus == "road" or rng.random() < 0.35:  # narrowing towards a vanishing point on the horizon
        vx, half_far = rng.uniform(0.25, 0.75) * w, rng.uniform(0.01, 0.06) * w
        cx, half_near = rng.uniform(0.2, 0.8) * w, rng.uniform(0.25, 0.5) * w
        _fill(surf, [(vx - half_far, horizon(vx)), (vx + half_far, horizon(vx)), (cx + half_near, h),
                     (cx - half_near, h)], CLASSES["road"])
    if focus == "tree" or rng.random() < 0.35:
        for _ in range(rng.integers(1, 3)):  # canopies straddling the horizon
            r = rng.uniform(0.12, 0.25) * min(h, w)
            cx = rng.uniform(0, w)
            _fill(surf, _blob(cx, horizon(cx) - rng.uniform(0.2, 0.8) * r, r, rng), CLASSES["tree"])
    if rng.random() < 0.3:  # a car on the ground: unlabelled
        cw, ch = rng.uniform(0.15, 0.3) * w, rng.uniform(0.08, 0.15) * h
        cx = rng.uniform(0, w - cw)
        cy = rng.uniform(max(horizon(cx), horizon(cx + cw)) + 2, h - ch)
        _fill(surf, [(cx, cy + ch * 0.4), (cx + cw * 0.25, cy), (cx + cw * 0.75, cy), (cx + cw, cy + ch * 0.4),
                     (cx + cw, cy + ch), (cx, cy + ch)], OTHER)
    return surf


def _indoor(rng: np.random.Generator, h: int, w: int, bed: bool) -> np.ndarray:
    """Wall above a floor line bending at the room corner; a bed in perspective when ``bed``."""
    surf = np.full((h, w), CLASSES["wall"], np.uint8)
    xc, yc = rng.uniform(0.2, 0.8) * w, rng.uniform(0.4, 0.65) * h
    yl, yr = yc + rng.uniform(0.0, 0.4) * xc, yc + rng.uniform(0.0, 0.4) * (w - xc)
    _fill(surf, [(0, yl), (xc, yc), (w, yr), (w, h), (0, h)], CLASSES["floor"])

    def floor_line(x: float) -> float:
        return yc + (yl - yc) * (xc - x) / xc if x < xc else yc + (yr - yc) * (x - xc) / (w - xc)

    if rng.random() < 0.4:  # a picture on the wall or a cabinet against it: unlabelled
        ow, oh = rng.uniform(0.15, 0.3) * w, rng.uniform(0.12, 0.3) * h
        ox, oy = rng.uniform(0, w - ow), rng.uniform(0.05, 0.4) * h
        _fill(surf, [(ox, oy), (ox + ow, oy), (ox + ow, oy + oh), (ox, oy + oh)], OTHER)
    if bed:  # headboard, mattress top wider towards the camera, front face
        bx, back_w = rng.uniform(0.05, 0.6) * w, rng.uniform(0.3, 0.5) * w
        back_y = max(floor_line(bx), floor_line(bx + back_w)) + rng.uniform(0.02, 0.08) * h  # stands on the floor
        front_y = back_y + rng.uniform(0.2, 0.35) * h
        spread, shift = rng.uniform(0.05, 0.2) * w, rng.uniform(-0.1, 0.1) * w
        fl, fr = bx - spread + shift, bx + back_w + spread + shift
        head = back_y - rng.uniform(0.1, 0.2) * h
        _fill(surf, [(bx, head), (bx + back_w, head), (bx + back_w, back_y), (bx, back_y)], CLASSES["bed"])
        face = rng.uniform(0.06, 0.12) * h
        _fill(surf, [(bx, back_y), (bx + back_w, back_y), (fr, front_y), (fr, front_y + face), (fl, front_y + face),
                     (fl, front_y)], CLASSES["bed"])
    return surf


def _boundaries(surf: np.ndarray) -> np.ndarray:
    """1-px lines where the surface changes (the pixel above / left of each change)."""
    edge = np.zeros(surf.shape, bool)
    edge[:, :-1] |= surf[:, :-1] != surf[:, 1:]
    edge[:-1] |= surf[:-1] != surf[1:]
    return edge


def render(rng: np.random.Generator, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (RGB uint8, label uint8 with ADE20K values). Even indices are outdoors, odd ones rooms; the
    outdoor focus cycles building / tree / road and every other room has a bed, so every class is in every split."""
    h, w = int(rng.choice(SIDES)), int(rng.choice(SIDES))
    if index % 2 == 0:
        surf = _outdoor(rng, h, w, ("building", "tree", "road")[(index // 2) % 3])
    else:
        surf = _indoor(rng, h, w, bed=(index // 2) % 2 == 0 or rng.random() < 0.5)
    rgb = np.zeros((h, w, 3), np.float32)
    names = {v: k for k, v in CLASSES.items()}
    for value in np.unique(surf):
        mask = surf == value
        rgb[mask] = (_other(rng, h, w) if value == OTHER else _texture(rng, names[int(value)], h, w))[mask]
    light = rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3)  # exposure and white balance
    rgb = rgb * light.astype(np.float32) + rng.normal(0, 0.015, rgb.shape).astype(np.float32)
    label = np.where(surf == OTHER, 0, surf).astype(np.uint8)
    if rng.random() < 0.5:
        label[_boundaries(surf)] = 0
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), label


# --------------------------------------------------------------------------------------------------- files

def make_ade20k(out_dir: Path, seed: int = 0) -> None:
    """Write the mini ADE20K into ``out_dir`` (the ``ADEChallengeData2016`` folder): 80 training, 20 validation."""
    out_dir = Path(out_dir)
    for split_id, (folder, infix, count) in enumerate(SPLITS):
        for i in range(count):
            rgb, label = render(np.random.default_rng([seed, split_id, i]), i)
            name = f"ADE_{infix}_{i + 1:08d}"
            _write(out_dir / "images" / folder / f"{name}.jpg", ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                   [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            _write(out_dir / "annotations" / folder / f"{name}.png", ".png", label, [])


def _write(path: Path, ext: str, img: np.ndarray, params: list) -> None:
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise OSError(f"could not encode {path}")
    write_bytes_atomic(path, buf.tobytes())
