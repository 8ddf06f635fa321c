"""COCO detection + instance segmentation: Mask R-CNN (FPN, or ViTDet's simple pyramid) on mmdet 3.3.0.

Protocol (docs/protocols.md):

* model: mmdet ``MaskRCNN`` — ``MIMBackbone`` (four levels, strides 4/8/16/32: Swin's native stages; a plain ViT's
  simple feature pyramid from its last block, deconvolutions / max-pool with LayerNorm, ViTDet-style), then by
  backbone family (``neck`` / ``head``, a preset value of ``null`` takes the family's):
  - Swin / SwinV2 (``neck: fpn``, ``head: standard``) — mmdet's ``FPN`` (256 channels, 5 levels), the 1-conv
    ``RPNHead``, ``StandardRoIHead`` (RoIAlign 7 / 14, ``Shared2FCBBoxHead``, ``FCNMaskHead``) without norms;
  - plain ViT (``neck: simple``, ``head: vitdet``) — ViTDet's detector: the simple pyramid (256 channels, LayerNorm)
    feeds the heads directly, a fifth stride-64 level max-pooled from the last (no FPN); a 2-conv RPN head,
    ``Shared4Conv1FCBBoxHead`` (four 3×3 convs + one fc) and a 4-conv ``FCNMaskHead``, their convs with
    LayerNorm;
  80 COCO classes, mmdet's Mask R-CNN train / test settings. Plain ViTs (``attention: vitdet``, the family's) run
  ViTDet's backbone: window attention (window 14) except in the last block of each depth quarter (ViT-B 2 / 5 / 8 /
  11), new zero-initialised decomposed relative-position tables in every block, no class token
  (:mod:`benchmark.vitdet_attention`); ``attention: global`` keeps timm's global attention in every block (with the
  class token), the attention the checkpoint was pre-trained with. BEiT checkpoints keep global attention (their own
  relative-position bias); EVA has no window-attention port: its recipe resolves ``attention: global``.
* training, by backbone family (a preset value of ``null`` takes the family's):
  - Swin / SwinV2 — mmdet's ``mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x`` recipe: flip, then one of two branches
    (``augment: multiscale_crop``): the short side drawn from 480…800 (long side ≤ 1333), or a resize to a short
    side of 400 / 500 / 600, a random crop of 384…600 px and the first branch's resize; AdamW 1e-4 for batch 16,
    wd 0.05 (none on norms and position tables), no layer decay, drop path 0.3 (the official Swin-B detection
    config), 1,000-iteration linear warm-up, ×0.1 at epochs 27 and 33 of 36.
  - plain ViT — the ViTDet recipe: large-scale jitter (resize to 1024 × U(0.1, 2.0), crop / pad 1024), flip; AdamW
    1e-4 for batch 64, wd 0.1, layer decay 0.7, drop path 0.1, 250-iteration warm-up, ×0.1 at iterations 163,889
    and 177,546 of 184,375 (~100 epochs); AMP on CUDA.
* evaluation: val2017 at the test scale (Swin: 1333 × 800 keep-ratio; ViT: 1024 keep-ratio, padded to 1024 × 1024
  as ViTDet, ``test_pad``), mmdet's ``CocoMetric`` (pycocotools) for ``bbox`` and ``segm``: AP, AP50, AP75 in
  percent; the small / medium / large APs are stored as extras when pycocotools gives them (it reports −1 for a size
  bucket without ground truth, which is never stored as a score).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from benchmark.errors import BenchmarkError, DataError
from tasks import openmmlab as mm
from tasks.base import Param

METRICS = {f"{kind}_{name}": f"coco/{kind}_{src}" for kind in ("bbox", "segm")
           for name, src in (("AP", "mAP"), ("AP50", "mAP_50"), ("AP75", "mAP_75"))}
SIZE_BUCKETS = {f"{kind}_AP{s}": f"coco/{kind}_mAP_{s}" for kind in ("bbox", "segm") for s in ("s", "m", "l")}

SWIN_SOURCE = ("mmdet configs/swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py (drop path: Swin-Transformer-Object-"
               "Detection configs/swin/cascade_mask_rcnn_swin_base_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x"
               "_coco.py)")
VITDET_SOURCE = "detectron2 projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py (mmdet projects/ViTDet)"
# The published recipe of each backbone family; a parameter left null takes its family's value.
FAMILY_RECIPES: dict[str, mm.FamilyRecipe] = {
    "swin": mm.FamilyRecipe(SWIN_SOURCE, dict(
        augment="multiscale_crop", batch_size=16, weight_decay=0.05, layer_decay=1.0, drop_path=0.3, epochs=36.0,
        milestones_epochs=[27, 33], warmup_iters=1000, test_scale=[1333, 800], test_pad=False, neck="fpn",
        head="standard", head_no_decay=["backbone.out_norms.*"], attention="global")),
    "plain": mm.FamilyRecipe(VITDET_SOURCE, dict(
        augment="lsj", batch_size=64, weight_decay=0.1, layer_decay=0.7, drop_path=0.1, iters=184_375,
        # iterations 163,889 and 177,546 of 184,375 (88 and 96 of 100 epochs)
        milestones_frac=[0.88889, 0.962963], warmup_iters=250, test_scale=[1024, 1024], test_pad=True,
        neck="simple", head="vitdet", head_no_decay=["*.ln.*"], attention="vitdet")),
}
# BEiT: the ViTDet recipe with its own attention (global, with its per-block relative-position bias)
FAMILY_RECIPES["beit"] = mm.FamilyRecipe(VITDET_SOURCE, {**FAMILY_RECIPES["plain"].values, "attention": "global"})
# EVA (a plain ViT with rotary embeddings): no window-attention port, so global attention as BEiT
FAMILY_RECIPES["eva"] = mm.FamilyRecipe(VITDET_SOURCE + " (global attention: EVA has no window-attention port)",
                                        {**FAMILY_RECIPES["plain"].values, "attention": "global"})
VITDET_WINDOW = 14  # ViTDet's window; its global blocks: the last of each depth quarter (vitdet_attention)
NORM_2D = "MIMLayerNorm2d"  # LayerNorm over the channels of an NCHW map (detectron2's "LN"), for the ViTDet heads
LAST_LEVEL_MAX_POOL = "MIMLastLevelMaxPool"  # ViTDet's neck-free pyramid: the backbone's levels + a max-pooled P6


def register_vitdet_modules() -> None:
    """Register the two small modules ViTDet's detector needs that mmdet 3.3's core lacks (its ViTDet project has
    them, but is not installed): a channel LayerNorm for ConvModule and the max-pooled fifth level (detectron2's
    ``LastLevelMaxPool``; the same as mmdet ``FPN``'s extra level without extra convs)."""
    import torch.nn.functional as F
    from mmdet.registry import MODELS
    from mmengine.model import BaseModule
    from timm.layers import LayerNorm2d

    if NORM_2D not in MODELS.module_dict:
        class ChannelLayerNorm(LayerNorm2d):
            _abbr_ = "ln"  # ConvModule names it `ln`

        MODELS.register_module(name=NORM_2D, module=ChannelLayerNorm)
    if LAST_LEVEL_MAX_POOL not in MODELS.module_dict:
        class LastLevelMaxPool(BaseModule):
            def forward(self, inputs):
                return (*inputs, F.max_pool2d(inputs[-1], kernel_size=1, stride=2))

        MODELS.register_module(name=LAST_LEVEL_MAX_POOL, module=LastLevelMaxPool)


class COCODet(mm.TrainedTask):
    scope = "mmdet"
    train_share = 0.85
    family_recipes = FAMILY_RECIPES
    params: ClassVar[dict[str, Param]] = {
        **mm.TrainedTask.params,
        "batch_size": Param(None, int, "TOTAL batch over all processes (null: Swin 16 / ViT 64)", nullable=True),
        "lr": Param(1e-4, float, "peak learning rate for the total batch_size"),
        "schedule": Param("step", str, "lr schedule after the warm-up", choices=mm.SCHEDULES),
        "milestones_epochs": Param(None, list, "step: x0.1 at these epochs (null: Swin 27, 33)", nullable=True),
        "milestones_frac": Param(None, list, "step with iters: x0.1 at these fractions (null: ViT 0.88889, 0.962963: "
                                             "iterations 163,889 / 177,546 of 184,375)", nullable=True),
        "weight_decay": Param(None, float, "AdamW weight decay (null: Swin 0.05 / ViT 0.1)", nullable=True),
        "layer_decay": Param(None, float, "layer-wise lr decay (null: Swin none / ViT 0.7)", nullable=True),
        "drop_path": Param(None, float, "stochastic depth rate of the backbone (null: Swin 0.3 / ViT 0.1)",
                           nullable=True),
        "head_no_decay": Param([], list, "parameters outside the trunk without weight decay, fnmatch patterns (null: "
                                         "Swin its stage-output norms / ViT the heads' LayerNorms)", nullable=True),
        # mmdet's Swin custom_keys (norm, position tables: decay_mult 0) and detectron2's weight_decay_norm=0 with
        # its pos_embed override: norm layers and position tables without weight decay, biases decayed
        "no_decay_rule": Param("norms", str, "parameters without weight decay: norms (the official recipes: norm "
                                             "layers and position tables), 1d (also every bias) or none",
                               choices=("1d", "norms", "none")),
        "augment": Param(None, str, "multiscale_crop (Swin 3x recipe: multi-scale or resize-crop-resize), multiscale "
                                    "(its first branch only) or lsj (ViTDet large-scale jitter); null: the family's",
                         nullable=True, choices=("multiscale_crop", "multiscale", "lsj")),
        "image_size": Param(1024, int, "lsj: the square training crop / test pad size"),
        "train_short_sides": Param([480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800], list,
                                   "multiscale: short sides to draw from"),
        "crop_short_sides": Param([400, 500, 600], list, "multiscale_crop, crop branch: short sides before the crop"),
        "crop_range": Param([384, 600], list, "multiscale_crop, crop branch: crop height and width drawn from this "
                                              "range"),
        "max_long_side": Param(1333, int, "multiscale: longest side"),
        "test_scale": Param(None, list, "test resize (long, short), keep ratio (null: Swin 1333x800 / ViT 1024)",
                            nullable=True),
        "test_pad": Param(False, bool, "pad test images to a square of the test scale's long side (ViTDet; null: "
                                       "Swin no / ViT yes)", nullable=True),
        "neck": Param("fpn", str, "fpn (mmdet FPN on the backbone levels) or simple (ViTDet: the levels as they are + "
                                  "a max-pooled stride-64 level); null: Swin fpn / ViT simple", nullable=True,
                      choices=("fpn", "simple")),
        "head": Param("standard", str, "standard (1-conv RPN, Shared2FC box head, no norms) or vitdet (2-conv RPN, "
                                       "4-conv + 1-fc box head and mask head with LayerNorm); null: Swin standard / "
                                       "ViT vitdet", nullable=True, choices=("standard", "vitdet")),
        "attention": Param("global", str, "plain ViT backbone attention: global (every block, with the class token) or "
                                          "vitdet (window 14 except the last block of each depth quarter, decomposed "
                                          "relative positions, no class token); null: ViT vitdet / Swin, BEiT, "
                                          "EVA global",
                           nullable=True, choices=("global", "vitdet")),
        "fpn_channels": Param(256, int, "FPN / RoI head width"),
        "fc_channels": Param(1024, int, "box head fully connected width"),
        "rpn_proposals": Param(1000, int, "proposals kept per image after NMS (train and test)"),
        "rcnn_samples": Param(512, int, "RoIs sampled per image for the box / mask heads in training"),
        "workers": Param(4, int, "DataLoader worker processes per training process"),
    }

    def register(self) -> None:
        register_vitdet_modules()

    @classmethod
    def check_data(cls, spec, root: Path) -> None:
        super().check_data(spec, root)
        from .layout import check_coco_instances

        check_coco_instances(root)

    @classmethod
    def make_mini(cls, spec, out_dir: Path, seed: int) -> None:
        from .mini import make_coco_instances

        make_coco_instances(out_dir, seed=seed)

    def training_params(self) -> dict[str, Any]:
        p = super().training_params()
        p["milestones_epochs"] = p["milestones_epochs"] or []
        p["milestones_frac"] = p["milestones_frac"] or []
        return p

    def _dataset(self, split: str, pipeline: list) -> dict:
        cfg = dict(type="CocoDataset", data_root=str(self.ctx.data_root),
                   ann_file=f"annotations/instances_{split}2017.json", data_prefix=dict(img=f"{split}2017/"),
                   pipeline=pipeline, backend_args=None)
        if split == "train":
            cfg["filter_cfg"] = dict(filter_empty_gt=True, min_size=32)
        else:
            cfg["test_mode"] = True
        if self.ctx.subset:
            cfg["indices"] = int(self.ctx.subset)
        return cfg

    def pipelines(self) -> tuple[list[dict], list[dict]]:
        p = self.p
        load = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True, with_mask=True)]
        pack = dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape",
                                                     "scale_factor", "flip", "flip_direction"))
        if p["augment"] == "lsj":
            size = int(p["image_size"])
            train = load + [
                dict(type="RandomResize", scale=(size, size), ratio_range=(0.1, 2.0), keep_ratio=True),
                dict(type="RandomCrop", crop_type="absolute_range", crop_size=(size, size), recompute_bbox=True,
                     allow_negative_crop=True),
                dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-2, 1e-2)),
                dict(type="RandomFlip", prob=0.5), dict(type="Pad", size=(size, size), pad_val=dict(img=(114,) * 3)),
                pack]
        else:
            long = int(p["max_long_side"])
            multiscale = dict(type="RandomChoiceResize", scales=[(long, int(s)) for s in p["train_short_sides"]],
                              keep_ratio=True)
            if p["augment"] == "multiscale_crop":  # mmdet's Swin 3x: one of the two branches per image
                crop_branch = [
                    dict(type="RandomChoiceResize", scales=[(long, int(s)) for s in p["crop_short_sides"]],
                         keep_ratio=True),
                    dict(type="RandomCrop", crop_type="absolute_range",
                         crop_size=tuple(int(v) for v in p["crop_range"]), allow_negative_crop=True),
                    multiscale]
                train = load + [dict(type="RandomFlip", prob=0.5),
                                dict(type="RandomChoice", transforms=[[multiscale], crop_branch]), pack]
            else:
                train = load + [multiscale, dict(type="RandomFlip", prob=0.5), pack]
        scale = tuple(int(v) for v in p["test_scale"])
        test = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=scale, keep_ratio=True)]
        if p["test_pad"]:  # ViTDet: the test image padded to the square it was trained at
            test.append(dict(type="Pad", size=(max(scale),) * 2, pad_val=dict(img=(114,) * 3)))
        test += [dict(type="LoadAnnotations", with_bbox=True, with_mask=True), pack]
        return train, test

    def datasets(self) -> mm.TaskData:
        from mmdet.registry import DATASETS

        train_pipeline, test_pipeline = self.pipelines()
        train_set = DATASETS.build(self._dataset("train", train_pipeline))
        val_set = DATASETS.build(self._dataset("val", test_pipeline))
        if len(train_set) == 0 or len(val_set) == 0:
            raise DataError(f"task {self.ctx.spec.name}: empty split ({len(train_set)} training / {len(val_set)} "
                            f"validation images with objects under {self.ctx.data_root})", f"see {self.ctx.spec.docs}")
        metric = dict(type="CocoMetric", ann_file=str(self.ctx.data_root / "annotations/instances_val2017.json"),
                      metric=["bbox", "segm"], format_only=False, backend_args=None)
        return mm.TaskData(
            train=train_set, evaluations=[mm.Evaluation("val", val_set, metric)],
            summary=f"{len(train_set)} training / {len(val_set)} validation images",
            extra={"train_images": len(train_set), "val_images": len(val_set), "augment": self.p["augment"]},
            digest=dict(train=len(train_set), val=len(val_set)))

    def model(self) -> dict:
        from benchmark.backbone import output_channels
        from benchmark.families import family

        p = self.p
        fpn = int(p["fpn_channels"])
        plain = family(str(self.meta["arch"])) != "swin"
        vitdet = p["head"] == "vitdet"
        if vitdet or p["neck"] == "simple":
            register_vitdet_modules()  # also for callers that build the model without run() (benchmark plan)
        # ViT: the shared pyramid projects to the FPN width (ViTDet's simple pyramid is 256 wide)
        extra: dict[str, Any] = {"out_channels": fpn} if plain else {}
        if (p["attention"] or "global") == "vitdet":  # MIMBackbone refuses it for Swin / BEiT / EVA
            extra["window_attention"] = dict(window_size=VITDET_WINDOW, global_blocks=None, rel_pos=True,
                                             img_size=int(p["image_size"]))
        backbone = self.backbone(out_indices=(0, 1, 2, 3), **extra)
        channels = [fpn] * 4 if plain else output_channels(self.meta, (0, 1, 2, 3))
        if p["neck"] == "simple":  # ViTDet: no FPN; the pyramid's levels must already be fpn_channels wide
            if channels != [fpn] * 4:
                raise BenchmarkError(f"neck=simple needs four {fpn}-channel backbone levels, got {channels}",
                                     "use neck=fpn for this backbone")
            neck = dict(type=LAST_LEVEL_MAX_POOL)
        else:
            neck = dict(type="FPN", in_channels=channels, out_channels=fpn, num_outs=5)
        norm = dict(type=NORM_2D, requires_grad=True) if vitdet else None
        if vitdet:  # ViTDet: four 3x3 convs with LayerNorm, then one fc
            box_head: dict[str, Any] = dict(type="Shared4Conv1FCBBoxHead", conv_out_channels=fpn, norm_cfg=norm)
        else:
            box_head = dict(type="Shared2FCBBoxHead")
        nms = dict(type="nms", iou_threshold=0.7)
        proposals = int(p["rpn_proposals"])
        assigner = dict(type="MaxIoUAssigner", match_low_quality=True, ignore_iof_thr=-1)
        return dict(
            type="MaskRCNN",
            data_preprocessor=dict(type="DetDataPreprocessor", mean=mm.IMAGENET_MEAN, std=mm.IMAGENET_STD,
                                   bgr_to_rgb=True, pad_mask=True, pad_size_divisor=32),
            backbone=backbone,
            neck=neck,
            rpn_head=dict(
                type="RPNHead", in_channels=fpn, feat_channels=fpn, **({"num_convs": 2} if vitdet else {}),
                anchor_generator=dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0],
                                      strides=[4, 8, 16, 32, 64]),
                bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
                loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
                loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
            roi_head=dict(
                type="StandardRoIHead",
                bbox_roi_extractor=dict(type="SingleRoIExtractor", out_channels=fpn, featmap_strides=[4, 8, 16, 32],
                                        roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=0)),
                bbox_head=dict(**box_head, in_channels=fpn, fc_out_channels=int(p["fc_channels"]), roi_feat_size=7,
                               num_classes=80, reg_class_agnostic=False,
                               bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                                               target_stds=[0.1, 0.1, 0.2, 0.2]),
                               loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
                               loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
                mask_roi_extractor=dict(type="SingleRoIExtractor", out_channels=fpn, featmap_strides=[4, 8, 16, 32],
                                        roi_layer=dict(type="RoIAlign", output_size=14, sampling_ratio=0)),
                mask_head=dict(type="FCNMaskHead", num_convs=4, in_channels=fpn, conv_out_channels=fpn,
                               num_classes=80, **({"norm_cfg": norm} if vitdet else {}),
                               loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0))),
            train_cfg=dict(
                rpn=dict(assigner=dict(**assigner, pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3),
                         sampler=dict(type="RandomSampler", num=256, pos_fraction=0.5, neg_pos_ub=-1,
                                      add_gt_as_proposals=False),
                         allowed_border=-1, pos_weight=-1, debug=False),
                rpn_proposal=dict(nms_pre=2000, max_per_img=proposals, nms=nms, min_bbox_size=0),
                rcnn=dict(assigner=dict(**assigner, pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5),
                          sampler=dict(type="RandomSampler", num=int(p["rcnn_samples"]), pos_fraction=0.25,
                                       neg_pos_ub=-1, add_gt_as_proposals=True),
                          mask_size=28, pos_weight=-1, debug=False)),
            test_cfg=dict(
                rpn=dict(nms_pre=1000, max_per_img=proposals, nms=nms, min_bbox_size=0),
                rcnn=dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100,
                          mask_thr_binary=0.5)))

    def metrics(self, results: dict[str, dict[str, float]]) -> dict[str, float]:
        val = results["val"]
        if not any(src in val for src in METRICS.values()):
            # mmdet's CocoMetric returns nothing when no box scored above the threshold: that model's AP is 0
            self.extra["no_detections"] = True
            return {name: 0.0 for name in METRICS}
        buckets = {k: 100.0 * float(val[src]) for k, src in SIZE_BUCKETS.items()
                   if src in val and float(val[src]) >= 0}  # -1: no ground truth of that size
        self.extra.update(buckets)
        return mm.pick(val, METRICS, scale=100.0)
