"""Top-down 2D human pose (COCO keypoints, CrowdPose) on mmpose 1.3.2 with the benchmarked backbone.

Protocol (SimpleBaseline / ViTPose, as the paper's pose experiments; docs/protocols.md):

* model: mmpose ``TopdownPoseEstimator``; backbone ``MIMBackbone`` (plain ViT: the map at its patch stride, 16 for
  ViT-B/16; Swin: its stride-32 stage); ``HeatmapHead`` with stride-2 deconvolutions up to stride 4 (2 for ViT-B/16
  as ViTPose, 3 for Swin as SimpleBaseline), 1×1 conv to K heatmaps; MSE loss with target weights; heatmaps at
  stride 4 (input 256×192, heatmaps 64×48, σ 2) with the ``codec`` parameter: ``udp`` (``UDPHeatmap``, UDP affine,
  DARK-UDP decoding; flip test without heatmap shift) or ``msra`` (``MSRAHeatmap``, plain affine, quarter-offset
  decoding; flip test with the one-pixel heatmap shift).
* training (``TrainedTask``): top-down crops of the ground-truth person boxes with mmpose's augmentation (flip, half
  body, scale/rotation jitter), AdamW + layer-wise lr decay, drop path, warm-up + step decay (epochs 170 / 200 of 210).
* per-family recipes (``family_recipes``; the ``paper`` presets leave these parameters null): plain ViT follows
  ViTPose-B (total batch 512, AdamW wd 0.1, layer decay 0.75, clipping 1.0, UDP on COCO); Swin / SwinV2 follow
  mmpose's Swin-B recipe (total batch 256, Adam = AdamW with wd 0, no layer decay, no clipping, MSRA heatmaps with
  shift). CrowdPose uses MSRA heatmaps with shift for both families (ViTPose's CrowdPose config).
* evaluation: mmpose ``CocoMetric`` (xtcocotools; CrowdPose with ``keypoints_crowd`` and ``use_area=False``), once on
  the ground-truth boxes (``AP_gt``) and once on the detected-person box file (the headline AP, AP50, AP75, AR; and
  AP easy/medium/hard for CrowdPose). The predictions are kept as COCO-format JSON files in the run's work dir.

``--subset N`` keeps the first N images (by id) of each split and writes matching annotation / box files into the
work dir, so the metric sees exactly the evaluated images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from benchmark.errors import DataError
from tasks import openmmlab as mm
from tasks.base import Param

from . import layout

VITPOSE_COCO = ("ViTAE-Transformer/ViTPose configs/body/2d_kpt_sview_rgb_img/topdown_heatmap/coco/"
                "ViTPose_base_coco_256x192.py; open-mmlab/mmpose configs/body_2d_keypoint/topdown_heatmap/coco/"
                "td-hm_ViTPose-base_8xb64-210e_coco-256x192.py")
SWIN_COCO = ("open-mmlab/mmpose configs/body_2d_keypoint/topdown_heatmap/coco/"
             "td-hm_swin-b-p4-w7_8xb32-210e_coco-256x192.py (Adam = AdamW with weight decay 0)")
VITPOSE_CROWDPOSE = ("ViTAE-Transformer/ViTPose configs/body/2d_kpt_sview_rgb_img/topdown_heatmap/crowdpose/"
                     "ViTPose_base_crowdpose_256x192.py (codec, flip shift); optimizer as " + VITPOSE_COCO)
SWIN_CROWDPOSE = (SWIN_COCO + "; codec and flip shift as open-mmlab/mmpose configs/body_2d_keypoint/"
                  "topdown_heatmap/crowdpose/td-hm_hrnet-w32_8xb64-210e_crowdpose-256x192.py")

# The optimiser recipe per backbone family: plain ViT = ViTPose-B, Swin / SwinV2 = mmpose's Swin-B (its Adam without
# weight decay is AdamW with weight_decay 0; clip_grad 0 = no clipping).
_VIT_OPTIM = dict(batch_size=512, weight_decay=0.1, layer_decay=0.75, clip_grad=1.0)
_SWIN_OPTIM = dict(batch_size=256, weight_decay=0.0, layer_decay=1.0, clip_grad=0.0)
COCO_RECIPES: dict[str, mm.FamilyRecipe] = {
    "plain": mm.FamilyRecipe(VITPOSE_COCO, dict(_VIT_OPTIM, codec="udp")),
    "swin": mm.FamilyRecipe(SWIN_COCO, dict(_SWIN_OPTIM, codec="msra")),
}
CROWDPOSE_RECIPES: dict[str, mm.FamilyRecipe] = {
    "plain": mm.FamilyRecipe(VITPOSE_CROWDPOSE, dict(_VIT_OPTIM, codec="msra")),
    "swin": mm.FamilyRecipe(SWIN_CROWDPOSE, dict(_SWIN_OPTIM, codec="msra")),
}
CODECS = ("udp", "msra")


class _PoseAdapter(mm.TrainedTask):
    scope = "mmpose"
    train_share = 0.8
    params: ClassVar[dict[str, Param]] = {
        **mm.TrainedTask.params,
        "schedule": Param("step", str, "lr schedule after the warm-up", choices=mm.SCHEDULES),
        "batch_size": Param(None, int, "TOTAL batch over all processes, lr is for it (null: ViT 512 / Swin 256)",
                            nullable=True),
        "weight_decay": Param(None, float, "AdamW weight decay (null: ViT 0.1 / Swin 0, mmpose's Adam)",
                              nullable=True),
        "layer_decay": Param(None, float, "layer-wise lr decay rate, 1: none (null: ViT 0.75 / Swin 1)",
                             nullable=True),
        "clip_grad": Param(None, float, "max gradient L2 norm, 0: no clipping (null: ViT 1.0 / Swin 0)",
                           nullable=True),
        "codec": Param("udp", str, "heatmap codec: udp (UDPHeatmap, UDP affine) or msra (MSRAHeatmap, plain affine); "
                                   "null: the family's (COCO: ViT udp / Swin msra; CrowdPose: msra)",
                       nullable=True, choices=CODECS),
        "shift_heatmap": Param(None, bool, "flip test: shift the flipped heatmaps by one pixel (null: msra yes, "
                                           "udp no, as mmpose's configs)", nullable=True),
        "half_body_min_keypoints": Param(9, int, "half-body augmentation only for persons with at least this many "
                                                 "labelled keypoints (mmpose's min_total_keypoints)"),
        "test_batch_size": Param(32, int, "evaluation batch per process"),
        "input_size": Param([256, 192], list, "crop (height, width) in pixels; a multiple of the backbone stride"),
        "sigma": Param(2.0, float, "Gaussian sigma of the target heatmaps"),
        "deconv_channels": Param(256, int, "width of the head's deconvolutions"),
        "flip_test": Param(True, bool, "average the heatmaps of the image and its mirror"),
    }
    # filled by subclasses
    dataset_type = ""
    metric_kind = ""  # 'coco' | 'crowdpose'
    num_keypoints = 0
    train_ann = val_ann = ""
    train_img = val_img = ""
    det_file = ""
    layout_check = mini_maker = ""  # function names in tasks/pose/layout.py and tasks/pose/mini.py

    def training_params(self) -> dict:
        p = super().training_params()
        if p["codec"] is None:  # a family without a recipe: the suite's default
            p["codec"] = "udp"
        if p["shift_heatmap"] is None:
            p["shift_heatmap"] = p["codec"] == "msra"
        return p

    # -- data --------------------------------------------------------------------------------------------------
    @classmethod
    def check_data(cls, spec, root: Path) -> None:
        super().check_data(spec, root)  # the layout entries, with the spec's hint
        getattr(layout, cls.layout_check)(root, det_file=cls.det_file)

    @classmethod
    def make_mini(cls, spec, out_dir: Path, seed: int) -> None:
        from . import mini

        getattr(mini, cls.mini_maker)(out_dir, seed=seed)

    def _split_files(self, ann: str, det: str | None, tag: str) -> tuple[str, str | None]:
        """Annotation (and box) files for this run: the originals, or their first-N-images subset."""
        root = self.ctx.data_root
        if not self.ctx.subset:
            return str(root / ann), (str(root / det) if det else None)
        out = self.ctx.work_dir / "subset"
        out.mkdir(parents=True, exist_ok=True)
        gt = json.loads((root / ann).read_text())
        keep = sorted(img["id"] for img in gt["images"])[: self.ctx.subset]
        keep_set = set(keep)
        gt["images"] = [img for img in gt["images"] if img["id"] in keep_set]
        gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in keep_set]
        ann_out = out / f"{tag}_{Path(ann).name}"
        ann_out.write_text(json.dumps(gt))
        det_out = None
        if det:
            boxes = [b for b in json.loads((root / det).read_text()) if b["image_id"] in keep_set]
            det_out = out / f"{tag}_{Path(det).name}"
            det_out.write_text(json.dumps(boxes))
        return str(ann_out), (str(det_out) if det_out else None)

    def _dataset(self, ann: str, img: str, pipeline: list, *, test: bool, bbox_file: str | None = None) -> dict:
        cfg = dict(type=self.dataset_type, data_root=str(self.ctx.data_root), data_mode="topdown", ann_file=ann,
                   data_prefix=dict(img=img), pipeline=pipeline, test_mode=test)
        if bbox_file:
            cfg["bbox_file"] = bbox_file
        return cfg

    def _metric(self, ann: str, tag: str) -> dict:
        cfg = dict(type="CocoMetric", ann_file=ann, outfile_prefix=str(self.ctx.work_dir / f"keypoints_{tag}"))
        if self.metric_kind == "crowdpose":
            cfg.update(iou_type="keypoints_crowd", use_area=False, prefix="crowdpose")
        return cfg

    def _codec(self) -> dict:
        h, w = (int(v) for v in self.p["input_size"])  # (height, width) as the papers write 256x192
        stride = 4
        kind = {"udp": "UDPHeatmap", "msra": "MSRAHeatmap"}[self.p["codec"]]
        return dict(type=kind, input_size=(w, h), heatmap_size=(w // stride, h // stride),
                    sigma=float(self.p["sigma"]))

    # -- the task-specific parts of TrainedTask ----------------------------------------------------------------
    def datasets(self) -> mm.TaskData:
        from mmpose.registry import DATASETS

        codec = self._codec()
        size, udp = codec["input_size"], self.p["codec"] == "udp"
        train_pipeline = [
            dict(type="LoadImage"), dict(type="GetBBoxCenterScale"),
            dict(type="RandomFlip", direction="horizontal"),
            dict(type="RandomHalfBody", min_total_keypoints=int(self.p["half_body_min_keypoints"])),
            dict(type="RandomBBoxTransform"), dict(type="TopdownAffine", input_size=size, use_udp=udp),
            dict(type="GenerateTarget", encoder=codec), dict(type="PackPoseInputs")]
        test_pipeline = [dict(type="LoadImage"), dict(type="GetBBoxCenterScale"),
                         dict(type="TopdownAffine", input_size=size, use_udp=udp), dict(type="PackPoseInputs")]
        train_ann, _ = self._split_files(self.train_ann, None, "train")
        val_ann, det = self._split_files(self.val_ann, self.det_file, "val")
        train_set = DATASETS.build(self._dataset(train_ann, self.train_img, train_pipeline, test=False))
        if len(train_set) == 0:
            raise DataError(f"task {self.ctx.spec.name}: no person with labelled keypoints in {train_ann}",
                            "check the annotation file (num_keypoints > 0 needed for training)")
        work = self.ctx.work_dir
        return mm.TaskData(
            train=train_set,
            evaluations=[
                mm.Evaluation("gt_boxes", self._dataset(val_ann, self.val_img, test_pipeline, test=True),
                              self._metric(val_ann, "gtbox")),
                mm.Evaluation("detected_boxes", self._dataset(val_ann, self.val_img, test_pipeline, test=True,
                                                              bbox_file=det), self._metric(val_ann, "detbox"))],
            summary=f"{len(train_set)} training instances",
            extra={"predictions": {"detected_boxes": str(work / "keypoints_detbox.keypoints.json"),
                                   "gt_boxes": str(work / "keypoints_gtbox.keypoints.json")},
                   "train_instances": len(train_set)},
            digest=dict(train=train_ann, val=val_ann))

    def model(self) -> dict:
        from benchmark.backbone import native_level, output_channels

        p, codec = self.p, self._codec()
        # Swin: stride 32 + 3 deconvs (SimpleBaseline); ViT-B/16: stride 16 + 2 deconvs (ViTPose)
        level = native_level(self.meta)
        stride, (h, w) = 4 * 2 ** level, p["input_size"]
        if h % stride or w % stride:
            raise DataError(f"task {self.ctx.spec.name}: input_size {h}x{w} is not a multiple of this backbone's "
                            f"stride {stride} (the heatmaps would not align)",
                            f"use e.g. --set input_size=[{-(-h // stride) * stride},{-(-w // stride) * stride}]")
        channels = output_channels(self.meta, (level,))[0]
        width = int(p["deconv_channels"])
        return dict(
            type="TopdownPoseEstimator",
            data_preprocessor=dict(type="PoseDataPreprocessor", mean=mm.IMAGENET_MEAN, std=mm.IMAGENET_STD,
                                   bgr_to_rgb=True),
            backbone=self.backbone(out_indices=(level,)),
            head=dict(type="HeatmapHead", in_channels=channels, out_channels=self.num_keypoints,
                      deconv_out_channels=(width,) * level, deconv_kernel_sizes=(4,) * level,
                      loss=dict(type="KeypointMSELoss", use_target_weight=True), decoder=codec),
            test_cfg=dict(flip_test=bool(p["flip_test"]), flip_mode="heatmap",
                          shift_heatmap=bool(p["shift_heatmap"])))

    def metrics(self, results: dict[str, dict[str, float]]) -> dict[str, float]:
        prefix = "crowdpose" if self.metric_kind == "crowdpose" else "coco"
        names = {"AP": "AP", "AP50": "AP .5", "AP75": "AP .75", "AR": "AR"}
        if self.metric_kind == "crowdpose":
            names.update(AP_easy="AP(E)", AP_medium="AP(M)", AP_hard="AP(H)")
        out = mm.pick(results["detected_boxes"], {k: f"{prefix}/{v}" for k, v in names.items()}, scale=100.0)
        out.update(mm.pick(results["gt_boxes"], {"AP_gt": f"{prefix}/AP"}, scale=100.0))
        return out


class CocoPose(_PoseAdapter):
    family_recipes = COCO_RECIPES
    dataset_type = "CocoDataset"
    metric_kind = "coco"
    num_keypoints = 17
    train_ann, val_ann = "annotations/person_keypoints_train2017.json", "annotations/person_keypoints_val2017.json"
    train_img, val_img = "train2017/", "val2017/"
    det_file = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"
    layout_check, mini_maker = "check_coco_pose", "make_coco_pose"


class CrowdPose(_PoseAdapter):
    family_recipes = CROWDPOSE_RECIPES
    dataset_type = "CrowdPoseDataset"
    metric_kind = "crowdpose"
    num_keypoints = 14
    train_ann, val_ann = "annotations/mmpose_crowdpose_trainval.json", "annotations/mmpose_crowdpose_test.json"
    train_img = val_img = "images/"
    det_file = "annotations/det_for_crowd_test_0.1_0.5.json"
    layout_check, mini_maker = "check_crowdpose", "make_crowdpose"
