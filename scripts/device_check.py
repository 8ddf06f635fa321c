"""The GPU half of scripts/device_check.sh: every trained task's `paper` preset on a random ViT-B/16, bf16 AMP.

Per task: the model, optimiser wrapper (layer decay, clipping, AMP) and training pipeline of `benchmark run --preset
paper` for 8 GPUs (so the per-GPU batch is the official one), on mini data in the real layouts at the real image
sizes; 2 warm-up + `--steps` timed `train_step`s on one GPU: samples/s and peak GPU memory; FLOPs of one training
sample from `benchmark plan`'s counter on the same model, hence the achieved FLOP rate and its share of the GPU's
bf16 peak (the utilisation `benchmark plan` then uses). Writes results/perf/paper_cuda.md and
results/perf/plan_utilisation_cuda.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TASKS = ("coco_pose", "crowdpose", "nyu_depth", "kitti_depth", "got10k", "lasot", "coco_det", "ade20k_seg",
         "ade20k_m2f", "k12_flowers102")


def gpu_key(name: str) -> str | None:
    from benchmark.plan import GPU_PEAK_TFLOPS

    return next((k for k in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True) if k in name.replace(" ", "")), None)


def check_task(name: str, ckpt: Path, work: Path, steps: int) -> dict:
    import torch
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import Runner

    from benchmark import plan, registry
    from tasks.openmmlab import dataloader, optim_wrapper

    spec = registry.get_task(name)
    it = plan.inspect(spec, ckpt, "paper", {}, nproc=8, data_root=None, work_dir=work)
    model = plan.build_model(it.trained, it.trained.model())
    flops = plan.measure(model, it.data, it.run, it.sizes, False)["train_gflops_per_sample"] * 1e9
    model = model.cuda()
    wrapper = build_optim_wrapper(model, optim_wrapper(it.trained.p, it.run, "cuda"))
    batch = it.run.per_process_batch
    loader = Runner.build_dataloader(dataloader(it.data.train, batch, train=True, collate=it.data.collate), seed=0)
    batches = iter(loader)
    model.train()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(2 + steps):
        data = next(batches)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.train_step(data, wrapper)
        torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return dict(task=name, batch=batch, s_per_iter=step, samples_per_s=batch / step,
                peak_gb=torch.cuda.max_memory_allocated() / 2**30, train_gflops_per_sample=flops / 1e9,
                tflops_achieved=flops * batch / step / 1e12)


def main() -> int:
    import torch

    from benchmark import checkpoint
    from benchmark.plan import GPU_PEAK_TFLOPS

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "perf")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    gpu = torch.cuda.get_device_name(0)
    key = gpu_key(gpu)
    work = Path(tempfile.mkdtemp(prefix="device-check-"))
    sd, meta = checkpoint.create_random("vit_base_patch16_224", {}, seed=0)
    ckpt = checkpoint.save_canonical(work / "vit_b.pth", sd, meta)
    rows = []
    for name in args.tasks.split(","):
        t0 = time.time()
        try:
            rows.append(check_task(name, ckpt, work, args.steps))
            print(f"{name}: ok in {time.time() - t0:.0f} s: {rows[-1]}", flush=True)
        except Exception as exc:  # noqa: BLE001 - one task's failure is a table row, not the end of the check
            traceback.print_exc()
            rows.append(dict(task=name, error=f"{type(exc).__name__}: {str(exc)[:200]}"))
        torch.cuda.empty_cache()
    peak = GPU_PEAK_TFLOPS.get(key) if key else None
    lines = [f"# `paper` presets on one {gpu}, ViT-B/16, bf16 AMP", "",
             f"torch {torch.__version__}; per-GPU batch = the paper's total batch / 8; {args.steps} timed steps "
             f"(median) after 2 warm-up; mini data in the real layouts at the real image sizes. FLOPs: torch's "
             f"counter (lower bound: mmcv kernels are not counted).", "",
             "| task | batch / GPU | s / iter | samples / s | peak GPU GiB | train GFLOPs / sample | TFLOP/s | "
             "share of bf16 peak |", "|---|---|---|---|---|---|---|---|"]
    shares = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['task']} | error: {r['error']} | | | | | | |")
            continue
        share = r["tflops_achieved"] / peak if peak else None
        if share:
            shares.append(share)
        lines.append(f"| {r['task']} | {r['batch']} | {r['s_per_iter']:.3f} | {r['samples_per_s']:.1f} | "
                     f"{r['peak_gb']:.1f} | {r['train_gflops_per_sample']:.1f} | {r['tflops_achieved']:.1f} | "
                     + (f"{share:.0%} |" if share else "— |"))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "paper_cuda.md").write_text("\n".join(lines) + "\n")
    if key and shares:
        path = args.out / "plan_utilisation_cuda.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        known[key] = dict(utilisation=round(statistics.median(shares), 3),
                          where=f"median over the paper presets, scripts/device_check.sh on {gpu}")
        path.write_text(json.dumps(known, indent=1) + "\n")
    print("\n".join(lines))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
