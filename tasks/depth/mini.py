"""Small, learnable depth datasets in the real NYUv2 / KITTI layouts, rendered by numpy ray casting.

Scenes are built from axis-aligned planes, boxes and spheres, seen through a pinhole camera; every depth value is
the exact z-depth of the surface hit at the pixel centre. Surfaces carry crops of scikit-image's bundled CC0
photos, modulated by Lambertian shading (and, outdoors, aerial haze), so depth is inferable from the image:
perspective texture gradients, shading fall-off, ground contact, occlusion. Colours are supersampled 2×2.
Everything is drawn from ``numpy.random.default_rng([seed, split, index])``: the same seed gives identical bytes.

``make_nyu`` writes mmseg's NYUDataset layout::

    images/{train,test}/<scene>_<idx>.jpg          e.g. train/bedroom_0001_00003.jpg, test/bedroom_00007.jpg
    annotations/{train,test}/<scene>_<idx>.png     uint16 millimetres, dense

plus one real test image, ``motorcycle_00000``: the Middlebury 2014 sample ``skimage.data.stereo_motorcycle()``
with depth from its ground-truth disparity.

``make_kitti`` writes the BTS Eigen layout at 1/8 of KITTI's resolution::

    raw/<date>/<date>_drive_<NNNN>_sync/image_02/data/<frame:010d>.png
    gt_depth/<date>_drive_<NNNN>_sync/proj_depth/groundtruth/image_02/<frame:010d>.png  uint16 m × 256, 0 = invalid
    eigen_train_files.txt, eigen_test_files.txt    "<rgb path> <gt path or None> <focal>"
    dataset_overrides.json                         {"kb_crop": [44, 152]}

The GT is sparse like projected LiDAR (no sky, nothing in the upper rows, ~30% of the other pixels, ≤ 80 m); about
10% of the test lines name ``None`` as GT, as 45 of the real 697 do. ``dataset_overrides.json`` holds the KB crop
(h, w) scaled to the mini size (real KITTI: 352×1216); the task adapter merges it into the dataset settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

NYU_FOCAL, NYU_WIDTH = 518.8579, 640
KITTI_FOCAL, KITTI_SHAPE = 721.5377, (375, 1242)
KITTI_KB_MARGIN = (23, 26)  # rows / cols that the 352×1216 KB crop removes from a 375×1242 frame
NYU_SCENES = ("bedroom", "kitchen", "living_room", "bathroom", "office", "dining_room", "classroom", "study")
KITTI_DATES = ("2011_09_26", "2011_09_28", "2011_09_29", "2011_09_30", "2011_10_03")
# Middlebury 2014 "Motorcycle" at the 1/4 scale skimage ships: focal, baseline (mm), principal point offset dx
MOTO_F, MOTO_B, MOTO_DOFFS = 994.978, 193.001, 31.086
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "brick", "grass", "gravel", "camera")  # bundled, CC0 / PD
EPS = 1e-6
SS = 2  # colour supersampling per axis


# --------------------------------------------------------------------------------------------------- textures

@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The bundled photos as float32 RGB in [0, 1], short side 192 px (textures are small on screen anyway)."""
    from skimage import data
    out = []
    for name in PHOTOS:
        img = getattr(data, name)()
        img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
        scale = 192 / min(img.shape[:2])
        img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        out.append(img.astype(np.float32) / 255)
    return tuple(out)


@dataclass
class Surface:
    """A photo crop tiled (mirrored, so without seams) over a surface at ``density`` texels per metre."""

    photo: int
    y0: int
    x0: int
    size: int
    density: float
    tint: np.ndarray

    def sample(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        img = _photos()[self.photo]
        return img[self.y0 + _mirror(v * self.density, self.size), self.x0 + _mirror(u * self.density, self.size)] \
            * self.tint


def _mirror(x: np.ndarray, n: int) -> np.ndarray:
    m = np.floor(x).astype(np.int64) % (2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


def _surface(rng: np.random.Generator, photos: tuple[int, ...], density: tuple[float, float],
             tint_lo: float = 0.45) -> Surface:
    photo = int(rng.choice(photos))
    h, w = _photos()[photo].shape[:2]
    size = int(rng.integers(48, min(h, w) // 2))
    return Surface(photo, int(rng.integers(0, h - size)), int(rng.integers(0, w - size)), size,
                   float(rng.uniform(*density)), rng.uniform(tint_lo, 1.0, 3).astype(np.float32))


# --------------------------------------------------------------------------------------------------- primitives

@dataclass
class Plane:
    """The plane ``p[axis] = value``, optionally limited to ``bounds`` = ((axis, lo, hi), ...)."""

    axis: int
    value: float
    surf: Surface
    bounds: tuple = ()

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Ray parameter of the hit per ray, inf where missed (only the bounded coordinates are computed)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.value - o[self.axis]) / d[:, self.axis]
        ok = t > EPS
        for axis, lo, hi in self.bounds:
            c = o[axis] + t * d[:, axis]
            ok &= (c >= lo) & (c <= hi)
        return np.where(ok, t, np.inf)

    def detail(self, o: np.ndarray, d: np.ndarray, t: np.ndarray):
        """Normal (facing the camera) and surface coordinates (u, v) in metres of the hit rays."""
        p = o + t[:, None] * d
        normal = np.zeros_like(d)
        normal[:, self.axis] = -np.sign(d[:, self.axis])
        u_ax, v_ax = [a for a in range(3) if a != self.axis]
        return normal, p[:, u_ax], p[:, v_ax]


@dataclass
class Box:
    """An axis-aligned box [lo, hi]; the camera is always outside."""

    lo: np.ndarray
    hi: np.ndarray
    surf: Surface

    def _slabs(self, o: np.ndarray, d: np.ndarray):
        """Per-axis entry and exit parameters; fmin/fmax ignore the NaN of a ray parallel to a face plane."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (self.lo - o) / d, (self.hi - o) / d
        return np.fmin(t1, t2), np.fmax(t1, t2)

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        near, far = self._slabs(o, d)
        t_in = np.fmax(np.fmax(near[:, 0], near[:, 1]), near[:, 2])
        t_out = np.fmin(np.fmin(far[:, 0], far[:, 1]), far[:, 2])
        return np.where((t_in <= t_out) & (t_in > EPS), t_in, np.inf)

    def detail(self, o: np.ndarray, d: np.ndarray, t: np.ndarray):
        axis = np.nan_to_num(self._slabs(o, d)[0], nan=-np.inf).argmax(axis=1)  # the slab entered last is the face hit
        rows = np.arange(len(d))
        normal = np.zeros_like(d)
        normal[rows, axis] = -np.sign(d[rows, axis])
        p = o + t[:, None] * d
        other = np.array([[1, 2], [0, 2], [0, 1]])[axis]
        return normal, p[rows, other[:, 0]], p[rows, other[:, 1]]


@dataclass
class Sphere:
    centre: np.ndarray
    radius: float
    surf: Surface

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        oc = o - self.centre
        a, b, c = np.einsum('ij,ij->i', d, d), 2 * (d @ oc), oc @ oc - self.radius ** 2
        disc = b * b - 4 * a * c
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / (2 * a)
        return np.where((disc >= 0) & (t > EPS), t, np.inf)

    def detail(self, o: np.ndarray, d: np.ndarray, t: np.ndarray):
        p = o + t[:, None] * d
        normal = (p - self.centre) / self.radius
        return normal, self.radius * np.arctan2(normal[:, 0], normal[:, 2]), p[:, 1]


# --------------------------------------------------------------------------------------------------- camera

@dataclass
class Camera:
    """Pinhole camera at ``pos``; ``yaw`` turns right, ``pitch`` looks up (radians); principal point at the centre."""

    pos: np.ndarray
    focal: float
    yaw: float
    pitch: float

    def rays(self, h: int, w: int, ss: int = 1) -> np.ndarray:
        """World directions whose camera-frame z is 1, so the ray parameter t is the z-depth."""
        v, u = np.mgrid[0:h * ss, 0:w * ss]
        x = ((u + 0.5) / ss - w / 2) / self.focal
        y = ((v + 0.5) / ss - h / 2) / self.focal
        d = np.stack([x, -y, np.ones_like(x)], axis=-1).reshape(-1, 3)
        cy, sy, cp, sp = np.cos(self.yaw), np.sin(self.yaw), np.cos(self.pitch), np.sin(self.pitch)
        r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
        return d @ (r_yaw @ r_pitch).T


def _nearest(cam: Camera, prims: list, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per ray: the nearest hit parameter (inf for none) and the index of that primitive."""
    z, best = np.full(len(d), np.inf), np.zeros(len(d), np.int64)
    for i, prim in enumerate(prims):
        t = prim.hit(cam.pos, d)
        closer = t < z
        z[closer], best[closer] = t[closer], i
    return z, best


def _cast(cam: Camera, prims: list, h: int, w: int, ss: int):
    """Nearest hit per ray: z-depth (inf for none), index of the primitive, hit point, normal, (u, v)."""
    d = cam.rays(h, w, ss)
    z, best = _nearest(cam, prims, d)
    hit = np.isfinite(z)
    normal, u, v = np.zeros_like(d), np.zeros(len(d)), np.zeros(len(d))
    for i in np.unique(best[hit]):
        sel = np.flatnonzero(hit & (best == i))
        normal[sel], u[sel], v[sel] = prims[i].detail(cam.pos, d[sel], z[sel])
    points = cam.pos + np.where(hit, z, 0)[:, None] * d
    return z, best, points, normal, u, v


def _depth(cam: Camera, prims: list, h: int, w: int) -> np.ndarray:
    """z-depth at the pixel centres (inf where no surface)."""
    return _nearest(cam, prims, cam.rays(h, w))[0].reshape(h, w)


def _albedo(prims: list, best: np.ndarray, z: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = np.zeros((len(best), 3), np.float32)
    hit = np.isfinite(z)
    for i in np.unique(best[hit]):
        sel = np.flatnonzero(hit & (best == i))
        out[sel] = prims[i].surf.sample(u[sel], v[sel])
    return out


def _downsample(img: np.ndarray, h: int, w: int, ss: int) -> np.ndarray:
    return img.reshape(h, ss, w, ss, 3).mean(axis=(1, 3))


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------------- NYU

def _nyu_scene(rng: np.random.Generator, focal: float):
    """A room (floor, ceiling, four walls) with a few boxes and spheres, and a lamp near the camera."""
    x_l, x_r, z_back = -rng.uniform(1.2, 3.0), rng.uniform(1.2, 3.0), rng.uniform(3.0, 8.0)
    z_front, height, cam_h = -rng.uniform(0.5, 2.0), rng.uniform(2.4, 3.2), rng.uniform(1.0, 1.6)
    any_photo, floors = tuple(range(len(PHOTOS))), (PHOTOS.index("brick"), PHOTOS.index("gravel"),
                                                     PHOTOS.index("coffee"), PHOTOS.index("grass"))
    prims: list = [Plane(1, 0.0, _surface(rng, floors, (25, 60))),
                   Plane(1, height, _surface(rng, any_photo, (15, 40), 0.7)),
                   Plane(0, x_l, _surface(rng, any_photo, (15, 50))), Plane(0, x_r, _surface(rng, any_photo, (15, 50))),
                   Plane(2, z_back, _surface(rng, any_photo, (15, 50))),
                   Plane(2, z_front, _surface(rng, any_photo, (15, 50)))]
    for _ in range(rng.integers(1, 4)):
        size = rng.uniform([0.3, 0.3, 0.3], [1.2, 1.4, 1.0])
        cx = rng.uniform(x_l + size[0] / 2, x_r - size[0] / 2)
        cz = rng.uniform(1.2 + size[2] / 2, max(1.3 + size[2] / 2, z_back - size[2] / 2 - 0.05))
        lo = np.array([cx - size[0] / 2, 0.0, cz - size[2] / 2])
        prims.append(Box(lo, lo + size, _surface(rng, any_photo, (30, 80))))
    for _ in range(rng.integers(0, 3)):
        r = rng.uniform(0.15, 0.5)
        c = np.array([rng.uniform(x_l + r, x_r - r), rng.uniform(r, 1.6), rng.uniform(1.2 + r, z_back - r)])
        prims.append(Sphere(c, r, _surface(rng, any_photo, (30, 80))))
    cam = Camera(np.array([0.0, cam_h, 0.0]), focal, rng.uniform(-0.26, 0.26), rng.uniform(-0.26, 0.0))
    lamp = cam.pos + rng.uniform([-0.5, 0.2, -0.3], [0.5, 0.8, 0.3])
    return prims, cam, lamp


def _render_nyu(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8, depth in metres) of a room; rooms with depth outside 0.5–9.9 m are redrawn."""
    h, w = size
    focal = NYU_FOCAL * w / NYU_WIDTH
    while True:
        prims, cam, lamp = _nyu_scene(rng, focal)
        depth = _depth(cam, prims, h, w)
        if np.isfinite(depth).all() and depth.min() >= 0.5 and depth.max() <= 9.9:
            break
    z_ss, best, points, normal, u, v = _cast(cam, prims, h, w, SS)
    to_lamp = lamp - points
    dist = np.linalg.norm(to_lamp, axis=1)
    lambert = np.clip((normal * to_lamp).sum(1) / dist, 0, None)
    shade = 0.15 + 1.6 * lambert / (1 + (dist / 3.0) ** 2)
    rgb = _albedo(prims, best, z_ss, u, v) * shade[:, None]
    return _to_uint8(_downsample(rgb.reshape(h * SS, w * SS, 3), h, w, SS)), depth


def _motorcycle(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The Middlebury sample, centre-cropped to the aspect of ``size`` and resized; depth in mm, 0 = invalid.

    Middlebury's depth is Z = f·B / (d + doffs): the disparity is measured between images whose principal points
    differ by doffs (31.086 px at this scale), so f·B/d alone would overestimate depth ~2×.
    """
    from skimage import data
    left, _, disp = data.stereo_motorcycle()
    h, w = size
    crop_w = min(disp.shape[1], round(disp.shape[0] * w / h))
    x0 = (disp.shape[1] - crop_w) // 2
    left, disp = left[:, x0:x0 + crop_w], disp[:, x0:x0 + crop_w]
    valid = np.isfinite(disp) & (disp > 0)
    depth_mm = np.where(valid, MOTO_F * MOTO_B / (np.where(valid, disp, 1) + MOTO_DOFFS), 0)
    rgb = cv2.resize(left, (w, h), interpolation=cv2.INTER_AREA)
    depth_mm = cv2.resize(depth_mm.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    return rgb, np.round(depth_mm).astype(np.uint16)


def make_nyu(out_dir: Path, seed: int = 0, n_train: int = 120, n_test: int = 30, size=(60, 80)) -> None:
    """Write a mini NYUv2 in mmseg's layout (n_train / n_test rendered rooms, plus the real motorcycle in test)."""
    out_dir = Path(out_dir)
    for split, n in (("train", n_train), ("test", n_test)):
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rgb, depth = _render_nyu(np.random.default_rng([seed, 0 if split == "train" else 1, i]), size)
            _write_nyu(out_dir, split, _nyu_name(split, i), rgb, np.round(depth * 1000).astype(np.uint16))
    rgb, depth_mm = _motorcycle(size)
    _write_nyu(out_dir, "test", "motorcycle_00000", rgb, depth_mm)


def _nyu_name(split: str, i: int) -> str:
    """Train: scenes of 6 frames (``bedroom_0001_00003``); test: named like BTS's test split (``bedroom_00007``)."""
    if split == "train":
        scene = i // 6
        return f"{NYU_SCENES[scene % len(NYU_SCENES)]}_{scene + 1:04d}_{i:05d}"
    return f"{NYU_SCENES[i % len(NYU_SCENES)]}_{i:05d}"


def _write_nyu(out_dir: Path, split: str, name: str, rgb: np.ndarray, depth_mm: np.ndarray) -> None:
    cv2.imwrite(str(out_dir / "images" / split / f"{name}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(out_dir / "annotations" / split / f"{name}.png"), depth_mm)


# --------------------------------------------------------------------------------------------------- KITTI

def _kitti_scene(rng: np.random.Generator, focal: float):
    """A street: road, kerbs, sidewalks, facade segments with gaps, back buildings, cars, poles; and the sun."""
    idx = PHOTOS.index
    x_l, x_r = -rng.uniform(1.5, 5.0), rng.uniform(3.0, 8.0)
    road = _surface(rng, (idx("gravel"), idx("camera")), (20, 40), 0.25)
    road.tint = np.full(3, rng.uniform(0.3, 0.5), np.float32)
    prims: list = [Plane(1, 0.0, road, ((0, x_l, x_r),)),
                   Plane(1, 0.0, _surface(rng, (idx("grass"), idx("gravel")), (15, 30)))]
    for side, edge in ((-1, x_l), (1, x_r)):
        walk_w = rng.uniform(1.5, 4.0)
        outer = edge + side * walk_w
        walk = _surface(rng, (idx("brick"), idx("gravel")), (20, 40), 0.5)
        prims += [Plane(1, 0.15, walk, ((0, min(edge, outer), max(edge, outer)),)),
                  Plane(0, edge, walk, ((1, 0.0, 0.15),))]  # kerb
        prims += _facades(rng, side, outer)
        for _ in range(rng.integers(0, 3)):  # poles on the sidewalk
            px, pz = edge + side * rng.uniform(0.3, walk_w - 0.3), rng.uniform(5, 60)
            prims.append(Box(np.array([px - 0.1, 0.15, pz - 0.1]), np.array([px + 0.1, rng.uniform(4, 7), pz + 0.1]),
                             _surface(rng, (idx("camera"),), (20, 40), 0.3)))
    prims += _cars(rng, x_l, x_r)
    cam = Camera(np.array([0.0, 1.65, 0.0]), focal, rng.uniform(-0.09, 0.09), rng.uniform(-0.05, 0.03))
    sun = rng.uniform([-1, 0.5, -1], [1, 1.5, 1])
    return prims, cam, sun / np.linalg.norm(sun), rng.uniform(100, 250)


def _facades(rng: np.random.Generator, side: int, outer: float) -> list:
    """Building fronts along one side, in segments with occasional gaps onto a row of buildings further back."""
    out, z = [], -5.0
    while z < 160:
        length = rng.uniform(8, 30)
        if rng.random() > 0.25:
            x = outer + side * rng.uniform(0, 1.5)
            out.append(Plane(0, x, _surface(rng, tuple(range(len(PHOTOS))), (10, 35)),
                             ((1, 0.0, rng.uniform(5, 20)), (2, z, z + length))))
        z += length
    back = outer + side * rng.uniform(8, 15)
    out.append(Plane(0, back, _surface(rng, tuple(range(len(PHOTOS))), (10, 30)),
                     ((1, 0.0, rng.uniform(6, 25)), (2, -5.0, 200.0))))
    return out


def _cars(rng: np.random.Generator, x_l: float, x_r: float) -> list:
    """Car-sized boxes on the road, not overlapping each other, at least 4 m ahead."""
    cars: list = []
    for _ in range(rng.integers(1, 6)):
        w, h, l = rng.uniform(1.6, 1.9), rng.uniform(1.4, 1.7), rng.uniform(3.8, 4.8)
        cx, cz = rng.uniform(x_l + w / 2 + 0.2, x_r - w / 2 - 0.2), rng.uniform(4 + l / 2, 60)
        lo, hi = np.array([cx - w / 2, 0.0, cz - l / 2]), np.array([cx + w / 2, h, cz + l / 2])
        if any((lo < c.hi).all() and (hi > c.lo).all() for c in cars):
            continue
        paint = _surface(rng, (PHOTOS.index("camera"), PHOTOS.index("gravel")), (30, 60), 0.1)
        paint.tint = (rng.uniform(0.1, 1.0, 3) * rng.uniform(0.6, 1.0)).astype(np.float32)
        cars.append(Box(lo, hi, paint))
    return cars


def _render_kitti(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8, sparse depth in metres with 0 = invalid)."""
    h, w = size
    prims, cam, sun, haze = _kitti_scene(rng, KITTI_FOCAL * w / KITTI_SHAPE[1])
    z_ss, best, _, normal, u, v = _cast(cam, prims, h, w, SS)
    shade = 0.35 + 0.75 * np.clip(normal @ sun, 0, None)
    rgb = _albedo(prims, best, z_ss, u, v) * shade[:, None]
    rows = np.repeat(np.arange(h * SS), w * SS) / (h * SS)
    sky = np.array([0.55, 0.7, 0.95]) + np.outer(rows, [0.35, 0.25, 0.05])  # lighter towards the horizon
    fog = np.exp(-np.where(np.isfinite(z_ss), z_ss, np.inf) / haze)[:, None]
    rgb = rgb * fog + sky * (1 - fog)
    rgb = _to_uint8(_downsample(rgb.reshape(h * SS, w * SS, 3), h, w, SS))
    z = _depth(cam, prims, h, w)
    lidar = (np.arange(h)[:, None] >= int(0.3 * h)) & (rng.random((h, w)) < 0.3)
    depth = np.where(np.isfinite(z) & (z <= 80.0) & lidar, z, 0.0)
    return rgb, depth


def kb_crop_size(size: tuple[int, int]) -> tuple[int, int]:
    """KITTI's 352×1216 KB crop scaled to ``size``: the same margins, in proportion (47×155 → 44×152)."""
    h, w = size
    return (h - round(KITTI_KB_MARGIN[0] * h / KITTI_SHAPE[0]), w - round(KITTI_KB_MARGIN[1] * w / KITTI_SHAPE[1]))


def make_kitti(out_dir: Path, seed: int = 0, n_train: int = 120, n_test: int = 30, size=(47, 155)) -> None:
    """Write a mini KITTI Eigen split in BTS's layout (see the module docstring); test and train drives differ."""
    out_dir = Path(out_dir)
    focal = KITTI_FOCAL * size[1] / KITTI_SHAPE[1]
    rng = np.random.default_rng([seed, 2])
    no_gt = set(rng.choice(n_test, round(0.1 * n_test), replace=False).tolist()) if n_test else set()
    for split, n, drive0 in (("train", n_train, 1), ("test", n_test, 101)):
        lines = []
        for i in range(n):
            date, drive, frame = KITTI_DATES[(i // 10) % len(KITTI_DATES)], drive0 + i // 10, 5 + 7 * (i % 10)
            sync = f"{date}_drive_{drive:04d}_sync"
            rgb_rel = f"{date}/{sync}/image_02/data/{frame:010d}.png"
            gt_rel = f"{sync}/proj_depth/groundtruth/image_02/{frame:010d}.png"
            rgb, depth = _render_kitti(np.random.default_rng([seed, 3 if split == "train" else 4, i]), size)
            _imwrite(out_dir / "raw" / rgb_rel, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if split == "test" and i in no_gt:
                gt_rel = "None"  # as for the 45 real test frames without annotated depth: no file either
            else:
                _imwrite(out_dir / "gt_depth" / gt_rel, np.round(depth * 256).astype(np.uint16))
            lines.append(f"{rgb_rel} {gt_rel} {focal:.4f}\n")
        (out_dir / f"eigen_{split}_files.txt").write_text("".join(lines))
    (out_dir / "dataset_overrides.json").write_text(json.dumps({"kb_crop": list(kb_crop_size(size))}) + "\n")


def _imwrite(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")
