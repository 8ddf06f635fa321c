"""Real images for the semantic mini datasets: Fashion-MNIST (Debian's package) and scikit-learn's digits.

Every mini dataset (K12 layouts, iNat JSON, CoG pickles) is filled from one pool of up to 20 real classes, the 10
Fashion-MNIST classes and the 10 digits, rendered as small RGB images so that a backbone that has learned anything
about shapes scores higher than a random one. Deterministic: the same (seed, dataset) gives the same pixels.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from benchmark import fashion_mnist

FASHION_ROOT = fashion_mnist.DEBIAN_ROOT
FASHION_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
DIGIT_CLASSES = tuple(f"digit_{d}" for d in range(10))
POOL_CLASSES = FASHION_CLASSES + DIGIT_CLASSES
SIZE = 32


@lru_cache(maxsize=1)
def _sources() -> tuple[list[np.ndarray], ...]:
    """Per pool class, the grey uint8 images available (Fashion-MNIST train+test, digits 8x8 scaled to 0..255)."""
    from sklearn.datasets import load_digits

    fashion_mnist.require(FASHION_ROOT)
    out: list[list[np.ndarray]] = [[] for _ in POOL_CLASSES]
    for split in ("train", "test"):
        images, labels = fashion_mnist.load_split(FASHION_ROOT, split)
        for c in range(10):
            out[c].extend(images[labels == c][:2000])
    digits = load_digits()
    for img, y in zip(digits.images, digits.target):
        out[10 + int(y)].append(np.clip(img * 16, 0, 255).astype(np.uint8))
    return tuple(out)


def render(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grey source image -> SIZE x SIZE RGB: random tint, small shift, a little noise (uint8)."""
    img = cv2.resize(grey, (SIZE - 4, SIZE - 4), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    canvas = np.zeros((SIZE, SIZE), np.float32)
    dy, dx = rng.integers(0, 5, size=2)
    canvas[dy:dy + SIZE - 4, dx:dx + SIZE - 4] = img
    # mild colour: a light, slightly tinted figure on a dark background (strong random colours would dominate the
    # pooled features of a tiny backbone and hide the shape, which is what the classes differ in)
    fg, bg = rng.uniform(0.8, 1.0, 3), rng.uniform(0.0, 0.12, 3)
    rgb = bg[None, None] * (1 - canvas[..., None]) + fg[None, None] * canvas[..., None]
    rgb += rng.normal(0, 0.02, rgb.shape)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def sample(pool_class: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` distinct RGB images of pool class ``pool_class`` (0-9 Fashion-MNIST, 10-19 digits)."""
    src = _sources()[pool_class]
    idx = rng.choice(len(src), size=n, replace=n > len(src))
    return [render(src[i], rng) for i in idx]


def class_pool(n_classes: int) -> list[int]:
    """The pool classes a mini dataset with ``n_classes`` classes uses (n <= 20)."""
    if not 1 <= n_classes <= len(POOL_CLASSES):
        raise ValueError(f"mini datasets have 1..{len(POOL_CLASSES)} classes, not {n_classes}")
    return list(range(n_classes))


def save_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
