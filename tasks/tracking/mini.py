"""Small, learnable GOT-10k and LaSOT datasets in the exact real layouts (see :mod:`tasks.tracking.sequences`).

Each sequence is rendered from scratch: a background cut from one of scikit-image's bundled CC0 photos, panned
and zoomed slowly like a hand-held camera; one target with its own shape (ellipse, box, diamond, rounded box,
plus, triangle), outline and texture (stripes, checks, rings, dots or a photo patch, in two saturated colours),
moving with a damped random-walk velocity and slowly changing scale and aspect ratio; one or two distractors
drawn the same way (behind the target); and, in some sequences, a foreground bar that slides in from a frame edge,
covers the target for a few frames and slides out, or an excursion that takes the target partly or fully out of
the image and back. Sizes are ~128x96 px, varied per sequence. Everything comes from
``numpy.random.default_rng([seed, dataset, split, index])``: the same seed gives identical bytes.

Annotations are what the pixels show. The box is the exact extent of the target's visible pixels (coverage
>= 0.5, inside the image, not behind the bar). A target with under 10% of its pixels visible counts as absent,
as an annotator would call it. Per format:

- GOT-10k (``make_got10k``): train 24 x ~40 frames, val 6 x ~30, test 3 x ~20. ``groundtruth.txt`` holds
  ``x,y,w,h`` with 4 decimals, ``-1.0000,-1.0000,-1.0000,-1.0000`` for absent frames (what most real absent
  frames carry); test keeps the first line only. ``absence.label`` 1 when absent; ``cover.label`` the visible
  ratio in GOT-10k's levels (0: 0%, 1: (0, 15%], 2: (15, 30%], ... 7: (90, 100%), 8: 100%);
  ``cut_by_image.label`` 1 when part of the target is outside the image. ``meta_info.ini`` has the real keys in
  the real order and the true resolution; test sequences have no label files and a meta_info.ini without the
  class keys (GOT-10k keeps test classes hidden, and its toolkit reads no test meta data).
- LaSOT (``make_lasot``): 4 real categories x 3 sequences of ~40 frames, ``testing_set.txt`` one per category,
  ``training_set.txt`` the rest. ``groundtruth.txt`` integer ``x,y,w,h``, ``0,0,0,0`` when absent;
  ``out_of_view.txt`` 1 when under 10% of the target lies inside the image, ``full_occlusion.txt`` 1 when it is
  absent otherwise; ``nlp.txt`` one sentence describing the target.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from benchmark.files import write_text_atomic

GOT10K_SPLITS = (("train", 24, 40), ("val", 6, 30), ("test", 3, 20))  # name, sequences, frames (+-4)
LASOT_CATEGORIES = ("airplane", "bear", "bicycle", "car")
LASOT_PER_CATEGORY, LASOT_TEST_PER_CATEGORY, LASOT_FRAMES = 8, 2, 40  # real LaSOT: 20 and 4
BACKGROUNDS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "brick", "grass", "gravel",
               "camera")
TEXTURES = ("astronaut", "chelsea", "coffee", "rocket", "colorwheel", "immunohistochemistry", "retina")
SHAPES = ("ellipse", "box", "diamond", "rounded box", "plus", "triangle")
PATTERNS = ("stripes", "checks", "rings", "dots", "photo")
PATCH = 48  # texture patch side
ABSENT_RATIO = 0.1
JPEG_QUALITY = 90
SUBSAMPLES = (0.25, 0.75)  # 2x2 coverage samples per pixel
# plausible GOT-10k classes: object, major, root class, and how they move
GOT10K_CLASSES = (("sedan", "car", "vehicle", "driving"), ("goldfish", "fish", "animal", "swimming"),
                  ("beach ball", "ball", "object", "rolling"), ("pigeon", "bird", "animal", "flying"),
                  ("skateboard", "board", "object", "sliding"), ("hedgehog", "mammal", "animal", "walking"),
                  ("kite", "toy", "object", "flying"), ("tortoise", "reptile", "animal", "crawling"))
ADVERBS = ("slowly", "steadily", "fast", "smoothly")


# --------------------------------------------------------------------------------------------------- textures

@cache
def _photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as float32 RGB in [0, 1], short side at most 320 px."""
    from skimage import data

    img = getattr(data, name)()
    img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    scale = min(1.0, 320 / min(img.shape[:2]))
    if scale < 1:
        img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    return img.astype(np.float32) / 255


def _colour(rng: np.random.Generator, hue: float | None = None) -> np.ndarray:
    h = rng.random() if hue is None else hue % 1.0
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0)), np.float32)


@dataclass
class Look:
    """An object's appearance: shape, an outline colour and a PATCH x PATCH texture."""

    shape: int
    outline: np.ndarray
    texture: np.ndarray
    words: tuple[str, str]  # colour and pattern, for LaSOT's nlp.txt


def _look(rng: np.random.Generator) -> Look:
    shape, pattern = int(rng.integers(len(SHAPES))), int(rng.integers(len(PATTERNS)))
    hue = rng.random()
    c1, c2 = _colour(rng, hue), _colour(rng, hue + rng.uniform(0.25, 0.75))
    v, u = (np.mgrid[0:PATCH, 0:PATCH] + 0.5) / PATCH * 2 - 1
    period = rng.uniform(0.5, 1.0)
    if PATTERNS[pattern] == "stripes":
        theta = rng.uniform(0, np.pi)
        t = (np.cos(theta) * u + np.sin(theta) * v) / period
        mix = (np.floor(t) % 2).astype(np.float32)
    elif PATTERNS[pattern] == "checks":
        mix = ((np.floor(u / period * 1.5) + np.floor(v / period * 1.5)) % 2).astype(np.float32)
    elif PATTERNS[pattern] == "rings":
        mix = (np.floor(np.hypot(u, v) / period * 2.5) % 2).astype(np.float32)
    elif PATTERNS[pattern] == "dots":
        g = 2.0 / period
        mix = (np.hypot((u * g) % 2 - 1, (v * g) % 2 - 1) < 0.55).astype(np.float32)
    else:
        mix = None
    photo = _photo(TEXTURES[int(rng.integers(len(TEXTURES)))])
    y0, x0 = int(rng.integers(0, photo.shape[0] - 96)), int(rng.integers(0, photo.shape[1] - 96))
    patch = cv2.resize(photo[y0:y0 + 96, x0:x0 + 96], (PATCH, PATCH), interpolation=cv2.INTER_AREA)
    if mix is None:  # a photo patch pulled towards c1, contrast stretched
        lum = patch.mean(axis=2, keepdims=True)
        lum = (lum - lum.min()) / max(float(lum.max() - lum.min()), 1e-3)
        texture = 0.5 * patch + 0.5 * (c1 * (0.3 + 0.7 * lum))
    else:  # two colours, shaded a little by the photo so the surface is not flat
        shade = 0.8 + 0.2 * patch.mean(axis=2, keepdims=True)
        texture = (c1 * mix[..., None] + c2 * (1 - mix[..., None])) * shade
    outline = _colour(rng, hue + 0.5) * rng.choice([0.35, 1.0])
    names = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
    return Look(shape, outline, np.clip(texture, 0, 1).astype(np.float32),
                (names[int(hue * 8) % 8], PATTERNS[pattern]))


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether (u, v) in the object's [-1, 1]^2 frame is inside the shape (every shape touches all four sides)."""
    au, av = np.abs(u), np.abs(v)
    box = (au <= 1) & (av <= 1)
    name = SHAPES[shape]
    if name == "ellipse":
        return u * u + v * v <= 1
    if name == "box":
        return box
    if name == "diamond":
        return au + av <= 1
    if name == "rounded box":
        return au ** 4 + av ** 4 <= 1
    if name == "plus":
        return box & ((au <= 0.42) | (av <= 0.42))
    return box & (au <= (v + 1) / 2)  # triangle, apex up


@dataclass
class Sprite:
    """An object rendered over the integer pixel window [x0, x0 + w) x [y0, y0 + h), maybe beyond the image."""

    x0: int
    y0: int
    alpha: np.ndarray  # (h, w) coverage in [0, 1]
    rgb: np.ndarray  # (h, w, 3)


def _sprite(look: Look, cx: float, cy: float, w: float, h: float) -> Sprite:
    x0, x1 = int(np.floor(cx - w / 2)), int(np.ceil(cx + w / 2))
    y0, y1 = int(np.floor(cy - h / 2)), int(np.ceil(cy + h / 2))
    py, px = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    alpha = np.zeros(px.shape, np.float32)
    for dy in SUBSAMPLES:
        for dx in SUBSAMPLES:
            alpha += _inside(look.shape, (px + dx - cx) / (w / 2), (py + dy - cy) / (h / 2))
    alpha /= len(SUBSAMPLES) ** 2
    u, v = (px + 0.5 - cx) / (w / 2), (py + 0.5 - cy) / (h / 2)
    iu = np.clip(((u + 1) / 2 * PATCH).astype(np.int64), 0, PATCH - 1)
    iv = np.clip(((v + 1) / 2 * PATCH).astype(np.int64), 0, PATCH - 1)
    rgb = look.texture[iv, iu]
    border = ~_inside(look.shape, u / 0.8, v / 0.8)  # an outline band 10% of the size wide
    rgb[border] = look.outline
    return Sprite(x0, y0, alpha, rgb)


def _paste(frame: np.ndarray, sp: Sprite) -> None:
    """Alpha-blend a sprite into the frame (in place), clipped to the image."""
    H, W = frame.shape[:2]
    h, w = sp.alpha.shape
    fx0, fy0, fx1, fy1 = max(sp.x0, 0), max(sp.y0, 0), min(sp.x0 + w, W), min(sp.y0 + h, H)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    a = sp.alpha[fy0 - sp.y0:fy1 - sp.y0, fx0 - sp.x0:fx1 - sp.x0, None]
    c = sp.rgb[fy0 - sp.y0:fy1 - sp.y0, fx0 - sp.x0:fx1 - sp.x0]
    region = frame[fy0:fy1, fx0:fx1]
    region *= 1 - a
    region += a * c


# --------------------------------------------------------------------------------------------------- motion

def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def _walk(rng: np.random.Generator, n: int, W: int, H: int, size: float, aspect: float) -> np.ndarray:
    """(n, 4) cx, cy, w, h: damped random-walk velocity, kept in the image by a soft wall; slow log-size and
    log-aspect random walks."""
    out = np.zeros((n, 4))
    pos = np.array([rng.uniform(0.3, 0.7) * W, rng.uniform(0.3, 0.7) * H])
    vel = rng.normal(0, 1.0, 2)
    log_s = log_a = 0.0
    for t in range(n):
        w, h = size * np.exp(log_s + log_a) * np.sqrt(aspect), size * np.exp(log_s - log_a) / np.sqrt(aspect)
        out[t] = pos[0], pos[1], w, h
        lo = np.array([w / 2 + 3, h / 2 + 3])
        hi = np.array([W - w / 2 - 3, H - h / 2 - 3])
        vel = 0.88 * vel + rng.normal(0, 0.55, 2) + 0.15 * (np.clip(pos, lo, np.maximum(lo, hi)) - pos)
        pos = pos + vel
        log_s = float(np.clip(0.96 * log_s + rng.normal(0, 0.035), -0.35, 0.35))
        log_a = float(np.clip(0.96 * log_a + rng.normal(0, 0.03), -0.3, 0.3))
    return out


def _excursion(rng: np.random.Generator, path: np.ndarray, W: int, H: int, full: bool) -> None:
    """Push the target towards an image edge and back (in place): partly out (``full=False``) or entirely."""
    n = len(path)
    length = int(rng.integers(10, 14))
    low = max(4, n // 3)
    t0 = int(rng.integers(low, max(low + 1, n - length - 2)))
    tp = t0 + length // 2
    cx, cy, w, h = path[tp]
    side = int(rng.integers(4))  # left, right, top, bottom
    frac = rng.uniform(1.15, 1.4) if full else rng.uniform(0.3, 0.7)  # how much of the object leaves
    axis, extent, span = (0, W, w) if side < 2 else (1, H, h)
    centre = cx if axis == 0 else cy
    goal = (-span / 2 + (1 - frac) * span) if side % 2 == 0 else (extent + span / 2 - (1 - frac) * span)
    t = np.arange(n)
    bump = np.where((t >= t0) & (t <= t0 + length), np.sin(np.pi * (t - t0) / length) ** 2, 0.0)
    path[:, axis] += (goal - centre) * bump


@dataclass
class Occluder:
    """A full-height bar sliding in from a frame edge over the target, holding, and sliding out the other way."""

    x: np.ndarray  # (n,) bar centre per frame (off-screen when inactive)
    width: float
    texture: np.ndarray  # (H, ceil(width) + 2, 3)


def _occluder(rng: np.random.Generator, path: np.ndarray, W: int, H: int) -> Occluder:
    n = len(path)
    enter, hold, leave = int(rng.integers(6, 10)), int(rng.integers(2, 5)), int(rng.integers(6, 10))
    t0 = int(rng.integers(4, max(5, n - enter - hold - leave - 1)))
    width = float(path[:, 2].max() * rng.uniform(1.25, 1.6) + 2)
    start, end = (-width, W + width) if rng.random() < 0.5 else (W + width, -width)
    x = np.full(n, start)
    for t in range(n):
        if t < t0:
            continue
        k = t - t0
        if k < enter:
            x[t] = start + (path[t, 0] - start) * _smoothstep(np.array((k + 1) / enter))
        elif k < enter + hold:
            x[t] = path[t, 0]
        else:
            x[t] = path[t, 0] + (end - path[t, 0]) * _smoothstep(np.array((k - enter - hold + 1) / leave))
    photo = _photo(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))])
    tw = int(np.ceil(width)) + 2
    y0, x0 = int(rng.integers(0, photo.shape[0] - H)), int(rng.integers(0, photo.shape[1] - tw))
    texture = photo[y0:y0 + H, x0:x0 + tw] * _colour(rng) * 1.3
    return Occluder(x, width, np.clip(texture, 0, 1))


def _bar_coverage(occ: Occluder | None, t: int, W: int) -> np.ndarray:
    """Per image column, the fraction covered by the bar (exact area coverage)."""
    if occ is None:
        return np.zeros(W, np.float32)
    a, b = occ.x[t] - occ.width / 2, occ.x[t] + occ.width / 2
    cols = np.arange(W, dtype=np.float64)
    return np.clip(np.minimum(cols + 1, b) - np.maximum(cols, a), 0, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------------- clips

@dataclass
class Clip:
    """A rendered sequence and its exact annotation."""

    frames: list[np.ndarray]  # uint8 RGB
    boxes: np.ndarray  # (N, 4) int x, y, w, h of the visible pixels, 0 when absent
    ratio: np.ndarray  # (N,) visible fraction of the target's pixels
    inside: np.ndarray  # (N,) fraction of the target's pixels inside the image
    cut: np.ndarray  # (N,) bool: part of the target is outside the image
    look: Look
    backgrounds: list[np.ndarray] | None = None  # the frames rendered without the target (for tests)

    @property
    def absent(self) -> np.ndarray:
        return self.ratio < ABSENT_RATIO

    @property
    def out_of_view(self) -> np.ndarray:
        return self.inside < ABSENT_RATIO


def render_clip(rng: np.random.Generator, n: int, *, occlude: bool = False, exit_mode: str | None = None,
                with_backgrounds: bool = False) -> Clip:
    """Render ``n`` frames; ``exit_mode`` None, 'partial' or 'full'; the target is fully visible in frame 1."""
    W = 2 * int(rng.integers(56, 73))
    H = 2 * round(W * rng.uniform(0.68, 0.8) / 2)
    base = rng.uniform(0.17, 0.3) * H
    path = _walk(rng, n, W, H, base, float(np.exp(rng.uniform(-0.6, 0.6))))
    if exit_mode is not None:
        _excursion(rng, path, W, H, exit_mode == "full")
    occ = _occluder(rng, path, W, H) if occlude else None
    look = _look(rng)
    others = [(_look(rng), _walk(rng, n, W, H, base * rng.uniform(0.7, 1.3), float(np.exp(rng.uniform(-0.6, 0.6)))))
              for _ in range(int(rng.integers(1, 3)))]
    if rng.random() < 0.5:  # a distractor of the target's shape: appearance, not outline, must tell them apart
        others[0][0].shape = look.shape
    bg = _background(rng, n, W, H)
    frames, backgrounds = [], []
    boxes, ratio, inside, cut = np.zeros((n, 4), np.int64), np.zeros(n), np.zeros(n), np.zeros(n, bool)
    for t in range(n):
        frame = bg[t].copy()
        for other_look, other_path in others:
            _paste(frame, _sprite(other_look, *other_path[t]))
        sp = _sprite(look, *path[t])
        bar = _bar_coverage(occ, t, W)
        if with_backgrounds:
            backgrounds.append(_finish(_draw_bar(frame.copy(), occ, t, bar)))
        _paste(frame, sp)
        frames.append(_finish(_draw_bar(frame, occ, t, bar)))
        boxes[t], ratio[t], inside[t], cut[t] = _annotate(sp, bar, W, H)
    return Clip(frames, boxes, ratio, inside, cut, look, backgrounds if with_backgrounds else None)


def _annotate(sp: Sprite, bar: np.ndarray, W: int, H: int):
    """Visible box, visible ratio, inside ratio, cut flag from the sprite's coverage and the bar's."""
    obj = sp.alpha >= 0.5
    total = max(int(obj.sum()), 1)
    ys, xs = np.mgrid[sp.y0:sp.y0 + obj.shape[0], sp.x0:sp.x0 + obj.shape[1]]
    in_img = (xs >= 0) & (xs < W) & (ys >= 0) & (ys < H)
    inside = obj & in_img
    visible = inside & (bar[np.clip(xs, 0, W - 1)] < 0.5)
    ratio = visible.sum() / total
    box = np.zeros(4, np.int64)
    if ratio >= ABSENT_RATIO:
        cols, rows = xs[visible], ys[visible]
        box[:] = cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1
    return box, ratio, inside.sum() / total, bool((obj & ~in_img).any())


def _draw_bar(frame: np.ndarray, occ: Occluder | None, t: int, bar: np.ndarray) -> np.ndarray:
    if occ is None or not bar.any():
        return frame
    x0 = int(np.floor(occ.x[t] - occ.width / 2))
    cols = np.arange(frame.shape[1])
    tex = occ.texture[:, np.clip(cols - x0, 0, occ.texture.shape[1] - 1)]
    a = bar[None, :, None]
    return frame * (1 - a) + tex * a


def _background(rng: np.random.Generator, n: int, W: int, H: int) -> list[np.ndarray]:
    """A photo panned and zoomed slowly (float32 RGB frames); grey photos get a colour tint."""
    name = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    photo = _photo(name)
    need = max(W, H) + 90
    scale = rng.uniform(need / min(photo.shape[:2]), max(need / min(photo.shape[:2]), 0.9))
    img = cv2.resize(photo, (round(photo.shape[1] * scale), round(photo.shape[0] * scale)),
                     interpolation=cv2.INTER_AREA)
    if np.allclose(photo[..., 0], photo[..., 1]):
        img = img * (0.55 + 0.45 * _colour(rng))
    img = (0.25 + 0.6 * img).astype(np.float32)  # lower contrast: the objects stand out, as in most real videos
    ih, iw = img.shape[:2]
    pos = np.array([rng.uniform(40, iw - W - 40), rng.uniform(40, ih - H - 40)])
    vel, log_z = rng.normal(0, 0.5, 2), 0.0
    out = []
    for _ in range(n):
        z = np.exp(log_z)
        # zoom about the window centre: src = pos + (dst - c) / z + c
        c = np.array([W / 2, H / 2])
        m = np.array([[z, 0, -z * (pos[0] + c[0]) + c[0]], [0, z, -z * (pos[1] + c[1]) + c[1]]])
        out.append(cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
        vel = 0.95 * vel + rng.normal(0, 0.15, 2)
        pos = np.clip(pos + vel, [5, 5], [iw - W - 5, ih - H - 5])
        log_z = float(np.clip(log_z + rng.normal(0, 0.01), -0.06, 0.06))
    return out


def _finish(frame: np.ndarray) -> np.ndarray:
    return (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)


def _events(i: int) -> dict:
    """Which events sequence ``i`` gets: every dataset has occlusions, partial and full exits."""
    return {"occlude": i % 2 == 0, "exit_mode": (None, "partial", "full")[i % 3]}


def _write_jpegs(folder: Path, frames: list[np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for j, frame in enumerate(frames):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError(f"could not encode frame {j + 1} for {folder}")
        (folder / f"{j + 1:08d}.jpg").write_bytes(buf.tobytes())


def cover_level(ratio: float) -> int:
    """GOT-10k's cover level of a visible ratio: 0 = 0%, 1..7 = (0,15%], (15,30%], ... (90,100%), 8 = 100%."""
    if ratio <= 0:
        return 0
    if ratio >= 1:
        return 8
    return min(7, int(np.ceil(ratio / 0.15 - 1e-9)))


# --------------------------------------------------------------------------------------------------- GOT-10k

def make_got10k(out_dir: Path, seed: int = 0) -> None:
    """Write a mini GOT-10k: ``<out_dir>/{train,val,test}/list.txt`` and the sequence folders."""
    out_dir = Path(out_dir)
    for split_id, (split, count, frames) in enumerate(GOT10K_SPLITS):
        names = []
        for i in range(count):
            rng = np.random.default_rng([seed, 0, split_id, i])
            name = f"GOT-10k_{split.capitalize()}_{i + 1:06d}"
            clip = render_clip(rng, frames + int(rng.integers(-4, 5)), **_events(i))
            folder = out_dir / split / name
            _write_jpegs(folder, clip.frames)
            absent = clip.absent
            boxes = np.where(absent[:, None], -1, clip.boxes)
            gt = "".join(f"{x:.4f},{y:.4f},{w:.4f},{h:.4f}\n" for x, y, w, h in boxes.astype(np.float64))
            H, W = clip.frames[0].shape[:2]
            if split == "test":
                (folder / "groundtruth.txt").write_text(gt.splitlines(keepends=True)[0])
                (folder / "meta_info.ini").write_text(_meta(rng, name, W, H, len(clip.frames), classes=False))
            else:
                (folder / "groundtruth.txt").write_text(gt)
                (folder / "absence.label").write_text("".join(f"{int(a)}\n" for a in absent))
                (folder / "cover.label").write_text(
                    "".join(f"{0 if a else cover_level(r)}\n" for a, r in zip(absent, clip.ratio)))
                (folder / "cut_by_image.label").write_text("".join(f"{int(c)}\n" for c in clip.cut))
                (folder / "meta_info.ini").write_text(_meta(rng, name, W, H, len(clip.frames), classes=True))
            names.append(name)
        write_text_atomic(out_dir / split / "list.txt", "".join(f"{n}\n" for n in names))  # last: marks the split done


def _meta(rng: np.random.Generator, name: str, W: int, H: int, n: int, classes: bool) -> str:
    begin = int(rng.integers(0, 600))
    end = begin + int(np.ceil(n / 10))  # annotated at 10 Hz
    lines = ["[METAINFO]", f"url: https://example.com/mini-got10k/{name}", f"begin: {_clock(begin)}",
             f"end: {_clock(end)}", "anno_fps: 10Hz"]
    if classes:
        obj, major, root, motion = GOT10K_CLASSES[int(rng.integers(len(GOT10K_CLASSES)))]
        lines += [f"object_class: {obj}", f"motion_class: {motion}", f"major_class: {major}",
                  f"root_class: {root}", f"motion_adverb: {ADVERBS[int(rng.integers(len(ADVERBS)))]}"]
    lines.append(f"resolution: ({W}, {H})")
    return "\n".join(lines) + "\n"


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# --------------------------------------------------------------------------------------------------- LaSOT

def make_lasot(out_dir: Path, seed: int = 0) -> None:
    """Write a mini LaSOT: ``<category>/<category>-<k>/`` folders plus testing_set.txt and training_set.txt."""
    out_dir = Path(out_dir)
    testing, training = [], []
    for c, category in enumerate(LASOT_CATEGORIES):
        test_ks = 1 + np.random.default_rng([seed, 1, c]).choice(LASOT_PER_CATEGORY, LASOT_TEST_PER_CATEGORY,
                                                                 replace=False)
        for k in range(1, LASOT_PER_CATEGORY + 1):
            i = c * LASOT_PER_CATEGORY + k - 1
            rng = np.random.default_rng([seed, 1, 0, i])
            name = f"{category}-{k}"
            clip = render_clip(rng, LASOT_FRAMES + int(rng.integers(-4, 5)), **_events(i))
            folder = out_dir / category / name
            _write_jpegs(folder / "img", clip.frames)
            absent, out_of_view = clip.absent, clip.out_of_view
            boxes = np.where(absent[:, None], 0, clip.boxes)
            (folder / "groundtruth.txt").write_text("".join(f"{x},{y},{w},{h}\n" for x, y, w, h in boxes))
            (folder / "full_occlusion.txt").write_text(",".join(str(int(v)) for v in absent & ~out_of_view) + "\n")
            (folder / "out_of_view.txt").write_text(",".join(str(int(v)) for v in out_of_view) + "\n")
            colour, pattern = clip.look.words
            (folder / "nlp.txt").write_text(f"{colour} {SHAPES[clip.look.shape]} {category} with a {pattern} "
                                            "pattern moving in front of the scene\n")
            (testing if k in test_ks else training).append(name)
    write_text_atomic(out_dir / "training_set.txt", "".join(f"{n}\n" for n in training))
    write_text_atomic(out_dir / "testing_set.txt", "".join(f"{n}\n" for n in testing))
