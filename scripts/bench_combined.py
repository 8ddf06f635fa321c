#!/usr/bin/env python
"""Time one training step of the combined tasks' models against mmdet's / mmseg's own reference models.

Cases, each at the paper's size and per-GPU batch of its recipe (``--quick``: small images, a smoke test):
  maskrcnn_vit_b   ``coco_det`` on ``vit_base_patch16_224`` (ViTDet recipe: 1024 x 1024 LSJ crop, batch 1 per GPU)
                   peer: mmdet's Mask R-CNN + FPN with mmseg's own ``VisionTransformer`` (ViT-B/16, out_indices
                   3/5/7/11) and ``MultiLevelNeck`` (scales 4/2/1/0.5) in front of the FPN — the pre-ViTDet way the
                   OpenMMLab configs put a plain ViT under a pyramid head (mmdet's wheel has no ViTDet).
  maskrcnn_swin_b  ``coco_det`` on ``swin_base_patch4_window7_224`` (Swin 3x recipe: 1333 x 800, batch 2 per GPU)
                   peer: mmdet's ``mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco`` config with its own
                   ``SwinTransformer`` at Swin-B sizes (embed 128, depths 2/2/18/2, heads 4/8/16/32).
  upernet_vit_b    ``ade20k_seg`` on ``vit_base_patch16_224`` (512 x 512 crop, batch 2 per GPU)
                   peer: mmseg's ``vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512`` config (its own ViT-B/16 +
                   ``MultiLevelNeck`` + UPerHead + FCN auxiliary head).

The suite's model is the config the task adapter builds for the preset ``paper`` (``adapter.model()``, the
``MIMBackbone`` on a random canonical checkpoint: speed does not depend on the weights) with the optimizer the task
builds (``tasks.openmmlab.optim_wrapper``: layer decay where the recipe has it); the peer is the reference config's
model and ``optim_wrapper``. Both take the same synthetic batch (uint8 images; detection: 8 boxes with box masks per
image; segmentation: a random 150-class label map) through ``model.train_step(data, optim_wrapper)`` — exactly what
mmengine's training loop calls: data preprocessor, forward, losses, backward, (clipping,) optimizer step. SyncBN of
the reference configs becomes BN (one process). CUDA: both under ``AmpOptimWrapper`` with bfloat16.

Timing: untimed warm-up steps, then the median of the timed steps; images/s = batch / median. Memory: CPU peak RSS
of the timed phase (the high-water mark reset before it), CUDA ``max_memory_allocated``. Each model in its own child
process; the suite's overhead is its median step time over the peer's, minus 1 (target: <= 5 %).

Results: ``results/perf/combined_<device>[_<tag>].json`` and ``.md``.

Usage: python scripts/bench_combined.py [--device cpu|cuda] [--quick] [--cases a,b] [--steps N --warmup N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_pretrain import cpu_description, matmul_rate  # noqa: E402  (scripts/ is on sys.path when run as a script)
from bench_semantic import busy_cpu_seconds, load_average  # noqa: E402
from bench_tracking import peak_mib, reset_peak  # noqa: E402

MMDET_CFG = "mmdet/.mim/configs/swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py"
MMSEG_CFG = "mmseg/.mim/configs/vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py"
CASES = {
    # key: task, arch, (height, width), per-GPU batch, quick (height, width)
    "maskrcnn_vit_b": ("coco_det", "vit_base_patch16_224", (1024, 1024), 1, (256, 256)),
    "maskrcnn_swin_b": ("coco_det", "swin_base_patch4_window7_224", (800, 1333), 2, (224, 320)),
    "upernet_vit_b": ("ade20k_seg", "vit_base_patch16_224", (512, 512), 2, (128, 128)),
}
SWIN_B = dict(embed_dims=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32])
BOXES = 8


def log(msg: str) -> None:
    print(f"[bench_combined] {msg}", file=sys.stderr, flush=True)


def _site() -> Path:
    import mmdet

    return Path(mmdet.__file__).resolve().parent.parent


def _no_syncbn(cfg):
    """SyncBN needs a process group; one process gets plain BN (same math on one device)."""
    if isinstance(cfg, dict):
        return {k: ("BN" if k == "type" and v == "SyncBN" else _no_syncbn(v)) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [_no_syncbn(v) for v in cfg]
    return cfg


def suite_model(task: str, arch: str, device: str, tmp: Path) -> tuple[dict, dict]:
    """The task adapter's model config and optim-wrapper config for preset ``paper`` on a random ``arch``."""
    from benchmark import checkpoint, registry
    from tasks import openmmlab as mm
    from tasks.base import RunContext

    spec = registry.get_task(task)
    ckpt = checkpoint.save_canonical(tmp / "ckpt.pth", *checkpoint.create_random(arch, {}, seed=0))
    ctx = RunContext(spec=spec, ckpt=ckpt, ckpt_sha256="", data_root=tmp, preset="paper",
                     params=registry.resolve_params(spec, "paper"), seed=0, subset=0, work_dir=tmp, cache_dir=tmp,
                     device=device)
    adapter = registry.load_adapter(spec)(ctx)
    p = adapter.p
    plan = mm.Plan(world=1, per_process_batch=1, total_batch=int(p["batch_size"]), max_iters=1, iters_per_epoch=1,
                   lr=float(p["lr"]), min_lr=0.0, warmup_iters=0)
    return adapter.model(), mm.optim_wrapper(p, plan, mm.device_of(device))


def peer_model(case: str, device: str) -> tuple[dict, dict]:
    """The reference config's model and optim wrapper (its own backbone)."""
    from mmengine.config import Config

    if case == "upernet_vit_b":
        cfg = Config.fromfile(str(_site() / MMSEG_CFG))
        model = cfg.model.to_dict()
        model.pop("pretrained", None)
        model["decode_head"]["num_classes"] = model["auxiliary_head"]["num_classes"] = 150
    else:
        cfg = Config.fromfile(str(_site() / MMDET_CFG))
        model = cfg.model.to_dict()
        if case == "maskrcnn_swin_b":
            model["backbone"].update(SWIN_B, init_cfg=None)
            model["neck"]["in_channels"] = [128, 256, 512, 1024]
        else:
            model["backbone"] = dict(type="mmseg.VisionTransformer", img_size=(1024, 1024), patch_size=16,
                                     embed_dims=768, num_layers=12, num_heads=12, mlp_ratio=4,
                                     out_indices=(3, 5, 7, 11), qkv_bias=True, drop_path_rate=0.1,
                                     with_cls_token=False, norm_cfg=dict(type="LN", eps=1e-6),
                                     interpolate_mode="bicubic")
            model["neck"] = [dict(type="mmseg.MultiLevelNeck", in_channels=[768] * 4, out_channels=768,
                                  scales=[4, 2, 1, 0.5]),
                             dict(model["neck"], in_channels=[768] * 4)]
    optim = cfg.optim_wrapper.to_dict()
    if device == "cuda":
        optim.update(type="AmpOptimWrapper", dtype="bfloat16")
    return _no_syncbn(model), optim


def batch(task: str, size: tuple[int, int], n: int, seed: int = 0) -> dict:
    """A synthetic training batch as the task's dataloader would give it (before the data preprocessor)."""
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(seed)
    h, w = size
    inputs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for _ in range(n)]
    samples = []
    for _ in range(n):
        if task == "ade20k_seg":
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample

            s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
            s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, h, w), generator=g))
        else:
            from mmdet.structures import DetDataSample
            from mmdet.structures.mask import BitmapMasks
            from mmengine.structures import InstanceData

            xy = torch.rand(BOXES, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
            wh = 32 + torch.rand(BOXES, 2, generator=g) * torch.tensor([w * 0.25, h * 0.25])
            boxes = torch.cat([xy, xy + wh], 1)
            masks = np.zeros((BOXES, h, w), np.uint8)
            for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                masks[i, y0:y1, x0:x1] = 1
            s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0)))
            s.gt_instances = InstanceData(bboxes=boxes, labels=torch.randint(0, 80, (BOXES,), generator=g),
                                          masks=BitmapMasks(masks, h, w))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def child(spec: dict) -> dict:
    """Build one model, time its training steps."""
    import torch
    from mmengine.config import ConfigDict
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    import benchmark.backbone  # noqa: F401 - MIMBackbone and the layer-decay constructor in mmengine's registry

    case, impl, device = spec["case"], spec["impl"], spec["device"]
    task, arch, size, n, quick_size = CASES[case]
    size = tuple(quick_size) if spec["quick"] else size
    scope = "mmseg" if task == "ade20k_seg" else "mmdet"
    init_default_scope(scope)
    import mmdet.models  # noqa: F401
    import mmseg.models  # noqa: F401
    from mmengine.registry import MODELS

    with tempfile.TemporaryDirectory() as tmp:
        model_cfg, optim_cfg = (suite_model(task, arch, device, Path(tmp)) if impl == "suite"
                                else peer_model(case, device))
        if model_cfg["data_preprocessor"].get("size"):  # mmseg pads every input to the training crop
            model_cfg["data_preprocessor"]["size"] = size
        torch.manual_seed(0)
        model = MODELS.build(ConfigDict(model_cfg))  # mmdet reads train_cfg.rpn as attributes
        model.init_weights()
    model = model.to(device).train()
    optim = build_optim_wrapper(model, optim_cfg)
    data = batch(task, size, n)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6

    def step() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        losses = model.train_step(data, optim)
        if device == "cuda":
            torch.cuda.synchronize()
        loss = sum(v for k, v in losses.items() if "loss" in k)
        if not torch.isfinite(loss):
            raise SystemExit(f"{case} {impl}: non-finite loss")
        return time.perf_counter() - t

    for i in range(spec["warmup"]):
        log(f"{case} {impl}: warm-up step {i + 1}: {step():.2f} s")
    reset_ok = reset_peak(device)
    times = []
    for i in range(spec["steps"]):
        times.append(step())
        log(f"{case} {impl}: step {i + 1}: {times[-1]:.2f} s")
    med = statistics.median(times)
    return dict(case=case, impl=impl, task=task, arch=arch, size=list(size), batch=n, params_m=params_m,
                median_s=med, min_s=min(times), max_s=max(times), images_s=n / med, peak_mib=peak_mib(device),
                peak_reset=reset_ok, steps=len(times))


def run_child(spec: dict) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE, text=True,
                         cwd=REPO)
    if res.returncode != 0:
        sys.exit(f"child {spec['case']} {spec['impl']} failed (exit {res.returncode})")
    return json.loads(res.stdout.strip().splitlines()[-1])


def write(results: dict, out_dir: Path, stem: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    m = results["meta"]
    dev = m["device"]
    mem = "peak GPU memory allocated" if dev == "cuda" else "peak RSS"
    lines = [f"# Combined tasks: one training step, the suite's model vs the OpenMMLab reference ({dev}"
             f"{', quick' if m['quick'] else ''})", "", f"- machine: {m['machine']}",
             f"- torch {m['torch']}, mmdet {m['mmdet']}, mmseg {m['mmseg']}, mmengine {m['mmengine']}; "
             f"{m['threads']} torch threads" + (f"; {m['cuda_device']}" if m["cuda_device"] else ""),
             f"- fp32 matmul rate start / end: {m['matmul_gflops_start']:.1f} / {m['matmul_gflops_end']:.1f} "
             f"GFLOP/s; load average start / end: {m['load_avg_1min_start']:.2f} / {m['load_avg_1min_end']:.2f}; "
             "other processes' CPU use: " + ("unknown" if m["other_cores"] is None else f"{m['other_cores']:.2f} "
                                              "cores"),
             f"- date: {m['date']}; whole run {m['wall_s']:.0f} s; {m['steps']} timed steps after {m['warmup']} "
             f"warm-up step(s), median" + (", bf16 (AmpOptimWrapper)" if dev == "cuda" else ", fp32"), "",
             "`model.train_step` (data preprocessor + forward + losses + backward + optimizer step) on the same "
             "synthetic batch. Suite = the task adapter's model for preset `paper` (`MIMBackbone` + the OpenMMLab "
             "heads) and its optimizer; peer = the OpenMMLab reference config with its own backbone (see "
             "scripts/bench_combined.py). Overhead = suite step time ÷ peer step time − 1.", "",
             f"| case | model | input (h×w) × batch | params (M) | images/s | median s/step (min–max) | {mem} MiB | "
             "overhead vs peer |", "|---|---|---|---|---|---|---|---|"]
    for case in results["cases"]:
        rows = {r["impl"]: r for r in results["runs"] if r["case"] == case}
        for impl in ("suite", "peer"):
            r = rows[impl]
            over = f"{rows['suite']['median_s'] / rows['peer']['median_s'] - 1:+.1%}" if impl == "suite" else "–"
            name = f"suite `{r['task']}` on `{r['arch']}`" if impl == "suite" else PEER_NAMES[case]
            lines.append(f"| {case} | {name} | {r['size'][0]}×{r['size'][1]} × {r['batch']} | {r['params_m']:.1f} | "
                         f"{r['images_s']:.3f} | {r['median_s']:.2f} ({r['min_s']:.2f}–{r['max_s']:.2f}) | "
                         f"{r['peak_mib']:.0f}{'' if r['peak_reset'] else ' *'} | {over} |")
    lines += ["", NOTE]
    if dev == "cpu" and m["other_cores"] is not None and m["other_cores"] > 0.25:
        lines += ["", f"WARNING: other processes kept {m['other_cores']:.2f} cores busy during this run."]
    md = out_dir / f"{stem}.md"
    md.write_text("\n".join(lines) + "\n")
    return md


PEER_NAMES = {
    "maskrcnn_vit_b": "peer: mmdet Mask R-CNN + FPN, mmseg `VisionTransformer` + `MultiLevelNeck`",
    "maskrcnn_swin_b": "peer: mmdet `mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x` at Swin-B sizes",
    "upernet_vit_b": "peer: mmseg `vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512`",
}
NOTE = ("What it means: the suite's models are the reference architectures with the suite's backbone wrapper "
        "(`MIMBackbone`: timm trunk + the shared feature pyramid) in place of OpenMMLab's own backbone; the heads, "
        "losses, data preprocessor and training loop are OpenMMLab's, unchanged. The overhead column is therefore "
        "the cost of that wrapper and of the backbone implementation (timm vs mmdet / mmseg), not of the suite's "
        "runner (its hooks do O(1) work per iteration). For the plain ViT the two pyramids differ by design: the "
        "suite's ViTDet-style simple pyramid from the last block vs the reference's multi-level neck on four "
        "blocks (and the suite's timm attention uses fused scaled-dot-product attention).")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    import mmdet
    import mmengine
    import mmseg
    import torch

    steps = args.steps or (2 if args.quick else (10 if args.device == "cuda" else 3))
    warmup = args.warmup if args.warmup is not None else (1 if args.device == "cpu" else 3)
    cases = [c for c in args.cases.split(",") if c]
    t0, busy0, own0 = time.time(), busy_cpu_seconds(), time.process_time()
    meta = dict(device=args.device, quick=args.quick, machine=cpu_description(), torch=torch.__version__,
                mmdet=mmdet.__version__, mmseg=mmseg.__version__, mmengine=mmengine.__version__,
                threads=torch.get_num_threads(),
                cuda_device=torch.cuda.get_device_name() if args.device == "cuda" else "",
                matmul_gflops_start=matmul_rate(args.device) / 1e9, load_avg_1min_start=load_average(),
                steps=steps, warmup=warmup,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    runs = []
    for case in cases:
        for impl in ("peer", "suite"):  # peer first: a warm page cache favours the second, i.e. not the suite
            log(f"{case}: {impl}")
            runs.append(run_child(dict(case=case, impl=impl, device=args.device, quick=args.quick, steps=steps,
                                       warmup=warmup)))
    wall = time.time() - t0
    busy = busy_cpu_seconds()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the children's CPU time is ours too
    own = time.process_time() - own0 + children.ru_utime + children.ru_stime
    meta.update(matmul_gflops_end=matmul_rate(args.device) / 1e9, load_avg_1min_end=load_average(), wall_s=wall,
                other_cores=None if busy0 is None or busy is None else max(0.0, (busy - busy0 - own) / wall))
    stem = f"combined_{args.device}" + ("_quick" if args.quick else "")
    md = write(dict(meta=meta, cases=cases, runs=runs), REPO / "results" / "perf", stem)
    print(md.read_text())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
