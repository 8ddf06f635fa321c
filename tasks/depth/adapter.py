"""Monocular depth (NYUv2, KITTI Eigen split) on mmsegmentation 1.2.2's DepthEstimator with the benchmarked backbone.

Protocol (the paper's depth code; docs/protocols.md):

* model: ``FlipDepthEstimator`` (mmseg ``DepthEstimator`` + flip test); backbone ``MIMBackbone`` (Swin: its
  stride-32 stage 4, as the paper; plain ViT: the map at its patch stride); ``MIMDepthHead`` (stride-2 deconvs down
  to stride 4 — 3 for Swin, 2 for ViT-B/16 —, conv + BN + ReLU, two ×2 upsamples, conv head, ``sigmoid × max_depth``);
  SiLog loss (λ 0.5). ``swin_window`` (the paper preset's Swin recipe: NYU 30/30/30/15, KITTI 22/22/22/11): a SwinV2
  backbone is built for the training crop with those windows (``MIMBackbone(window_size, img_size)``), its continuous
  position bias on the checkpoint's pre-training window scale; a Swin V1 keeps its own windows.
* training (``TrainedTask``): mmseg's ``RandomDepthMix`` (CutDepth-style) + horizontal flip + random crop, then
  (``color_aug``) the paper's photometric augmentation ``DepthColorAug``; AdamW (wd 0.05) with layer-wise lr decay,
  drop path (``swin_merge_own_layer``: Swin patch mergings count as layers, as the paper's optimizer); the
  ``onecycle`` schedule of the paper's train.py (``tasks.lr_schedules``): with s the elapsed fraction of each half,
  lr rises as ``min_lr + (lr - min_lr) * s^0.9`` over floor(epochs / 2) epochs, falls as
  ``lr - (lr - min_lr) * s^0.9`` over as many, then stays at ``min_lr`` (25 epochs: 12 + 12 + 1), every step, each
  layer-decay group scaled by its own factor (its ``min_lr`` too). ``output_norm``: the norm on the Swin stage-4
  map the head reads, a new LayerNorm (``fresh``: weight 1, bias 0, at the head's lr with ``swin_merge_own_layer``,
  as the paper's SwinV2 ``norm3``) or the checkpoint's final norm (``pretrained``).
* evaluation: the flip test on the whole image (KITTI: its KB crop) or, ``test_mode: slide``, the paper's
  shifted-window test; ``MIMDepthMetric`` — depth range and crop of the dataset (NYU: Eigen crop, [1e-3, 10] m;
  KITTI: Garg crop placed on the 352×1216 KB crop as the paper's code, [1e-3, 80] m), errors per image, averaged
  over images. Depth in metres.

Dataset settings (roots, crops, depth scale) come from the spec's ``dataset`` section; a generated mini dataset
may carry ``dataset_overrides.json`` at its root (e.g. the KB crop at its 1/8 scale), merged over them.
"""

from __future__ import annotations

import json
import logging
from functools import cached_property
from pathlib import Path
from typing import ClassVar

from benchmark.errors import DataError
from tasks import openmmlab as mm
from tasks.base import Param

from . import layout

log = logging.getLogger("benchmark")

OVERRIDES = "dataset_overrides.json"
# the paper's SwinV2 fine-tuning geometry, layer counting and output norm (SwinV2-B; the code has no ViT)
PAPER_SOURCE = ("SwinTransformer/MIM-Depth-Estimation README train commands (--window_size, --pretrain_window_size "
                "12 12 12 6, --use_shift True True False False) + models/optimizer.py get_num_layer_for_swin + "
                "models/swin_transformer_v2.py (a new norm3 on the last stage)")
METRICS = ("rmse", "abs_rel", "sq_rel", "rmse_log", "log10", "silog", "d1", "d2", "d3")


class _DepthAdapter(mm.TrainedTask):
    scope = "mmseg"
    train_share = 0.85
    params: ClassVar[dict[str, Param]] = {
        **mm.TrainedTask.params,
        "schedule": Param("onecycle", str, "lr schedule", choices=mm.SCHEDULES),
        "crop_size": Param([448, 576], list, "training crop (height, width) in pixels"),
        "depth_mix": Param(0.25, float, "probability of mmseg's RandomDepthMix (CutDepth-style) per sample"),
        "color_aug": Param(False, bool, "the paper's photometric augmentation (brightness / contrast, gamma, "
                           "hue / saturation / value, each with probability 0.5; DepthColorAug)"),
        "flip_test": Param(True, bool, "average the prediction of the image and its mirror"),
        "test_mode": Param("whole", str, "whole-image inference, or the paper's shifted-window test (slide: "
                           "slide_windows square windows of the image height along the width, averaged)",
                           choices=("whole", "slide")),
        "slide_windows": Param(2, int, "number of windows of test_mode slide (the paper: NYU 2, KITTI 16)"),
        "head_init": Param("trunc_normal", str, "init of the head's convolutions: trunc_normal (std 0.02) or paper "
                           "(N(0, 0.001), zero bias, deconvolutions included)", choices=("trunc_normal", "paper")),
        "deconv_width": Param(32, int, "width of the head's deconvolutions"),
        "decoder_channels": Param(None, int, "width of the head's conv block (null: the head's default)",
                                  nullable=True),
        "swin_window": Param([], list, "SwinV2 attention window per stage for fine-tuning, clipped to each stage's "
                             "map at the training crop (no shift where it covers the map); the continuous position "
                             "bias keeps the checkpoint's pre-training windows as its coordinate scale. []: the "
                             "checkpoint's own; Swin V1 always keeps its own (null: paper NYU 30/30/30/15, KITTI "
                             "22/22/22/11 for Swin)", nullable=True),
        "swin_merge_own_layer": Param(False, bool, "layer decay counts each Swin patch merging as its own layer "
                                      "and the output norm at the head's lr, as the paper's optimizer (null: on "
                                      "for Swin)", nullable=True),
        "output_norm": Param("pretrained", str, "norm of the Swin stage-4 map the head reads: fresh (a new LayerNorm, "
                             "weight 1 / bias 0, as the paper's SwinV2 norm3) or pretrained (the checkpoint's final "
                             "norm); Swin only (null: fresh for Swin; other families keep the pre-trained norm, the "
                             "paper has no ViT depth code)", nullable=True, choices=("fresh", "pretrained")),
    }

    @cached_property
    def ds(self) -> dict:
        """The spec's dataset settings, with a mini dataset's ``dataset_overrides.json`` merged over them."""
        settings = dict(self.ctx.spec.dataset)
        extra = self.ctx.data_root / OVERRIDES
        if extra.is_file():
            try:
                settings.update(json.loads(extra.read_text()))
            except ValueError as exc:
                raise DataError(f"{extra} is not valid JSON ({exc})", "fix or delete the file") from exc
        return settings

    # subclasses: the dataset config for a split, and the pipeline steps right after loading
    def _dataset(self, split: str, pipeline: list) -> dict:
        raise NotImplementedError

    def _after_load(self) -> list[dict]:
        return []

    # -- the task-specific parts of TrainedTask ----------------------------------------------------------------
    def register(self) -> None:
        from . import (
            mmseg_parts,  # noqa: F401 - the KITTI dataset, the KB crop, the metric
            model,  # noqa: F401 - the depth head and the flip-test estimator
        )

    def datasets(self) -> mm.TaskData:
        from mmseg.registry import DATASETS

        from .mmseg_parts import META_KEYS

        ctx, p, ds = self.ctx, self.p, self.ds
        load = [dict(type="LoadImageFromFile"),
                dict(type="LoadDepthAnnotation", depth_rescale_factor=1.0 / float(ds["depth_scale"]))]
        load += self._after_load()
        crop_h, crop_w = (int(v) for v in p["crop_size"])
        train_pipeline = load + [
            dict(type="RandomDepthMix", prob=float(p["depth_mix"])),
            dict(type="RandomFlip", prob=0.5),
            dict(type="RandomCrop", crop_size=(crop_h, crop_w)),
            *([dict(type="DepthColorAug", prob=0.5)] if p["color_aug"] else []),
            dict(type="PackSegInputs", meta_keys=META_KEYS)]
        test_pipeline = load + [dict(type="PackSegInputs", meta_keys=META_KEYS)]
        train_cfg, test_cfg = self._dataset("train", train_pipeline), self._dataset("test", test_pipeline)
        if ctx.subset:
            train_cfg["indices"] = test_cfg["indices"] = int(ctx.subset)  # the first N: deterministic
        train_set, test_set = DATASETS.build(train_cfg), DATASETS.build(test_cfg)
        if len(train_set) == 0 or len(test_set) == 0:
            raise DataError(f"task {ctx.spec.name}: empty split ({len(train_set)} train / {len(test_set)} test "
                            f"images under {ctx.data_root})", f"check the layout; see {ctx.spec.docs}")
        evaluator = dict(type="MIMDepthMetric", min_depth_eval=float(ds["min_depth"]),
                         max_depth_eval=float(ds["max_depth"]), crop=ds.get("eval_crop"))
        return mm.TaskData(train=train_set, evaluations=[mm.Evaluation("test", test_set, evaluator)],
                           summary=f"{len(train_set)} training / {len(test_set)} test images",
                           extra={"train_images": len(train_set), "test_images": len(test_set)},
                           digest=dict(dataset=ds))

    def model(self) -> dict:
        from benchmark.backbone import native_level, output_channels

        from .model import PAPER_INIT

        p, ds = self.p, self.ds
        level = native_level(self.meta)  # Swin: stride 32 as the paper's SwinV2; ViT: its patch stride
        channels = output_channels(self.meta, (level,))[0]
        filters = (int(p["deconv_width"]),) * level  # stride 4 * 2**level -> 4 in `level` deconvs, then x4 upsampling
        return dict(
            type="FlipDepthEstimator",
            data_preprocessor=dict(type="SegDataPreProcessor", mean=mm.IMAGENET_MEAN, std=mm.IMAGENET_STD,
                                   bgr_to_rgb=True, pad_val=0, seg_pad_val=0, size_divisor=32),
            backbone=self.backbone(out_indices=(level,), **self._swin_geometry(), **self._output_norm()),
            decode_head=dict(type="MIMDepthHead", in_channels=channels, channels=p["decoder_channels"],
                             max_depth=float(ds["max_depth"]), num_deconv_filters=filters,
                             loss_decode=dict(type="SiLogLoss"),
                             init_cfg=dict(PAPER_INIT) if p["head_init"] == "paper" else None),
            test_cfg=dict(mode=p["test_mode"], windows=int(p["slide_windows"]), flip=bool(p["flip_test"])))

    def _swin_geometry(self) -> dict:
        """MIMBackbone's window_size / img_size for ``swin_window``: SwinV2 only, sized at the training crop (the
        paper's crops give stride-4 maps four windows wide, 480 / 4 = 4 * 30, 352 / 4 = 4 * 22, and its shifted-window
        test feeds inputs of the crop's size)."""
        from benchmark.families import variant

        window = self.p.get("swin_window")
        if not window:
            return {}
        arch = str(self.meta["arch"])
        if variant(arch) != "swinv2":
            log.info("%s: swin_window %s not applied to %s (SwinV2 only: its continuous position bias takes any "
                     "window); the checkpoint's own windows are kept", self.ctx.spec.name, list(window), arch)
            return {}
        return dict(window_size=[int(w) for w in window], img_size=[int(v) for v in self.p["crop_size"]])

    def _output_norm(self) -> dict:
        """MIMBackbone's ``fresh_output_norm`` for ``output_norm: fresh`` (Swin only; null: the checkpoint's)."""
        from benchmark.errors import BenchmarkError
        from benchmark.families import family

        if self.p.get("output_norm") != "fresh":
            return {}
        arch = str(self.meta["arch"])
        if family(arch) != "swin":
            raise BenchmarkError(f"{self.ctx.spec.name}: output_norm fresh (the paper's SwinV2 norm3) needs a Swin "
                                 f"backbone, not {arch}", "use output_norm: pretrained (or null) for this backbone")
        return dict(fresh_output_norm=True)

    def metrics(self, results: dict[str, dict[str, float]]) -> dict[str, float]:
        return mm.pick(results["test"], {n: n for n in METRICS})


class NYUDepth(_DepthAdapter):
    """NYUv2 in mmseg's NYUDataset layout (``benchmark convert-nyu`` builds it from the BTS layout)."""

    family_recipes: ClassVar[dict[str, mm.FamilyRecipe]] = {
        "swin": mm.FamilyRecipe(PAPER_SOURCE + " (NYUv2 command: --window_size 30 30 30 15)",
                                dict(swin_window=[30, 30, 30, 15], swin_merge_own_layer=True, output_norm="fresh"))}

    @classmethod
    def check_data(cls, spec, root: Path) -> None:
        super().check_data(spec, root)
        layout.check_nyu(root)

    @classmethod
    def make_mini(cls, spec, out_dir: Path, seed: int) -> None:
        from .mini import make_nyu

        make_nyu(out_dir, seed=seed)

    @classmethod
    def make_mini_full_size(cls, spec, out_dir: Path, seed: int) -> None:
        from .mini import make_nyu

        make_nyu(out_dir, seed=seed, n_train=4, n_test=2, size=(480, 640))  # NYUv2's frame

    def _dataset(self, split: str, pipeline: list) -> dict:
        return dict(type="NYUDataset", data_root=str(self.ctx.data_root),
                    data_prefix=dict(img_path=f"images/{split}", depth_map_path=f"annotations/{split}"),
                    pipeline=pipeline, test_mode=split == "test")


class KITTIDepth(_DepthAdapter):
    """KITTI Eigen split in the BTS layout (split files + raw RGB + projected-LiDAR ground truth)."""

    family_recipes: ClassVar[dict[str, mm.FamilyRecipe]] = {
        "swin": mm.FamilyRecipe(PAPER_SOURCE + " (KITTI command: --window_size 22 22 22 11)",
                                dict(swin_window=[22, 22, 22, 11], swin_merge_own_layer=True, output_norm="fresh"))}

    @classmethod
    def check_data(cls, spec, root: Path) -> None:
        super().check_data(spec, root)
        layout.check_kitti(root, rgb_root=spec.dataset.get("rgb_root", "raw"),
                           gt_root=spec.dataset.get("gt_root", "gt_depth"))

    @classmethod
    def make_mini(cls, spec, out_dir: Path, seed: int) -> None:
        from .mini import make_kitti

        make_kitti(out_dir, seed=seed)

    @classmethod
    def make_mini_full_size(cls, spec, out_dir: Path, seed: int) -> None:
        from .mini import KITTI_SHAPE, make_kitti

        make_kitti(out_dir, seed=seed, n_train=4, n_test=2, size=KITTI_SHAPE)  # the 375 x 1242 frame

    def _after_load(self) -> list[dict]:
        return [dict(type="KBCrop", crop_size=tuple(int(v) for v in self.ds["kb_crop"]))]

    def _dataset(self, split: str, pipeline: list) -> dict:
        ds = self.ds
        return dict(type="KITTIEigenDataset", data_root=str(self.ctx.data_root),
                    ann_file=ds[f"{split}_split"], rgb_root=ds.get("rgb_root", "raw"),
                    gt_root=ds.get("gt_root", "gt_depth"), pipeline=pipeline, test_mode=split == "test")
