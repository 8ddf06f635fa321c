#!/usr/bin/env python
"""Time and memory of `benchmark analyze` (benchmark/analysis/) for one ViT-B/16 at 224 px.

Setup: a random canonical ``vit_base_patch16_224`` checkpoint (``benchmark.checkpoint.create_random``; speed and
memory do not depend on the weights), 128 real Fashion-MNIST test images rendered at 224 px (``--data mini``), batch
16, as the ViT paper's attention-distance protocol (128 images). Each measurement runs in a fresh child process so
that its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` read in the child at its end) is its own:

  analyze    ``analyze([ckpt], ...)``: attention distance / entropy / diversity, within-model minibatch CKA, the
             AvgDist grid, CSVs, PNGs and report.md (everything the command does)
  baseline   the floor: load the same checkpoint and run the same 128 images through ``forward_features`` (fused
             attention, no hooks), batch 16

The difference is what the analysis adds. For scale, keeping every attention map instead of reducing it inside the
hook would need 12 layers × 128 images × 12 heads × 197² × 4 bytes ≈ 2.9 GB (float32).

Results: ``results/perf/analysis_<device>.json`` and ``.md``. Usage:
    OMP_NUM_THREADS=1 python scripts/bench_analysis.py [--device cpu] [--num-images 128] [--quick]
(--quick: a tiny ViT, 16 images: a smoke test of the script only; nothing is written to results/perf)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ARCH, KWARGS = "vit_base_patch16_224", {}
QUICK = ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4, "depth": 2, "embed_dim": 64, "num_heads": 2})


def child(mode: str, ckpt: str, out: str, num_images: int, batch: int, device: str) -> None:
    """Runs in a fresh process; prints one JSON line with its own wall time."""
    import torch

    from benchmark.analysis.compute import MiniImages, batches
    from benchmark.analysis.report import analyze
    from benchmark.checkpoint import load_backbone

    t0 = time.perf_counter()
    if mode == "analyze":
        analyze([Path(ckpt)], Path(out), mini=True, num_images=num_images, batch_size=batch, device=device)
    else:
        model = load_backbone(ckpt).to(device).eval()
        src = MiniImages(num_images)
        with torch.inference_mode():
            for idx in batches(len(src), batch):
                model.forward_features(src.batch(idx, int(model.mim_meta["img_size"])).to(device))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    print(json.dumps({"mode": mode, "wall_s": time.perf_counter() - t0, "threads": torch.get_num_threads(),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(mode: str, ckpt: Path, out: Path, num_images: int, batch: int, device: str) -> dict:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, __file__, "--child", mode, str(ckpt), str(out), str(num_images), str(batch),
                          device], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"{mode} child failed:\n{res.stderr[-3000:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])   # peak_rss_mib: the child's own ru_maxrss (Linux: KiB)
    info.update(process_wall_s=wall)
    return info


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, ckpt, out, n, batch, device = sys.argv[2:8]
        child(mode, ckpt, out, int(n), int(batch), device)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--num-images", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    from benchmark import checkpoint

    arch, kwargs = QUICK if args.quick else (ARCH, KWARGS)
    n = 16 if args.quick else args.num_images
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sd, meta = checkpoint.create_random(arch, dict(kwargs))
        ckpt = checkpoint.save_canonical(tmp / "vit.pth", sd, meta)
        del sd
        base = measure("baseline", ckpt, tmp / "unused", n, args.batch_size, args.device)
        ana = measure("analyze", ckpt, tmp / "analysis", n, args.batch_size, args.device)
        files = sorted(p.name for p in (tmp / "analysis").iterdir())
    img, patch = meta["img_size"], meta["patch_size"]
    tokens = (img // patch) ** 2 + 1
    heads = kwargs.get("num_heads", 12)
    depth = kwargs.get("depth", 12)
    result = {
        "arch": arch, "kwargs": kwargs, "img_size": img, "patch_size": patch, "images": n,
        "batch_size": args.batch_size, "device": args.device, "torch_threads": ana["threads"],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "analyze_wall_s": round(ana["wall_s"], 2), "analyze_process_wall_s": round(ana["process_wall_s"], 2),
        "analyze_peak_rss_mib": round(ana["peak_rss_mib"], 1),
        "baseline_wall_s": round(base["wall_s"], 2), "baseline_peak_rss_mib": round(base["peak_rss_mib"], 1),
        "one_map_mib": round(args.batch_size * heads * tokens ** 2 * 4 / 2 ** 20, 1),
        "all_maps_mib": round(depth * n * heads * tokens ** 2 * 4 / 2 ** 20, 1),
        "files": files,
    }
    print(json.dumps(result, indent=1))
    if args.quick:
        return 0
    out = REPO / "results" / "perf" / f"analysis_{args.device.split(':')[0]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    r = result
    md = [f"# `benchmark analyze` cost: {arch} at {img} px, {n} images, {args.device}", "",
          f"Measured by `scripts/bench_analysis.py` (each run in a fresh child process; peak RSS = the child's "
          f"`ru_maxrss`). {r['cpu_count']} CPUs visible, torch threads {r['torch_threads']} "
          f"(OMP_NUM_THREADS={r['omp_num_threads']}), Python {r['python']}. Random weights (cost does not depend on "
          f"them); real Fashion-MNIST test images rendered at {img} px; batch {args.batch_size}.", "",
          "| run | wall time (s) | peak RSS (MiB) |", "|---|---:|---:|",
          f"| analyze (attention stats for {depth} layers × {heads} heads, within-model CKA, AvgDist grid, CSV/PNG/"
          f"report) | {r['analyze_wall_s']} | {r['analyze_peak_rss_mib']} |",
          f"| baseline: load + fused forward_features of the same images | {r['baseline_wall_s']} | "
          f"{r['baseline_peak_rss_mib']} |", "",
          f"One layer's attention map for one batch is {r['one_map_mib']} MiB (float32, {tokens} tokens); keeping all "
          f"of them for all images would be {r['all_maps_mib']} MiB. The analysis reduces each map to per-head "
          "numbers inside its hook, so only one such map (plus its float64 temporaries) is alive at a time.", "",
          f"Files written: {', '.join(files)}.", ""]
    out.with_suffix(".md").write_text("\n".join(md))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
