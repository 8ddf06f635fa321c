"""Fashion-MNIST linear probe: the suite's smoke task on real data (Debian package ``dataset-fashion-mnist``).

Layout (the original IDX files, gzip-compressed, as Zalando ships them and Debian installs them in
/usr/share/datasets/fashion-mnist)::

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz  t10k-images-idx3-ubyte.gz  t10k-labels-idx1-ubyte.gz

``--data mini`` writes a class-balanced subset of the real files in the same layout.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from benchmark.data import fingerprint
from benchmark.errors import DataError
from benchmark.registry import TaskSpec
from tasks.base import TaskAdapter
from tasks.classification import linear_probe as lp

FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
MINI_SIZES = {"train": 2000, "test": 500}


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
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wb") as fh:
        fh.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    os.replace(tmp, path)


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = (read_idx(root / f) for f in FILES[split])
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"{root}: {split} images {images.shape} and labels {labels.shape} do not match",
                        "the IDX files are damaged; reinstall dataset-fashion-mnist")
    return images, labels.astype(np.int64)


class FashionMNISTProbe(TaskAdapter):
    @classmethod
    def make_mini(cls, spec: TaskSpec, out_dir: Path, seed: int) -> None:
        if not all((DEBIAN_ROOT / f).exists() for pair in FILES.values() for f in pair):
            raise DataError(f"the real Fashion-MNIST files are not in {DEBIAN_ROOT}",
                            "install them: apt-get install dataset-fashion-mnist (`make setup` does this)")
        out_dir.mkdir(parents=True, exist_ok=True)
        for split, (img_file, lbl_file) in FILES.items():
            images, labels = load_split(DEBIAN_ROOT, split)
            idx = lp.stratified_subset(labels, MINI_SIZES[split], seed=seed)
            write_idx(out_dir / img_file, images[idx])
            write_idx(out_dir / lbl_file, labels[idx].astype(np.uint8))

    def transform(self, model) -> callable:
        """uint8 (N, 28, 28) -> normalised float (N, 3, S, S) at the backbone's input size."""
        size = int(model.mim_meta["img_size"])
        # ImageNet mean/std, as SimMIM pre-training (timm's pretrained_cfg says 0.5/0.5 for ViTs)
        mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)

        def apply(batch: torch.Tensor) -> torch.Tensor:
            x = batch.float().div_(255).unsqueeze(1)
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            return (x.expand(-1, 3, -1, -1) - mean) / std

        return apply

    def features(self, model, split: str, images: np.ndarray, data_id: str) -> torch.Tensor:
        ctx = self.ctx
        pool = ctx.params.get("pool", "avg")
        key = lp.cache_key("fashion_mnist", ctx.ckpt_sha256, data_id, split, len(images), "gray3-bilinear-imagenet-meanstd",
                           int(model.mim_meta["img_size"]), pool)
        base = {"train": 0.0, "test": 0.35}[split]

        def compute() -> torch.Tensor:
            return lp.extract_features(model, images, self.transform(model), device=ctx.device,
                                       batch_size=int(ctx.params.get("extract_batch_size", 256)), pool=pool,
                                       progress=lambda f: ctx.progress(base + 0.35 * f, f"features {split}"))

        return lp.cached_features(ctx.cache_dir / "features", key, compute)

    def run(self) -> dict[str, float]:
        ctx, p = self.ctx, self.ctx.params
        data_id = fingerprint(ctx.spec, ctx.data_root)
        splits = {}
        for split, limit in (("train", p.get("train_limit", 0)), ("test", p.get("test_limit", 0))):
            images, labels = load_split(ctx.data_root, split)
            # --subset applies to each split; the preset's limits cap it further (both class-balanced).
            n = min(x for x in (ctx.subset, limit, len(labels)) if x) if (ctx.subset or limit) else 0
            idx = lp.stratified_subset(labels, n)
            splits[split] = (images[idx], torch.from_numpy(labels[idx]))
        model = ctx.load_backbone()
        feats = {s: self.features(model, s, splits[s][0], data_id) for s in splits}
        metrics, chosen = lp.probe(
            feats["train"], splits["train"][1], feats["test"], splits["test"][1], len(CLASSES),
            lrs=p["lrs"], wds=p["wds"], epochs=int(p["epochs"]), batch_size=int(p["batch_size"]),
            holdout=float(p.get("holdout", 0.2)), seed=ctx.seed,
            progress=lambda f, m: ctx.progress(0.7 + 0.3 * f, m))
        self.extra = chosen
        return self.finish(metrics)
