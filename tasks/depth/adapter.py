"""Monocular depth (NYUv2, KITTI Eigen split) on mmsegmentation 1.2.2's DepthEstimator with the benchmarked backbone.

Protocol (the paper's depth code; shared PROTOCOLS.md):

* model: ``FlipDepthEstimator`` (mmseg ``DepthEstimator`` + flip test); backbone ``MIMBackbone`` (Swin: its
  stride-32 stage 4, as the paper; plain ViT: the map at its patch stride); ``MIMDepthHead`` (stride-2 deconvs down
  to stride 4 — 3 for Swin, 2 for ViT-B/16 —, conv + BN + ReLU, two ×2 upsamples, conv head, ``sigmoid × max_depth``);
  SiLog loss (λ 0.5).
* training: random crop + horizontal flip + mmseg's ``RandomDepthMix`` (CutDepth-style); AdamW (wd 0.05) with
  layer-wise lr decay, drop path; lr rises linearly from ``min_lr`` to ``lr`` over the first half of training and
  falls back with a polynomial (power 0.9) over the second half (the depth code's one-cycle schedule).
* evaluation: whole image (KITTI: its KB crop) with the flip test; ``MIMDepthMetric`` — depth range and crop of
  the dataset (NYU: Eigen crop, [1e-3, 10] m; KITTI: Garg crop, [1e-3, 80] m), errors per image, averaged over
  images. Depth in metres.

Dataset settings (roots, crops, depth scale) come from the spec's ``dataset`` section; a generated mini dataset
may carry ``dataset_overrides.json`` at its root (e.g. the KB crop at its 1/8 scale), merged over them.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.backbone import native_level, output_channels
from benchmark.checkpoint import load_canonical
from benchmark.errors import DataError
from tasks import openmmlab as mm
from tasks.base import TaskAdapter

from . import layout

OVERRIDES = "dataset_overrides.json"


class _DepthAdapter(TaskAdapter):
    def dataset_settings(self) -> dict:
        settings = dict(self.ctx.spec.dataset)
        extra = self.ctx.data_root / OVERRIDES
        if extra.is_file():
            try:
                settings.update(json.loads(extra.read_text()))
            except ValueError as exc:
                raise DataError(f"{extra} is not valid JSON ({exc})", "fix or delete the file") from exc
        return settings

    # subclasses: the dataset config for a split, and the pipeline steps right after loading
    def _dataset(self, split: str, pipeline: list, ds: dict) -> dict:
        raise NotImplementedError

    def _after_load(self, ds: dict) -> list[dict]:
        return []

    def _model(self, ds: dict) -> dict:
        p, ckpt = self.ctx.params, str(self.ctx.ckpt)
        meta = load_canonical(ckpt).meta
        level = native_level(meta)  # Swin: stride 32 as the paper's SwinV2; ViT: its patch stride
        channels = output_channels(meta, (level,))[0]
        width = int(p.get("deconv_width", 32))
        filters = (width,) * level  # stride 4 * 2**level -> stride 4 in `level` deconvs, then x4 upsampling
        return dict(
            type="FlipDepthEstimator",
            data_preprocessor=dict(type="SegDataPreProcessor", mean=mm.IMAGENET_MEAN, std=mm.IMAGENET_STD,
                                   bgr_to_rgb=True, pad_val=0, seg_pad_val=0, size_divisor=32),
            backbone=dict(type="MIMBackbone", checkpoint=ckpt, out_indices=(level,),
                          drop_path_rate=float(p.get("drop_path", 0.0)), allow_partial=self.ctx.allow_partial),
            decode_head=dict(type="MIMDepthHead", in_channels=channels, channels=p.get("decoder_channels"),
                             max_depth=float(ds["max_depth"]),
                             num_deconv_filters=filters,
                             loss_decode=dict(type="SiLogLoss")),
            test_cfg=dict(mode="whole", flip=bool(p.get("flip_test", True))))

    def _schedule(self, max_iters: int) -> list[dict]:
        p = self.ctx.params
        half = max(1, max_iters // 2)
        ratio = float(p.get("min_lr", p["lr"])) / float(p["lr"])
        return [dict(type="LinearLR", start_factor=ratio, end_factor=1.0, by_epoch=False, begin=0, end=half),
                dict(type="PolyLR", eta_min=float(p.get("min_lr", 0.0)), power=0.9, by_epoch=False, begin=half,
                     end=max_iters)]

    def run(self) -> dict[str, float]:
        from mmengine.registry import init_default_scope
        from mmseg.registry import DATASETS

        import benchmark.backbone  # noqa: F401 - MIMBackbone in mmengine's root registry
        from . import model  # noqa: F401 - registers the depth head and the flip-test estimator
        from .mmseg_parts import META_KEYS  # (and registers the KITTI dataset, the KB crop, the metric)

        init_default_scope("mmseg")
        ctx, p = self.ctx, self.ctx.params
        device = mm.device_of(ctx.device)
        ds = self.dataset_settings()
        scale = float(ds["depth_scale"])
        load = [dict(type="LoadImageFromFile"), dict(type="LoadDepthAnnotation", depth_rescale_factor=1.0 / scale)]
        load += self._after_load(ds)
        crop_h, crop_w = (int(v) for v in p["crop_size"])
        train_pipeline = load + [
            dict(type="RandomDepthMix", prob=float(p.get("depth_mix", 0.25))),
            dict(type="RandomFlip", prob=0.5),
            dict(type="RandomCrop", crop_size=(crop_h, crop_w)),
            dict(type="PackSegInputs", meta_keys=META_KEYS)]
        test_pipeline = load + [dict(type="PackSegInputs", meta_keys=META_KEYS)]

        train_cfg = self._dataset("train", train_pipeline, ds)
        test_cfg = self._dataset("test", test_pipeline, ds)
        if ctx.subset:
            train_cfg["indices"] = test_cfg["indices"] = int(ctx.subset)  # the first N: deterministic
        train_set = DATASETS.build(train_cfg)
        test_set = DATASETS.build(test_cfg)
        if len(train_set) == 0 or len(test_set) == 0:
            raise DataError(f"task {ctx.spec.name}: empty split ({len(train_set)} train / {len(test_set)} test "
                            f"images under {ctx.data_root})", f"check the layout; see {ctx.spec.docs}")
        world = mm.world_size()
        total_batch = int(p["batch_size"])
        per_gpu = max(1, total_batch // world)
        max_iters, per_epoch = mm.iterations(p, len(train_set), per_gpu * world)
        lr_scaled = dict(p, lr=float(p["lr"]) * per_gpu * world / total_batch)
        evaluator = dict(type="MIMDepthMetric", min_depth_eval=float(ds["min_depth"]),
                         max_depth_eval=float(ds["max_depth"]), crop=ds.get("eval_crop"))
        model = self._model(ds)
        runner = mm.build_runner(
            work_dir=ctx.work_dir / "runner", scope="mmseg", seed=ctx.seed, device=device, model=model,
            train_dataloader=mm.dataloader(train_set, per_gpu, train=True, workers=int(p.get("workers", 0))),
            optim_wrapper_cfg=mm.optim_wrapper(lr_scaled, device), param_scheduler=self._schedule(max_iters),
            max_iters=max_iters, checkpoint_interval=int(p.get("checkpoint_interval", max(100, max_iters // 10))),
            test_dataloader=mm.dataloader(test_set, int(p.get("test_batch_size", 1)), train=False),
            test_evaluator=evaluator, report=ctx.progress, train_share=0.85,
            digest_of=dict(model=model, params=p, subset=ctx.subset, dataset=ds))
        runner.logger.info(f"{ctx.spec.name}: {len(train_set)} training / {len(test_set)} test images, "
                           f"{max_iters} iterations ({per_epoch}/epoch), total batch {per_gpu * world}, "
                           f"world size {world}")
        mm.train(runner)
        ctx.progress(0.9, "evaluating")
        metrics = runner.test()
        names = ("rmse", "abs_rel", "sq_rel", "rmse_log", "log10", "silog", "d1", "d2", "d3")
        out = mm.pick(metrics, {n: n for n in names})
        if p.get("export_backbone"):
            exported = mm.export_backbone(runner, ctx.work_dir / "backbone_finetuned.pth", ctx.spec.name)
            runner.logger.info(f"fine-tuned backbone written to {exported}")
        self.extra = {"train_images": len(train_set), "test_images": len(test_set), "iterations": max_iters}
        return self.finish(out)


class NYUDepth(_DepthAdapter):
    """NYUv2 in mmseg's NYUDataset layout (``benchmark convert-nyu`` builds it from the BTS layout)."""

    @classmethod
    def check_data(cls, spec, root: Path) -> None:
        super().check_data(spec, root)
        layout.check_nyu(root)

    @classmethod
    def make_mini(cls, spec, out_dir: Path, seed: int) -> None:
        from .mini import make_nyu

        make_nyu(out_dir, seed=seed)

    def _dataset(self, split: str, pipeline: list, ds: dict) -> dict:
        return dict(type="NYUDataset", data_root=str(self.ctx.data_root),
                    data_prefix=dict(img_path=f"images/{split}", depth_map_path=f"annotations/{split}"),
                    pipeline=pipeline, test_mode=split == "test")


class KITTIDepth(_DepthAdapter):
    """KITTI Eigen split in the BTS layout (split files + raw RGB + projected-LiDAR ground truth)."""

    @classmethod
    def check_data(cls, spec, root: Path) -> None:
        super().check_data(spec, root)
        layout.check_kitti(root, rgb_root=spec.dataset.get("rgb_root", "raw"),
                           gt_root=spec.dataset.get("gt_root", "gt_depth"))

    @classmethod
    def make_mini(cls, spec, out_dir: Path, seed: int) -> None:
        from .mini import make_kitti

        make_kitti(out_dir, seed=seed)

    def _after_load(self, ds: dict) -> list[dict]:
        return [dict(type="KBCrop", crop_size=tuple(int(v) for v in ds["kb_crop"]))]

    def _dataset(self, split: str, pipeline: list, ds: dict) -> dict:
        return dict(type="KITTIEigenDataset", data_root=str(self.ctx.data_root),
                    ann_file=ds[f"{split}_split"], rgb_root=ds.get("rgb_root", "raw"),
                    gt_root=ds.get("gt_root", "gt_depth"), pipeline=pipeline, test_mode=split == "test")
