"""ADE20K semantic segmentation (150 classes) with UperNet on mmsegmentation 1.2.2 and the backbone under test.

Protocol (docs/protocols.md; mmseg's ``upernet`` ADE20K configs and the BEiT / MAE fine-tuning recipe):

* model: mmseg ``EncoderDecoder``; backbone ``MIMBackbone`` with four levels (strides 4/8/16/32): Swin's native
  stages; for a plain ViT / BEiT (``vit_neck``) either the BEiT / MAE reference design (``feature2pyramid``, the
  ``paper`` recipe: the raw outputs of four intermediate blocks, (3, 5, 7, 11) of 12 / (7, 11, 15, 23) of 24, i.e. at
  1/3, 1/2, 2/3 and 3/3 of the depth, no final norm, through mmseg's ``Feature2Pyramid`` neck with rescales
  4 / 2 / 1 / 0.5 and SyncBN; mmseg ``configs/_base_/models/upernet_mae.py``, ``upernet_beit.py``,
  ``beit-large_upernet_8xb1-amp-160k_ade20k-640x640.py``) or the suite's shared ViTDet-style simple feature pyramid
  from the last block (``simple``, the default and the ``ci`` preset's). ``UPerHead`` (``channels`` by family, pool
  scales 1/2/3/6, dropout 0.1) on
  all four levels + an auxiliary ``FCNHead`` (256 channels, weight 0.4) on the stride-16 level; cross-entropy,
  label 0 ignored (``reduce_zero_label``: the 150 classes become 0..149).
* training (``TrainedTask``): ``RandomResize`` of ``scale`` (2048, 512) at ratio 0.5–2, ``RandomCrop`` 512 with
  ``cat_max_ratio`` 0.75, flip, ``PhotoMetricDistortion``; batch 16, linear warm-up 1,500 iterations (from 1e-6 ×
  lr) then poly (power 1) to 0 at 160k iterations. By backbone family (a preset value of ``null`` takes the
  family's):
  - plain ViT / BEiT — mmseg's MAE UperNet recipe (the BEiT / MAE fine-tuning optimizer for MIM checkpoints): AdamW
    lr 1e-4, wd 0.05 (none on biases and 1-D parameters, heads included), layer decay 0.65, drop path 0.1,
    UPerHead 768 channels; sliding-window test (crop 512, stride 341 as BEiT's official config).
  - Swin / SwinV2 — mmseg's Swin UperNet recipe: AdamW lr 6e-5, wd 0.01 (none on norms and position tables), no
    layer decay, drop path 0.3, UPerHead 512 channels; whole-image test.
* evaluation: single-scale ``Resize`` to ``scale`` (keep ratio), whole-image inference (``test_mode: whole``) or
  sliding windows (``slide``: crop 512, stride ``slide_stride``, by default two thirds of the crop: 341); mmseg
  ``IoUMetric``: mIoU (primary), aAcc, mAcc in percent. ``test_aug: msflip`` is mmseg's multi-scale + flip test
  (``TestTimeAug`` over ``tta_ratios`` x ``scale`` and a horizontal flip, softmax averaged by ``SegTTAModel``). A
  ``--set test_mode=...`` or ``--set test_aug=msflip`` run is stored under its own preset label, so it never mixes
  with the preset's rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from benchmark.errors import DataError
from tasks import openmmlab as mm
from tasks.base import Param

NUM_CLASSES = 150

MAE_SOURCE = ("mmseg configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py + _base_/models/upernet_mae.py "
              "(slide stride: unilm beit/semantic_segmentation/configs/beit/upernet/upernet_beit_base_12_512_slide_"
              "160k_ade20k_pt.py)")
SWIN_SOURCE = "mmseg configs/swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py (+ swin-tiny)"
# The published recipe of each backbone family; a parameter the preset leaves null takes its family's value.
FAMILY_RECIPES: dict[str, mm.FamilyRecipe] = {
    # mmseg's LayerDecayOptimizerConstructor: no weight decay on any bias or 1-D parameter (the heads' BN included)
    # (the Feature2Pyramid neck's one norm layer, a BN inside an nn.Sequential, is `neck.upsample_4x.1`)
    "plain": mm.FamilyRecipe(MAE_SOURCE, dict(
        lr=1e-4, weight_decay=0.05, layer_decay=0.65, drop_path=0.1, channels=768, test_mode="slide",
        head_no_decay=["*.bias", "*.bn.weight", "neck.upsample_4x.1.weight"], vit_neck="feature2pyramid",
        no_decay_rule="1d")),
    # custom_keys 'norm', 'absolute_pos_embed', 'relative_position_bias_table' (decay_mult 0): the trunk's biases
    # are decayed; 'norm' also matches the backbone's stage-output norms
    "swin": mm.FamilyRecipe(SWIN_SOURCE, dict(
        lr=6e-5, weight_decay=0.01, layer_decay=1.0, drop_path=0.3, channels=512, test_mode="whole",
        head_no_decay=["backbone.out_norms.*"], no_decay_rule="norms")),
}


class ADE20KSeg(mm.TrainedTask):
    scope = "mmseg"
    train_share = 0.85
    family_recipes = FAMILY_RECIPES
    params: ClassVar[dict[str, Param]] = {
        **mm.TrainedTask.params,
        "batch_size": Param(16, int, "TOTAL batch over all processes (lr is for this batch)"),
        "lr": Param(1e-4, float, "peak learning rate for the total batch_size (null: ViT 1e-4 / Swin 6e-5)",
                    nullable=True),
        "iters": Param(160_000, int, "training iterations", nullable=True),
        "schedule": Param("poly", str, "lr schedule after the warm-up", choices=(*mm.SCHEDULES, "poly")),
        "warmup_iters": Param(1500, int, "linear warm-up length in iterations", nullable=True),
        "warmup_ratio": Param(1e-6, float, "the warm-up starts at warmup_ratio x lr"),
        "poly_power": Param(1.0, float, "power of the poly decay"),
        "weight_decay": Param(0.05, float, "AdamW weight decay (null: ViT 0.05 / Swin 0.01)", nullable=True),
        "layer_decay": Param(0.65, float, "layer-wise lr decay rate, 1: none (null: ViT 0.65 / Swin none)",
                             nullable=True),
        "drop_path": Param(0.1, float, "stochastic depth rate of the backbone (null: ViT 0.1 / Swin 0.3)",
                           nullable=True),
        "head_no_decay": Param([], list, "parameters outside the trunk without weight decay, fnmatch patterns (null: "
                                         "ViT every bias and BN weight / Swin its stage-output norms)", nullable=True),
        "no_decay_rule": Param(None, str, "parameters without weight decay (null: ViT 1d = every 1-D parameter and "
                                          "position tables / Swin norms = norm layers and position tables, biases "
                                          "decayed)", nullable=True, choices=("1d", "norms", "none")),
        "scale": Param([2048, 512], list, "RandomResize / test Resize scale (long, short side)"),
        "crop_size": Param([512, 512], list, "training crop (height, width)"),
        "cat_max_ratio": Param(0.75, float, "RandomCrop: largest share one class may take of a crop"),
        "channels": Param(512, int, "UPerHead channels (null: ViT 768 / Swin 512)", nullable=True),
        "aux_channels": Param(256, int, "auxiliary FCNHead channels"),
        "aux_weight": Param(0.4, float, "auxiliary loss weight"),
        "vit_neck": Param("simple", str, "plain ViT features: simple (the shared simple pyramid from the last block) "
                                         "or feature2pyramid (4 intermediate blocks through mmseg's Feature2Pyramid, "
                                         "the BEiT / MAE configs); null: ViT feature2pyramid / Swin its stages",
                          nullable=True, choices=("simple", "feature2pyramid")),
        "test_mode": Param("whole", str, "whole-image or sliding-window inference (null: ViT slide / Swin whole)",
                           nullable=True, choices=("whole", "slide")),
        "slide_stride": Param(None, list, "slide: window stride (height, width); null: two thirds of the crop (341 "
                                          "for 512, BEiT; mmseg's MAE config uses 256)", nullable=True),
        "test_aug": Param("none", str, "none (single scale) or msflip (multi-scale + flip)",
                          choices=("none", "msflip")),
        "tta_ratios": Param([0.5, 0.75, 1.0, 1.25, 1.5, 1.75], list, "msflip: the test scales as ratios of scale"),
        "workers": Param(4, int, "DataLoader worker processes per training process"),
    }

    @classmethod
    def check_data(cls, spec, root: Path) -> None:
        super().check_data(spec, root)
        from .layout import check_ade20k

        check_ade20k(root)

    @classmethod
    def make_mini(cls, spec, out_dir: Path, seed: int) -> None:
        from .mini import make_ade20k

        make_ade20k(out_dir, seed=seed)

    def schedule(self, plan: mm.Plan) -> list[dict]:
        if self.p["schedule"] != "poly":
            return super().schedule(plan)
        warm = plan.warmup_iters
        steps = [dict(type="LinearLR", start_factor=float(self.p["warmup_ratio"]), by_epoch=False, begin=0,
                      end=warm)] if warm else []
        return steps + [dict(type="PolyLR", eta_min=0.0, power=float(self.p["poly_power"]), by_epoch=False,
                             begin=warm, end=plan.max_iters)]

    def _dataset(self, split: str, pipeline: list) -> dict:
        folder = "training" if split == "train" else "validation"
        cfg = dict(type="ADE20KDataset", data_root=str(self.ctx.data_root),
                   data_prefix=dict(img_path=f"images/{folder}", seg_map_path=f"annotations/{folder}"),
                   pipeline=pipeline)
        if self.ctx.subset:
            cfg["indices"] = int(self.ctx.subset)  # the first N (sorted file names): deterministic
        return cfg

    def train_pipeline(self) -> list[dict]:
        p = self.p
        return [
            dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True),
            dict(type="RandomResize", scale=tuple(int(v) for v in p["scale"]), ratio_range=(0.5, 2.0),
                 keep_ratio=True),
            dict(type="RandomCrop", crop_size=tuple(int(v) for v in p["crop_size"]),
                 cat_max_ratio=float(p["cat_max_ratio"])),
            dict(type="RandomFlip", prob=0.5), dict(type="PhotoMetricDistortion"), dict(type="PackSegInputs")]

    def test_pipeline(self) -> list[dict]:
        scale = tuple(int(v) for v in self.p["scale"])
        load_ann, pack = dict(type="LoadAnnotations", reduce_zero_label=True), dict(type="PackSegInputs")
        if self.p["test_aug"] == "msflip":
            sizes = [dict(type="Resize", scale=(int(scale[0] * r), int(scale[1] * r)), keep_ratio=True)
                     for r in self.p["tta_ratios"]]
            flips = [dict(type="RandomFlip", prob=0.0, direction="horizontal"),
                     dict(type="RandomFlip", prob=1.0, direction="horizontal")]
            return [dict(type="LoadImageFromFile"),
                    dict(type="TestTimeAug", transforms=[sizes, flips, [load_ann], [pack]])]
        return [dict(type="LoadImageFromFile"), dict(type="Resize", scale=scale, keep_ratio=True), load_ann, pack]

    def before_test(self, runner) -> None:
        if self.p["test_aug"] == "msflip":  # as mmseg's tools/test.py --tta: the trained model inside SegTTAModel
            from mmengine.model import is_model_wrapper
            from mmseg.models import SegTTAModel

            runner.model = SegTTAModel(module=runner.model.module if is_model_wrapper(runner.model) else runner.model)
            runner.logger.info(f"testing with SegTTAModel: scales {self.p['tta_ratios']} x {self.p['scale']}, flip")

    def datasets(self) -> mm.TaskData:
        from mmseg.registry import DATASETS

        p = self.p
        train_pipeline, test_pipeline = self.train_pipeline(), self.test_pipeline()
        train_set = DATASETS.build(self._dataset("train", train_pipeline))
        val_set = DATASETS.build(self._dataset("val", test_pipeline))
        if len(train_set) == 0 or len(val_set) == 0:
            raise DataError(f"task {self.ctx.spec.name}: empty split ({len(train_set)} training / {len(val_set)} "
                            f"validation images under {self.ctx.data_root})", f"see {self.ctx.spec.docs}")
        return mm.TaskData(
            train=train_set,
            evaluations=[mm.Evaluation("val", val_set, dict(type="IoUMetric", iou_metrics=["mIoU"]))],
            summary=f"{len(train_set)} training / {len(val_set)} validation images",
            extra={"train_images": len(train_set), "val_images": len(val_set),
                   "test": (f"multi-scale {p['tta_ratios']} + flip" if p["test_aug"] == "msflip"
                            else "single-scale") + f", {p['test_mode']}"},
            digest=dict(train=len(train_set), val=len(val_set)))

    def model(self) -> dict:
        from benchmark.backbone import output_channels
        from benchmark.distributed import world_size

        p = self.p
        channels = output_channels(self.meta, (0, 1, 2, 3))
        crop = tuple(int(v) for v in p["crop_size"])
        # SyncBN across GPUs as the reference configs; plain BN on the CPU (gloo has no SyncBN kernels)
        norm = dict(type="SyncBN" if self.ctx.device.startswith("cuda") and world_size() > 1 else "BN",
                    requires_grad=True)
        backbone, neck = self.vit_features(channels, norm)
        test_cfg: dict[str, Any] = dict(mode=p["test_mode"])
        if p["test_mode"] == "slide":
            stride = p["slide_stride"] or (crop[0] * 2 // 3, crop[1] * 2 // 3)  # 512 / 341
            test_cfg.update(crop_size=crop, stride=tuple(int(v) for v in stride))
        return dict(
            type="EncoderDecoder",
            data_preprocessor=dict(type="SegDataPreProcessor", mean=mm.IMAGENET_MEAN, std=mm.IMAGENET_STD,
                                   bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop,
                                   test_cfg=dict(size_divisor=32)),
            backbone=backbone, **neck,
            **self.heads(channels, norm),
            train_cfg=dict(), test_cfg=test_cfg)

    def vit_features(self, channels: list[int], norm: dict) -> tuple[dict, dict]:
        """(backbone config, ``{'neck': ...}`` or ``{}``): the four levels the heads read, as ``vit_neck`` asks."""
        from benchmark.errors import BenchmarkError
        from benchmark.families import family

        if (self.p.get("vit_neck") or "simple") == "simple":
            return self.backbone(out_indices=(0, 1, 2, 3)), {}
        if family(str(self.meta["arch"])) == "swin":
            raise BenchmarkError("vit_neck=feature2pyramid is for plain ViTs; a Swin's four stages are its levels",
                                 "leave vit_neck null or simple for Swin")
        from benchmark.feature2pyramid import default_feature_blocks, feature2pyramid_rescales, trunk_depth

        blocks = default_feature_blocks(trunk_depth(self.meta))
        rescales = feature2pyramid_rescales(int(self.meta.get("patch_size", 16)))
        # mmseg's neck (registered in mmseg's MODELS), its norm the heads' (SyncBN under DDP on GPUs, else BN)
        return (self.backbone(feature_blocks=blocks),
                {"neck": dict(type="Feature2Pyramid", embed_dim=int(channels[0]), rescales=rescales, norm_cfg=norm)})

    def heads(self, channels: list[int], norm: dict) -> dict:
        """The decode head (and auxiliary head) on the backbone's four levels."""
        p = self.p
        return dict(
            decode_head=dict(type="UPerHead", in_channels=channels, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                             channels=int(p["channels"]), dropout_ratio=0.1, num_classes=NUM_CLASSES,
                             norm_cfg=norm, align_corners=False,
                             loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
            auxiliary_head=dict(type="FCNHead", in_channels=channels[2], in_index=2, channels=int(p["aux_channels"]),
                                num_convs=1, concat_input=False, dropout_ratio=0.1, num_classes=NUM_CLASSES,
                                norm_cfg=norm, align_corners=False,
                                loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False,
                                                 loss_weight=float(p["aux_weight"]))))

    def metrics(self, results: dict[str, dict[str, float]]) -> dict[str, float]:
        return mm.pick(results["val"], {n: n for n in ("mIoU", "aAcc", "mAcc")})
