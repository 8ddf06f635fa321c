"""End-to-end fine-tuning for the semantic classification tasks (K12, iNat18), on the trained-task harness.

The SimMIM fine-tune recipe (docs/protocols.md): linear warm-up then cosine to ``min_lr``; AdamW (wd 0.05) with
layer-wise lr decay (0.65 ViT-B / 0.9 Swin-B), lr 1.25e-3 per 512 images (SimMIM's base lr), gradient clipping 5.0;
drop path 0.1; RandAugment ``rand-m9-mstd0.5-inc1``, random erasing 0.25, mixup 0.8 / cutmix 1.0 with label
smoothing 0.1. Every knob is a declared parameter (``SemanticFinetune.params``).

Length: ``iters`` / ``warmup_iters`` (the harness's, in optimizer steps) win over ``epochs`` / ``warmup_epochs``.
The K12 ``paper`` preset uses Kornblith et al. 2019's step budget, the same for every dataset (20,000 steps at batch
256; warm-up 4,000 = SimMIM's 20 %, lr 6.25e-4 = SimMIM's base lr at 256), since an epoch of a small dataset is only
a few steps; iNat18's keeps SimMIM's ImageNet length (100 epochs, warm-up 20, batch 1024, lr 2.5e-3), which the
defaults below are.

Model: the checkpoint's timm trunk (through ``MIMBackbone``, so every backbone tensor must load and the harness's
layer-decay constructor, weight re-loading and backbone export apply), global average pooling of the final-normed
patch tokens and a fresh linear head. Multi-label VOC2007: sigmoid + BCE (difficult labels as negatives), no
mixing, 11-point mAP.

Unreadable images: a training sample is replaced by the next readable one; a test sample is left out of the score;
both are counted with ``CorruptCounter`` (a split with more than 1 % unreadable images is a DataError).
"""

from __future__ import annotations

from typing import Any, ClassVar

from benchmark.errors import DataError
from tasks import openmmlab as mm
from tasks.base import Param, RunContext

from .common import Split

LAYER_DECAY = {"plain": 0.65, "beit": 0.65, "swin": 0.9}  # SimMIM's fine-tune configs (ViT-B, Swin-B)


class SemanticFinetune(mm.TrainedTask):
    """Fine-tune the checkpoint on ``train`` and score ``test``: ``{metric: value}`` (+ ``top1`` if single-label).

    Not a task of its own: the semantic adapter runs it for presets with ``protocol: finetune``, after applying
    ``--subset`` to the splits. Defaults are SimMIM's ViT-B ImageNet fine-tune recipe (100 epochs at batch 1024); a
    preset may set ``iters`` / ``warmup_iters`` instead (K12 ``paper``: 20,000 / 4,000 steps at batch 256).
    """

    scope = "mmengine"
    params: ClassVar[dict[str, Param]] = {
        **mm.TrainedTask.params,
        "epochs": Param(100.0, float, "training length in epochs (ignored when iters is set; K12 paper uses iters)",
                        nullable=True),
        "batch_size": Param(1024, int, "TOTAL batch over all processes (lr is for this batch)"),
        "lr": Param(2.5e-3, float, "peak learning rate for the total batch_size"),
        "min_lr": Param(5e-7, float, "final lr of the cosine schedule (for the total batch_size)"),
        "schedule": Param("cosine", str, "lr schedule after the warm-up", choices=mm.SCHEDULES),
        "warmup_epochs": Param(20.0, float, "linear warm-up length in epochs (if warmup_iters is null)",
                               nullable=True),
        "warmup_ratio": Param(2e-4, float, "the warm-up starts at warmup_ratio x lr"),
        "layer_decay": Param(None, float, "layer-wise lr decay (null: the family's, ViT 0.65 / Swin 0.9)",
                             nullable=True),
        "clip_grad": Param(5.0, float, "max gradient L2 norm (null: no clipping)", nullable=True),
        "drop_path": Param(0.1, float, "stochastic depth rate of the backbone"),
        "smoothing": Param(0.1, float, "label smoothing"),
        "mixup": Param(0.8, float, "mixup alpha (0: off)"),
        "cutmix": Param(1.0, float, "cutmix alpha (0: off)"),
        "reprob": Param(0.25, float, "random erasing probability"),
        "auto_augment": Param("rand-m9-mstd0.5-inc1", str, "timm RandAugment policy (null: off)", nullable=True),
        "crop_pct": Param(0.875, float, "evaluation centre-crop fraction"),
        "workers": Param(8, int, "DataLoader worker processes per training process"),
        "test_batch_size": Param(128, int, "evaluation batch per process"),
    }

    def __init__(self, ctx: RunContext, train: Split, test: Split, metric: str):
        from .finetune_parts import _check

        super().__init__(ctx)
        _check(train, test, metric)
        self.train_split, self.test_split, self.metric = train, test, metric

    @property
    def mixing(self) -> bool:
        return not self.train_split.multilabel and (float(self.p["mixup"]) > 0 or float(self.p["cutmix"]) > 0)

    def training_params(self) -> dict[str, Any]:
        p = dict(self.ctx.params)
        if p["layer_decay"] is None:
            from benchmark.families import family

            p["layer_decay"] = LAYER_DECAY[family(str(self.meta["arch"]))]
        return p

    def per_process_batch(self, train_len: int, world: int) -> int:
        return per_process_batch(int(self.p["batch_size"]), train_len, world, self.mixing)

    def register(self) -> None:
        from . import finetune_parts  # noqa: F401 - the classifier and metric in mmengine's registries

    def datasets(self) -> mm.TaskData:
        from .finetune_parts import SplitDataset, transforms

        size = int(self.meta["img_size"])
        train_tf, test_tf = transforms(self.p, size)
        train, test = self.train_split, self.test_split
        return mm.TaskData(
            train=SplitDataset(train, train_tf, train=True, size=size),
            evaluations=[mm.Evaluation("test", SplitDataset(test, test_tf, train=False, size=size),
                                       dict(type="SemanticFinetuneMetric", metric=self.metric))],
            summary=f"fine-tune {train.name}: {len(train)} training / {len(test)} test images, "
                    f"{len(train.classes)} classes",
            collate="default_collate",  # stacked tensors, not mmengine's pseudo_collate lists
            digest=dict(metric=self.metric, train=[train.name, len(train)], test=[test.name, len(test)]))

    def model(self) -> dict:
        p = self.p
        return dict(type="SemanticFinetuneClassifier", checkpoint=str(self.ctx.ckpt),
                    num_classes=len(self.train_split.classes), drop_path_rate=float(p["drop_path"]),
                    allow_partial=self.ctx.allow_partial, multilabel=self.train_split.multilabel,
                    smoothing=float(p["smoothing"]), mixup=float(p["mixup"]), cutmix=float(p["cutmix"]))

    def metrics(self, results: dict[str, dict[str, float]]) -> dict[str, float]:
        out = {k: float(v) for k, v in results["test"].items()}
        self.extra["unreadable_test"] = int(out.pop("unreadable"))  # left out of the score, stored with it
        return out


def per_process_batch(batch_size: int, train_len: int, world: int, mixing: bool) -> int:
    """The total batch per process, capped so one epoch holds a batch; even when mixing (timm Mixup pairs
    each image with its mirror in the batch)."""
    per_gpu = min(batch_size // world, train_len // world)
    if mixing:
        per_gpu -= per_gpu % 2
    if per_gpu < (2 if mixing else 1):
        raise DataError(f"{train_len} training images cannot fill a batch on {world} process(es)",
                        "use more training images (a larger --subset) or fewer processes")
    return per_gpu
