"""Every trained task's `paper` preset at full size on CPU: proof that the real models and pipelines run.

For each (task, family) cell — ViT-B/16, Swin-B and SwinV2-B, random weights in the canonical format, each at the
input size of its timm arch — in a fresh subprocess (so peak RSS is the cell's own):

* the task as `benchmark run --preset paper` builds it (`benchmark.plan.inspect`: the family's recipe, the data
  pipeline, the model, the optimiser wrapper with layer decay and clipping), on mini data in the real layouts
  generated at the real image sizes;
* 2 training iterations (`model.train_step`, fp32) at a per-process batch of 2 (`--set batch_size=2`: the lr scales
  with it, which does not matter for a smoke test);
* the evaluation forward of 2 items of the test split (`model.test_step`: images, person boxes or whole tracking
  sequences), without the metric (2 items make no score);
* parameters, GFLOPs per training sample and per evaluation item (`benchmark plan`'s counter).

Writes results/perf/paper_smoke_cpu.md (+ .json). Not part of CI: the full grid takes about half an hour on 2 cores.

    .venv/bin/python scripts/smoke_paper.py                       # every cell
    .venv/bin/python scripts/smoke_paper.py --tasks coco_det --families vit_b
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
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FAMILIES = {"vit_b": "vit_base_patch16_224", "swin_b": "swin_base_patch4_window7_224",
            "swinv2_b": "swinv2_base_window12_192"}
TASKS = ("coco_pose", "crowdpose", "nyu_depth", "kitti_depth", "got10k", "lasot", "coco_det", "ade20k_seg",
         "ade20k_m2f", "k12_flowers102", "inat18")
BATCH = 2
ITERS = 2
EVAL_ITEMS = 2


def cell(task: str, ckpt: Path, work: Path) -> dict:
    import torch
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import Runner

    from benchmark import plan, registry
    from tasks.openmmlab import dataloader, optim_wrapper

    torch.manual_seed(0)
    t0 = time.perf_counter()
    it = plan.inspect(registry.get_task(task), ckpt, "paper", {"batch_size": BATCH}, nproc=1, data_root=None,
                      work_dir=work)
    model = plan.build_model(it.trained, it.trained.model())
    wrapper = build_optim_wrapper(model, optim_wrapper(it.trained.p, it.run, "cpu"))
    build_s = time.perf_counter() - t0
    loader = iter(Runner.build_dataloader(dataloader(it.data.train, BATCH, train=True, collate=it.data.collate),
                                          seed=0))
    model.train()
    times = []
    for _ in range(ITERS):
        batch = next(loader)
        t = time.perf_counter()
        losses = model.train_step(batch, wrapper)
        times.append(time.perf_counter() - t)
    loss = float(sum(v for k, v in losses.items() if "loss" in k))
    ev = it.data.evaluations[0]
    test = iter(Runner.build_dataloader(dataloader(ev.dataset, 1, train=False, collate=it.data.collate), seed=0))
    model.eval()
    t = time.perf_counter()
    with torch.no_grad():
        for _ in range(EVAL_ITEMS):
            model.test_step(next(test))
    eval_s = (time.perf_counter() - t) / EVAL_ITEMS
    flops = plan.measure(model, it.data, it.run, it.sizes, False)
    return dict(status="ok", s_per_iter=sum(times) / len(times), eval_s_per_item=eval_s, build_s=build_s,
                loss=loss, params_M=flops["params_M"], train_gflops=flops["train_gflops_per_sample"],
                eval_gflops=flops["eval_gflops_per_item"], eval_unit=flops["eval_unit"],
                input=_input_note(it.trained.p))


def _input_note(p: dict) -> str:
    for key in ("input_size", "crop_size", "image_size", "search_size", "crop", "img_size"):
        if p.get(key):
            return f"{key}={p[key]}"
    return ""


def run_child(args) -> int:
    out: dict
    try:
        out = cell(args.task, Path(args.ckpt), Path(args.work))
    except Exception as exc:  # noqa: BLE001 - the cell's error is its table entry
        traceback.print_exc()
        out = dict(status="error", error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    Path(args.result).write_text(json.dumps(out))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--out", type=Path, default=REPO / "results" / "perf" / "paper_smoke_cpu")
    ap.add_argument("--merge", action="store_true", help="update the cells of an existing .json, keep the others")
    ap.add_argument("--child", nargs=4, metavar=("TASK", "CKPT", "WORK", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.task, args.ckpt, args.work, args.result = args.child
        return run_child(args)
    from benchmark import checkpoint

    work = Path(tempfile.mkdtemp(prefix="smoke-paper-"))
    results = json.loads(args.out.with_suffix(".json").read_text()) if args.merge and \
        args.out.with_suffix(".json").exists() else {}
    for fam in args.families.split(","):
        sd, meta = checkpoint.create_random(FAMILIES[fam], {}, seed=0)
        ckpt = checkpoint.save_canonical(work / f"{fam}.pth", sd, meta)
        del sd
        for task in args.tasks.split(","):
            result = work / f"{task}-{fam}.json"
            t0 = time.time()
            proc = subprocess.run([sys.executable, __file__, "--child", task, str(ckpt), str(work / "w"), str(result)],
                                  capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            r = json.loads(result.read_text()) if result.exists() else \
                dict(status="error", error=f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
            r["wall_s"] = round(time.time() - t0, 1)
            results[f"{task}|{fam}"] = r
            speed = f"{r['s_per_iter']:.1f} s/it, {r['wall_s']:.0f} s" if r["status"] == "ok" else r.get("error", "")
            print(f"{task:16} {fam:9} {r['status']:5} {speed}", flush=True)
            if r["status"] != "ok":
                print(proc.stderr[-3000:], file=sys.stderr)
            write(results, args.out)  # after every cell: an interrupted grid keeps what it measured
        ckpt.unlink()
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


def write(results: dict, out: Path) -> None:
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    lines = ["# `paper` presets at full size on CPU: every trained task x backbone family", "",
             f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, fp32. Random weights in the canonical format "
             f"(ViT-B/16 `{FAMILIES['vit_b']}`, Swin-B `{FAMILIES['swin_b']}`, SwinV2-B `{FAMILIES['swinv2_b']}`); "
             f"each task as `benchmark run --preset paper --set batch_size={BATCH}` builds it (the family's recipe, "
             f"pipeline, model, optimiser) on mini data in the real layouts at the real image sizes; {ITERS} training "
             f"iterations at a per-process batch of {BATCH} (s/iteration: their mean) and the evaluation forward of "
             f"{EVAL_ITEMS} test items (s/item), no metric. Peak RSS of the cell's process. GFLOPs: "
             f"`torch.utils.flop_counter` (fwd + bwd per training sample; one evaluation item), mmcv kernels not "
             f"counted. Made by `scripts/smoke_paper.py`.", "",
             "| task | family | status | input | s / iteration | s / eval item | peak RSS GiB | params M | "
             "train GFLOPs / sample | eval GFLOPs / item |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in sorted(results.items(), key=lambda kv: (TASKS.index(kv[0].split("|")[0])
                                                          if kv[0].split("|")[0] in TASKS else 99, kv[0])):
        task, fam = key.split("|")
        if r["status"] != "ok":
            lines.append(f"| {task} | {fam} | **error** {r.get('error', '')} | | | | {r.get('peak_rss_gb', 0):.1f} "
                         f"| | | |")
            continue
        lines.append(f"| {task} | {fam} | ok | {r['input']} | {r['s_per_iter']:.1f} | {r['eval_s_per_item']:.1f} | "
                     f"{r['peak_rss_gb']:.1f} | {r['params_M']:.1f} | {r['train_gflops']:.1f} | "
                     f"{r['eval_gflops']:.1f} ({r['eval_unit']}) |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
