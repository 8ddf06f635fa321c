"""The registered parts of the semantic fine-tune (model, dataset, metric, transforms): imported only when a
fine-tune runs, so declaring and validating its parameters (tasks/semantic/finetune.py) stays light."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import METRICS, MODELS
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import Dataset

from benchmark.backbone import MIMBackbone
from benchmark.errors import BenchmarkError, DataError
from benchmark.features import eval_transform, pool_features

from .common import CorruptCounter, CorruptImage, Split
from .metrics import map11, mean_per_class_accuracy, top1

log = logging.getLogger(__name__)

METRIC_NAMES = ("top1", "mean_per_class_acc", "map11")

# ----------------------------------------------------------------------------------------------------------------
# model

class _PooledBackbone(MIMBackbone):
    """MIMBackbone read as a classifier trunk: mean of the final-normed patch tokens (ViT and Swin alike).

    Kept a MIMBackbone so the harness's layer-decay constructor, ``init_weights`` (re-loads the checkpoint rather
    than re-initialising timm's trunk) and ``export_backbone`` work unchanged. The dense pyramid of plain ViTs is
    dropped: unused parameters would break DDP and only waste optimizer state.
    """

    def __init__(self, checkpoint: str, drop_path_rate: float, allow_partial: bool):
        super().__init__(checkpoint, out_indices=(3,), drop_path_rate=drop_path_rate, allow_partial=allow_partial)
        if hasattr(self, "pyramid"):
            del self.pyramid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mean pooling as the linear probes (benchmark.features.pool_features), not timm's
        # global_pool='avg' head: for ViT that swaps the pre-trained final norm for a fresh fc_norm, so the
        # checkpoint would no longer fill the model; the CLS token is never trained by MIM pre-training.
        return pool_features(self.trunk, x)


@MODELS.register_module(name="SemanticFinetuneClassifier")
class FinetuneClassifier(BaseModel):
    """Backbone + linear head as an mmengine model; mixup / cutmix are applied here, on the device batch.

    ``forward(inputs, data_samples, mode)``: ``data_samples`` is the collated dict of the dataset (``label``, and
    ``valid`` for test samples). 'loss' -> {'loss'}; 'predict' -> one dict per sample for ``FinetuneMetric``.
    """

    def __init__(self, checkpoint: str, num_classes: int, drop_path_rate: float = 0.1, allow_partial: bool = False,
                 multilabel: bool = False, smoothing: float = 0.1, mixup: float = 0.0, cutmix: float = 0.0,
                 data_preprocessor: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.backbone = _PooledBackbone(checkpoint, drop_path_rate, allow_partial)
        width = int(self.backbone.trunk.num_features)
        self.head = nn.Linear(width, int(num_classes))
        # BEiT / SimMIM: trunc-normal(0.02) scaled by init_scale 0.001, i.e. std 2e-5; zero bias
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)
        self.multilabel = bool(multilabel)
        mixing = not self.multilabel and (mixup > 0 or cutmix > 0)
        self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=smoothing,
                           num_classes=int(num_classes)) if mixing else None
        if self.multilabel:
            self.criterion: nn.Module = nn.BCEWithLogitsLoss()
        elif mixing:
            self.criterion = SoftTargetCrossEntropy()  # Mixup already smooths the targets
        else:
            self.criterion = LabelSmoothingCrossEntropy(smoothing)

    def forward(self, inputs: torch.Tensor, data_samples: dict | None = None, mode: str = "tensor"):
        if mode == "loss":
            x, y = inputs, data_samples["label"]
            if self.mixup is not None:
                x, y = self.mixup(x, y)
            return {"loss": self.criterion(self.head(self.backbone(x)), y)}
        logits = self.head(self.backbone(inputs))
        if mode == "tensor":
            return logits
        return self._predictions(logits.float(), data_samples)

    def _predictions(self, logits: torch.Tensor, data_samples: dict) -> list[dict]:
        # single-label keeps the argmax only: full logits of iNat's 8,142 classes would not fit in host memory
        labels, valid = data_samples["label"].cpu().numpy(), data_samples["valid"].cpu().numpy()
        if self.multilabel:
            out = torch.sigmoid(logits).cpu().numpy()
            return [dict(score=s, label=y, valid=bool(v)) for s, y, v in zip(out, labels, valid)]
        pred = logits.argmax(1).cpu().numpy()
        return [dict(pred=int(p), label=int(y), valid=bool(v)) for p, y, v in zip(pred, labels, valid)]


# ----------------------------------------------------------------------------------------------------------------
# data

class SplitDataset(Dataset):
    """A ``Split`` as mmengine samples ``{'inputs': CHW tensor, 'data_samples': {'label', ['valid']}}``.

    Training: an unreadable image is replaced by the next readable index (the epoch keeps its length and batch
    shape) and counted once. Test: it yields a blank image flagged ``valid=False`` that the metric leaves out, so
    every index still produces one result (mmengine's DDP result collection relies on that).
    With loader workers each worker counts what it reads, so the 1 % threshold is checked per worker.
    """

    def __init__(self, split: Split, transform, *, train: bool, size: int):
        self.split, self.transform, self.train, self.size = split, transform, train, size
        self.counter = CorruptCounter(split.name or ("training split" if train else "test split"), len(split))
        self._bad: set[int] = set()  # an unreadable training image is met every epoch: count it once

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        return self._train_item(i) if self.train else self._test_item(i)

    def _load(self, i: int) -> Image.Image | None:
        try:
            return self.split.load(i)
        except CorruptImage as exc:
            if i not in self._bad:
                self._bad.add(i)
                self.counter.add(exc)
            return None

    def _train_item(self, i: int) -> dict:
        n = len(self.split)
        for j in (k % n for k in range(i, i + n)):
            img = self._load(j)
            if img is not None:
                labels = self.split.labels[j]
                # multi-label: BCE target 1 for present, 0 for absent and difficult
                target = torch.from_numpy((labels == 1).astype(np.float32)) if self.split.multilabel \
                    else torch.tensor(int(labels))
                return dict(inputs=self.transform(img), data_samples=dict(label=target))
        raise DataError(f"{self.counter.split_name}: no image can be decoded", "re-download the dataset")

    def _test_item(self, i: int) -> dict:
        img = self._load(i)
        x = self.transform(img) if img is not None else torch.zeros(3, self.size, self.size)
        return dict(inputs=x, data_samples=dict(label=torch.as_tensor(self.split.labels[i]), valid=img is not None))


def _posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize op with the Pillow semantics SimMIM's fine-tuning ran with: 0 bits kept is a black image.

    ``rand-m9-mstd0.5-inc1`` draws the magnitude from N(9, 0.5) clipped to [0, 10]; at 10, PosterizeIncreasing keeps
    0 bits, which Pillow >= 10 refuses with a ValueError ("bits must be between or equal to 1 and 8") — about once in
    a few thousand images, i.e. a crash hours into a full fine-tune. Older Pillow masked every bit away."""
    from PIL import ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _patch_posterize() -> None:
    from timm.data import auto_augment

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        auto_augment.NAME_TO_OP[name] = _posterize


def transforms(p: dict, size: int) -> tuple[Any, Any]:
    """timm's ImageNet train / eval transforms as SimMIM's fine-tuning builds them.

    Normalisation is ImageNet's: the statistics the suite's and SimMIM's pre-training use, and those of the other
    adapters; timm's ``pretrained_cfg`` describes timm's own weights (e.g. augreg's 0.5 / 0.5), not the checkpoint's.
    """
    common = dict(input_size=size, interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    _patch_posterize()  # before RandAugment binds its ops
    train = create_transform(is_training=True, auto_augment=p["auto_augment"] or None, re_prob=float(p["reprob"]),
                             re_mode="pixel", re_count=1, **common)
    return train, eval_transform(size, float(p["crop_pct"]))


# ----------------------------------------------------------------------------------------------------------------
# metric

def score(metric: str, results: list[dict]) -> dict[str, float]:
    """The requested metric (and top-1 for single-label tasks) over per-sample results, in percent."""
    if metric == "map11":
        value, _ = map11(np.stack([r["score"] for r in results]), np.stack([r["label"] for r in results]))
        return {"map11": float(value)}
    pred = np.array([r["pred"] for r in results])
    y = np.array([r["label"] for r in results])
    out = {"top1": float(top1(pred, y))}
    if metric == "mean_per_class_acc":
        out[metric] = float(mean_per_class_accuracy(pred, y))
    return out


@METRICS.register_module(name="SemanticFinetuneMetric")
class FinetuneMetric(BaseMetric):
    """Scores the test split with tasks.semantic.metrics, leaving out the images that could not be decoded."""

    default_prefix = None  # runner.test() returns the spec's metric names as they are

    def __init__(self, metric: str, collect_device: str = "cpu", prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metric = metric

    def process(self, data_batch: Any, data_samples: list[dict]) -> None:
        self.results.extend(data_samples)

    def compute_metrics(self, results: list) -> dict[str, float]:
        valid = [r for r in results if r["valid"]]
        if len(valid) < len(results):
            log.warning("%d of %d test images could not be decoded and are left out of the score",
                        len(results) - len(valid), len(results))
        return {**score(self.metric, valid), "unreadable": float(len(results) - len(valid))}


# ----------------------------------------------------------------------------------------------------------------
# the run

def _check(train: Split, test: Split, metric: str) -> None:
    if metric not in METRIC_NAMES:
        raise BenchmarkError(f"unknown fine-tune metric '{metric}'", f"use one of {', '.join(METRIC_NAMES)}")
    if (metric == "map11") != train.multilabel or train.multilabel != test.multilabel:
        raise BenchmarkError(f"metric '{metric}' does not fit {train.name or 'the split'} "
                             f"({'multi' if train.multilabel else 'single'}-label)",
                             "map11 is for multi-label splits, top1 / mean_per_class_acc for single-label ones")
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"empty split ({len(train)} training / {len(test)} test images)", "check the dataset")


