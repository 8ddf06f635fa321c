"""The real Fashion-MNIST as Debian's ``dataset-fashion-mnist`` installs it: the four gzip-compressed IDX files.

Shared by pre-training (SimMIM and supervised), the analyses (held-out images) and the Fashion-MNIST tasks::

    /usr/share/datasets/fashion-mnist/
        train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz  t10k-images-idx3-ubyte.gz  t10k-labels-idx1-ubyte.gz
"""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np

from .errors import DataError
from .files import write_bytes_atomic

FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
INSTALL_FIX = "install them: apt-get install dataset-fashion-mnist (`make setup` does this)"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally .gz): magic 0x00 0x00 <dtype 0x08=uint8> <ndim>, big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"magic {raw[:4].hex()} is not an unsigned-byte IDX file")
        dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return data.reshape(dims)
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}",
                        "reinstall the data (apt-get install --reinstall dataset-fashion-mnist)") from exc


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzip-compressed IDX file, atomically."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as fh:
        fh.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    write_bytes_atomic(path, buf.getvalue())


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of ``split`` ('train' | 'test') under ``root``."""
    images, labels = (read_idx(Path(root) / f) for f in FILES[split])
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"{root}: {split} images {images.shape} and labels {labels.shape} do not match",
                        "the IDX files are damaged; reinstall dataset-fashion-mnist")
    return images, labels.astype(np.int64)


def require(root: Path, splits: tuple[str, ...] = ("train", "test")) -> None:
    """DataError naming the missing files when ``root`` lacks any file of ``splits``."""
    missing = [f for s in splits for f in FILES[s] if not (Path(root) / f).exists()]
    if missing:
        raise DataError(f"Fashion-MNIST files not found in {root}: {', '.join(missing)}", INSTALL_FIX)
