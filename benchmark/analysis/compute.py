"""The computing half of ``benchmark analyze``: images in, per-model attention statistics, layer CKA and AvgDist out.

Streaming: the images are read, transformed and pushed through each model one batch at a time. Every attention map
is reduced to per-head numbers inside its hook (benchmark.analysis.capture), so at most one layer's map of one
batch exists at any moment; CKA keeps only its running HSIC sums (benchmark.analysis.metrics.MinibatchCKA). The one
thing kept across batches is the first model's pooled block features (images × Σ block widths floats, 4.7 MB for
128 images of a ViT-B), needed to pair its minibatches with the second model's for the cross-model CKA.

The results come back as an :class:`Analysis` (one :class:`AnalysedModel` per checkpoint);
:mod:`benchmark.analysis.report` writes them as CSVs, plots and a Markdown report.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import fashion_mnist
from ..checkpoint import build_model, load_backbone, load_canonical
from ..errors import BenchmarkError, DataError
from ..features import eval_transform
from . import capture, metrics

log = logging.getLogger("benchmark.analysis")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)
MASK_PATCHES = (4, 8, 16, 32)
MIN_BATCH = 4  # the unbiased HSIC of minibatch CKA divides by n - 3
STATS = capture.STATS  # 'distance', 'entropy', 'diversity'


# ------------------------------------------------------------------------------------------------------ results
@dataclass
class AnalysedModel:
    """One analysed checkpoint: per layer and head the mean attention statistics, and its layer-by-layer CKA."""

    name: str                               # label (a safe file-name part)
    path: str                               # the checkpoint file
    arch: str
    method: str
    img_size: int
    patch_size: int
    layers: list[str]                       # attention layer names, forward order
    images: int                             # images the statistics are averaged over
    stats: dict[str, list[np.ndarray]]      # STATS key -> per layer, (heads,) float64 mean over the images
    cka: np.ndarray                         # (layers, layers) linear CKA between the block outputs
    seconds: float = 0.0

    @property
    def n_layers(self) -> int:
        return len(self.layers)


@dataclass
class AvgDistPoint:
    """SimMIM's AvgDist at one (mask ratio, mask patch) of the first model's geometry (NaN where undefined)."""

    ratio: float
    mask_patch: int
    avg_dist_mean: float
    avg_dist_std: float
    img_size: int
    model_patch: int


@dataclass
class Analysis:
    """Everything ``benchmark analyze`` measured; ``cross_cka`` (models[0] layers × models[1] layers) only with two
    or more models, ``avgdist`` empty when switched off."""

    models: list[AnalysedModel]
    cross_cka: np.ndarray | None
    avgdist: list[AvgDistPoint] = field(default_factory=list)
    source: str = ""                        # what the images were, for the report
    batch_size: int = 0
    device: str = "cpu"
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------------ images
class FolderImages:
    """The first ``n`` images (jpg/jpeg/png, recursive, sorted by relative path) of a folder."""

    def __init__(self, root: Path, n: int):
        root = Path(root)
        if not root.exists():
            raise DataError(f"image folder not found: {root}", "pass --images DIR with .jpg/.png files, or --data mini")
        if not root.is_dir():
            raise DataError(f"--images must be a folder, got the file {root}", "pass the folder that holds the images")
        files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: p.relative_to(root).as_posix())
        if not files:
            raise DataError(f"no images (.jpg/.jpeg/.png) in {root}", "add images or pass --data mini")
        if len(files) < n:
            raise DataError(f"{root} holds {len(files)} images, fewer than the {n} asked for",
                            f"lower --num-images to at most {len(files)} or add images")
        self.files = files[:n]
        self.description = f"the first {n} of {len(files)} images (sorted) in `{root}`"

    def __len__(self) -> int:
        return len(self.files)

    def batch(self, idx: list[int], size: int) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        transform = eval_transform(size, crop_pct=1.0)  # short side to size (bicubic), centre crop, ImageNet stats
        out = []
        for i in idx:
            try:
                with Image.open(self.files[i]) as im:
                    out.append(transform(im.convert("RGB")))
            except (OSError, UnidentifiedImageError) as exc:
                raise DataError(f"cannot read image {self.files[i]}: {exc}", "remove or replace the file") from exc
        return torch.stack(out)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class MiniImages:
    """The real Fashion-MNIST test images: deterministic and class-balanced (round robin over the classes, each
    class in file order), grey rendered as RGB at the model's size (bilinear), ImageNet mean/std."""

    def __init__(self, n: int):
        root = fashion_mnist.DEBIAN_ROOT
        if not all((root / f).exists() for f in fashion_mnist.FILES["test"]):
            raise DataError(f"the real Fashion-MNIST files are not in {root}", fashion_mnist.INSTALL_FIX)
        images, labels = fashion_mnist.load_split(root, "test")
        if len(images) < n:
            raise DataError(f"Fashion-MNIST test holds {len(images)} images, fewer than the {n} asked for",
                            f"lower --num-images to at most {len(images)} or use --images DIR")
        per_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        order = [idx[i] for i in range(max(map(len, per_class))) for idx in per_class if i < len(idx)]
        self.images = images[np.asarray(order[:n])]
        self.description = (f"{n} Fashion-MNIST test images (real data; class-balanced, the first of each class "
                            f"in file order), grey as RGB")

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: list[int], size: int) -> torch.Tensor:
        x = torch.from_numpy(self.images[idx]).float().div_(255).unsqueeze(1)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return _normalize(x.expand(-1, 3, -1, -1))


def batches(n: int, batch_size: int) -> list[list[int]]:
    """Consecutive index batches; a last batch smaller than MIN_BATCH joins the one before (minibatch CKA)."""
    out = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) < MIN_BATCH:
        out[-2].extend(out.pop())
    return out


# ---------------------------------------------------------------------------------------------------- checks
def model_names(ckpts: list[Path], names: list[str] | None) -> list[str]:
    """One distinct, file-name-safe label per checkpoint: ``names`` (must be distinct) or the file stems."""
    if names:
        if len(names) != len(ckpts):
            raise BenchmarkError(f"{len(names)} --name for {len(ckpts)} --ckpt", "give one --name per --ckpt, or none")
        raw = list(names)
    else:
        raw = [Path(c).stem for c in ckpts]
    safe = [re.sub(r"[^\w.-]+", "_", n).strip("._") or "model" for n in raw]
    if names and len(set(safe)) != len(safe):
        raise BenchmarkError(f"model names {raw} are not distinct (as file names: {safe})", "give distinct --name")
    out: list[str] = []
    for s in safe:  # default names from file stems: make them distinct
        cand, k = s, 2
        while cand in out:
            cand, k = f"{s}_{k}", k + 1
        out.append(cand)
    return out


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise BenchmarkError(f"unknown device {device!r}", "use cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("--device cuda but no CUDA GPU is visible", "use --device cpu")
    return dev


def _check_models(ckpts: list[Path]) -> None:
    """Fail before any compute: every checkpoint readable, canonical and with attention layers."""
    for p in ckpts:
        ckpt = load_canonical(p)
        model = build_model(ckpt.meta)
        model.mim_meta = ckpt.meta
        capture.attention_layers(model, name=str(p))
        del model


# ------------------------------------------------------------------------------------------------------ compute
def compute(ckpts: list[Path], images: Path | None = None, mini: bool = False, num_images: int = 128,
            batch_size: int = 16, device: str = "cpu", names: list[str] | None = None,
            avgdist: bool = True) -> Analysis:
    """Every analysis of ``ckpts`` (canonical checkpoints) on ``num_images`` images of the folder ``images`` or of
    the real Fashion-MNIST test split (``mini``). Bad input raises BenchmarkError before any model runs."""
    t0 = time.time()
    ckpts = [Path(c) for c in ckpts]
    if not ckpts:
        raise BenchmarkError("no checkpoint to analyse", "pass --ckpt FILE (repeatable)")
    if (images is None) == (not mini):
        raise BenchmarkError("give exactly one image source", "pass --images DIR or --data mini")
    if num_images < MIN_BATCH:
        raise BenchmarkError(f"--num-images {num_images} is too few: minibatch CKA needs at least {MIN_BATCH}",
                             "use --num-images 128 (the ViT paper's count) or at least 4")
    if batch_size < MIN_BATCH:
        raise BenchmarkError(f"--batch-size {batch_size} is too small: minibatch CKA needs at least {MIN_BATCH} "
                             "images per batch", "use --batch-size 16")
    labels = model_names(ckpts, names)
    dev = _device(device)
    source = FolderImages(images, num_images) if images is not None else MiniImages(num_images)
    _check_models(ckpts)
    plan = batches(len(source), batch_size)

    models: list[AnalysedModel] = []
    first_feats: list[list[torch.Tensor]] = []   # model 0's features per batch, for the cross-model CKA
    cross: metrics.MinibatchCKA | None = None
    for mi, (path, name) in enumerate(zip(ckpts, labels)):
        tm = time.time()
        model = load_backbone(path).to(dev).eval()
        meta = model.mim_meta
        layers = capture.attention_layers(model, name=str(path))
        size = int(meta["img_size"])
        sums = {k: [torch.zeros(layer.num_heads, dtype=torch.float64) for layer in layers] for k in STATS}
        count = 0
        within = metrics.MinibatchCKA(len(layers))
        keep = mi == 0 and len(ckpts) >= 2
        pair = mi == 1 and len(first_feats) == len(plan)
        if pair:
            cross = metrics.MinibatchCKA(models[0].n_layers, len(layers))
        for bi, idx in enumerate(plan):
            x = source.batch(idx, size).to(dev)
            stats, feats = capture.collect(model, x, name=str(path))
            for k in STATS:
                for li, v in enumerate(stats[k]):
                    sums[k][li] += v
            count += stats["count"]
            within.update(feats)
            if keep:
                first_feats.append(feats)
            if pair:
                cross.update(first_feats[bi], feats)
        models.append(AnalysedModel(
            name=name, path=str(path), arch=str(meta.get("arch")), method=str(meta.get("method", "")),
            img_size=size, patch_size=int(meta.get("patch_size", 0)), layers=[layer.name for layer in layers],
            images=count, stats={k: [(s / count).numpy() for s in sums[k]] for k in STATS}, cka=within.compute(),
            seconds=time.time() - tm))
        log.info("analysed %s (%s, %d layers, %d images) in %.1f s", name, meta.get("arch"), len(layers), count,
                 time.time() - tm)
        del model
        if mi >= 1:
            first_feats = []

    return Analysis(models=models, cross_cka=cross.compute() if cross is not None else None,
                    avgdist=avgdist_grid(models[0]) if avgdist else [], source=source.description,
                    batch_size=batch_size, device=str(dev), seconds=time.time() - t0)


def avgdist_grid(model: AnalysedModel) -> list[AvgDistPoint]:
    """SimMIM AvgDist on the grid RATIOS × MASK_PATCHES at ``model``'s geometry. Mask patches that do not divide the
    image, are smaller than the model patch, or are not a multiple of it are skipped; a point where every pixel
    ends up masked (a 1-cell grid) is kept with NaN (AvgDist is undefined there)."""
    img, patch = model.img_size, model.patch_size
    rows = []
    for ratio in RATIOS:
        for mp in MASK_PATCHES:
            if img % mp or mp < patch or mp % patch:
                continue
            try:
                row = metrics.avg_dist_grid(img, patch, [ratio], [mp])[0]
                mean, std = row["avg_dist_mean"], row["avg_dist_std"]
            except ValueError:
                mean = std = float("nan")
            rows.append(AvgDistPoint(float(ratio), int(mp), float(mean), float(std), img, patch))
    return rows
