"""ADE20K semantic segmentation with a Mask2Former head (mmseg 1.2.2, whose head and losses come from mmdet 3.3.0).

Protocol (docs/protocols.md; mmseg's ``mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640`` config):

* model: mmseg ``EncoderDecoder``; the same ``MIMBackbone`` levels as ``ade20k_seg`` (strides 4/8/16/32) into
  ``Mask2FormerHead``: mmdet's ``MSDeformAttnPixelDecoder`` (6 deformable-attention layers on the three coarse
  levels, GroupNorm 32), a 9-layer masked-attention decoder with 100 queries, 256 channels; losses: cross-entropy
  on the classes (weight 2, "no object" 0.1), sigmoid cross-entropy and dice on 12,544 sampled mask points
  (weights 5 / 5), Hungarian matching on the same costs. Label 0 is ignored (``reduce_zero_label``).
* training (``TrainedTask``): ``RandomChoiceResize`` of the short side to 0.5–2.0 × 640 (long side ≤ 2,560),
  ``RandomCrop`` 640 with ``cat_max_ratio`` 0.75, flip, ``PhotoMetricDistortion``; AdamW lr 1e-4 for batch 16, wd
  0.05 (none on norm layers, position tables and the query / level embeddings; the head's biases are decayed as in
  mmseg's config, the trunk's are not), backbone lr × 0.1, gradient clipping at L2 norm 0.01, poly (power 0.9) to 0
  over 160k iterations, no warm-up.
* evaluation: ``Resize`` to (2560, 640) keeping the ratio, whole-image inference; mmseg ``IoUMetric`` mIoU.
* AMP on CUDA in float16: mmcv's CUDA deformable-attention kernel has no bfloat16 version (on the CPU mmcv runs
  its PyTorch fallback in float32).
"""

from __future__ import annotations

from typing import Any, ClassVar

from tasks import openmmlab as mm
from tasks.base import Param

from .adapter import NUM_CLASSES, ADE20KSeg


class ADE20KMask2Former(ADE20KSeg):
    family_recipes: ClassVar[dict[str, mm.FamilyRecipe]] = {}  # one recipe (mmseg's Swin-B config) for every family
    params: ClassVar[dict[str, Param]] = {
        **{k: v for k, v in ADE20KSeg.params.items()
           if k not in ("channels", "aux_channels", "aux_weight", "tta_ratios", "slide_stride")},
        "lr": Param(1e-4, float, "peak learning rate for the total batch_size"),
        "weight_decay": Param(0.05, float, "AdamW weight decay"),
        "layer_decay": Param(1.0, float, "layer-wise lr decay rate (1: none, the reference recipe)"),
        "backbone_lr_mult": Param(0.1, float, "lr multiplier of the whole backbone (its stage-output norms and "
                                              "pyramid included)"),
        # custom_keys (norms, position tables, query / level embeddings) and norm_decay_mult=0: biases decayed
        "no_decay_rule": Param("norms", str, "parameters without weight decay: norms (the official recipe: norm "
                                             "layers, position tables), 1d (also every bias) or none",
                               choices=("1d", "norms", "none")),
        "clip_grad": Param(0.01, float, "max gradient L2 norm (null: no clipping)", nullable=True),
        "warmup_iters": Param(0, int, "linear warm-up length in iterations", nullable=True),
        "poly_power": Param(0.9, float, "power of the poly decay"),
        "drop_path": Param(0.3, float, "stochastic depth rate of the backbone"),
        "scale": Param([2560, 640], list, "test Resize scale (long, short side)"),
        "crop_size": Param([640, 640], list, "training crop (height, width); the short-side resize is 0.5-2x its "
                                            "height"),
        "feat_channels": Param(256, int, "pixel decoder and transformer decoder channels (a multiple of 32)"),
        "num_queries": Param(100, int, "mask queries"),
        "encoder_layers": Param(6, int, "deformable-attention layers of the pixel decoder"),
        "decoder_layers": Param(9, int, "masked-attention decoder layers"),
        "num_points": Param(12544, int, "mask points sampled per query for the mask losses"),
        # mmseg's custom_keys (query / level embeddings) and norm_decay_mult=0 (every norm layer: the pixel decoder's
        # GroupNorms, the transformer layers' LayerNorms, the backbone's stage-output norms)
        "head_no_decay": Param(["*query_embed*", "*query_feat*", "*level_embed*", "*norms.*", "*post_norm.*",
                                "*.gn.*"], list, "parameters outside the trunk without weight decay (fnmatch "
                                                 "patterns): the query / level embeddings and every norm layer"),
        "amp_dtype": Param("float16", str, "autocast dtype on CUDA", choices=("float16", "bfloat16")),
        "test_mode": Param("whole", str, "whole-image inference", choices=("whole",)),
        "test_aug": Param("none", str, "single-scale testing", choices=("none",)),
    }

    def register(self) -> None:
        import mmdet.models  # noqa: F401 - the pixel decoder, losses, assigner and sampler live in mmdet's registry

    def train_pipeline(self) -> list[dict]:
        p = self.p
        crop = tuple(int(v) for v in p["crop_size"])
        return [
            dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True),
            dict(type="RandomChoiceResize", scales=[int(crop[0] * x * 0.1) for x in range(5, 21)],
                 resize_type="ResizeShortestEdge", max_size=4 * crop[0]),
            dict(type="RandomCrop", crop_size=crop, cat_max_ratio=float(p["cat_max_ratio"])),
            dict(type="RandomFlip", prob=0.5), dict(type="PhotoMetricDistortion"), dict(type="PackSegInputs")]

    def heads(self, channels: list[int], norm: dict) -> dict:
        p = self.p
        feat = int(p["feat_channels"])
        heads = 8
        deform = dict(embed_dims=feat, num_heads=heads, num_levels=3, num_points=4, im2col_step=64, dropout=0.0,
                      batch_first=True, norm_cfg=None, init_cfg=None)
        attn = dict(embed_dims=feat, num_heads=heads, attn_drop=0.0, proj_drop=0.0, dropout_layer=None,
                    batch_first=True)
        decoder_layer: dict[str, Any] = dict(
            self_attn_cfg=attn, cross_attn_cfg=attn,
            ffn_cfg=dict(embed_dims=feat, feedforward_channels=8 * feat, num_fcs=2, act_cfg=dict(type="ReLU",
                         inplace=True), ffn_drop=0.0, dropout_layer=None, add_identity=True))
        return dict(decode_head=dict(
            type="Mask2FormerHead", in_channels=list(channels), strides=[4, 8, 16, 32], feat_channels=feat,
            out_channels=feat, num_classes=NUM_CLASSES, num_queries=int(p["num_queries"]),
            num_transformer_feat_level=3, align_corners=False,
            pixel_decoder=dict(
                type="mmdet.MSDeformAttnPixelDecoder", num_outs=3, norm_cfg=dict(type="GN", num_groups=32),
                act_cfg=dict(type="ReLU"),
                encoder=dict(num_layers=int(p["encoder_layers"]), init_cfg=None, layer_cfg=dict(
                    self_attn_cfg=deform,
                    ffn_cfg=dict(embed_dims=feat, feedforward_channels=4 * feat, num_fcs=2, ffn_drop=0.0,
                                 act_cfg=dict(type="ReLU", inplace=True)))),
                positional_encoding=dict(num_feats=feat // 2, normalize=True), init_cfg=None),
            enforce_decoder_input_project=False,
            positional_encoding=dict(num_feats=feat // 2, normalize=True),
            transformer_decoder=dict(return_intermediate=True, num_layers=int(p["decoder_layers"]),
                                     layer_cfg=decoder_layer, init_cfg=None),
            loss_cls=dict(type="mmdet.CrossEntropyLoss", use_sigmoid=False, loss_weight=2.0, reduction="mean",
                          class_weight=[1.0] * NUM_CLASSES + [0.1]),
            loss_mask=dict(type="mmdet.CrossEntropyLoss", use_sigmoid=True, reduction="mean", loss_weight=5.0),
            loss_dice=dict(type="mmdet.DiceLoss", use_sigmoid=True, activate=True, reduction="mean",
                           naive_dice=True, eps=1.0, loss_weight=5.0),
            train_cfg=dict(
                num_points=int(p["num_points"]), oversample_ratio=3.0, importance_sample_ratio=0.75,
                assigner=dict(type="mmdet.HungarianAssigner", match_costs=[
                    dict(type="mmdet.ClassificationCost", weight=2.0),
                    dict(type="mmdet.CrossEntropyLossCost", weight=5.0, use_sigmoid=True),
                    dict(type="mmdet.DiceCost", weight=5.0, pred_act=True, eps=1.0)]),
                sampler=dict(type="mmdet.MaskPseudoSampler"))))

    def metrics(self, results: dict[str, dict[str, float]]) -> dict[str, float]:
        return mm.pick(results["val"], {"mIoU": "mIoU"})
