#!/usr/bin/env python
"""Time the two costs of the semantic linear probe (tasks/semantic/probe.py): feature extraction and the search.

1. Feature extraction, images/s, of a ViT-B/16 at 224 px (timm ``vit_base_patch16_224``, random weights from
   ``benchmark.checkpoint.create_random``: speed does not depend on the weights) on a synthetic in-memory ``Split``
   of uint8 images:
     pipeline     ``probe.extract`` end to end: PIL → timm eval transform (resize 256 bicubic, centre crop 224,
                  normalise) → forward → mean of the final-normed patch tokens → CPU; on CUDA under bf16 autocast
                  (as probe.extract does there), with 0 and with N DataLoader workers
     model only   the same forward on a batch that is already transformed and on the device: the ceiling the
                  pipeline can reach
   One untimed warm-up batch first (on the CPU a small one); on CUDA ``torch.cuda.synchronize()`` around every timed
   region.
2. The probe search: ``probe.search`` (Optuna TPE, trials trained ``parallel`` at a time as one batched model) on
   synthetic L2-normalised Gaussian-cluster features, then ``probe.fit_and_score`` (the retrain on all of train
   plus the test score). CUDA: the CoG / K12 ``linear`` preset at ImageNet scale, 1000 classes × 50 = 50,000 × 768
   features, GPU-resident, 30 trials, 10 in parallel, 100 epochs, batch 1024, 20% hold-out. CPU: the same protocol
   on 100 classes × 50 (5,000 × 768); only what was measured is reported, nothing is extrapolated.

Results: ``results/perf/semantic_<device>.json`` and ``.md``.

Usage: python scripts/bench_semantic.py [--device cpu|cuda] [--quick]   (--quick: tiny sizes, a smoke test only)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_pretrain import cpu_description, matmul_rate  # noqa: E402  (scripts/ is on sys.path when run as a script)

from benchmark import checkpoint  # noqa: E402
from benchmark.features import pool_features  # noqa: E402
from tasks.semantic import probe  # noqa: E402
from tasks.semantic.common import Split  # noqa: E402

ARCH = "vit_base_patch16_224"

# (images, batch, warm-up images, workers...) for extraction;
# (classes, per class, dim, trials, parallel, epochs, batch) for the probe
CONFIGS = {
    "cuda": dict(images=4096, batch=256, warmup=256, workers=(0, min(8, os.cpu_count() or 1)), model_only_batches=8,
                 probe=dict(classes=1000, per_class=50, dim=768, trials=30, parallel=10, epochs=100, batch=1024)),
    "cpu": dict(images=256, batch=64, warmup=8, workers=(0,), model_only_batches=1,
                probe=dict(classes=100, per_class=50, dim=768, trials=30, parallel=10, epochs=100, batch=1024)),
    "quick": dict(images=8, batch=4, warmup=4, workers=(0,), model_only_batches=1,
                  probe=dict(classes=10, per_class=20, dim=768, trials=4, parallel=2, epochs=5, batch=64)),
}
TEST_PER_CLASS = 10
HOLDOUT = 0.2
NOISE = 5.0


def busy_cpu_seconds() -> float | None:
    """CPU seconds spent (not idle / iowait) by the whole machine so far, from /proc/stat; None where there is none."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # user..steal minus idle, iowait


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def build_vit_b() -> torch.nn.Module:
    sd, meta = checkpoint.create_random(ARCH, {}, seed=0)
    model = checkpoint.build_model(meta)
    checkpoint.load_weights(model, sd, name=f"random {ARCH}")
    model.mim_meta = meta  # what load_backbone sets: eval_transform reads img_size from it
    return model.eval()


def synthetic_split(n: int, size: int = 224, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return Split(["c0", "c1"], (np.arange(n) % 2).astype(np.int64), images=images, name="synthetic/bench")


def bench_extraction(device: str, cfg: dict) -> list[dict]:
    print(f"[extract] building {ARCH} …", flush=True)
    model = build_vit_b().to(device)
    tf = probe.eval_transform(model)
    split = synthetic_split(cfg["images"])
    warm = split.subset(np.arange(min(cfg["warmup"], len(split))))
    rows = []
    for workers in cfg["workers"]:
        t = time.perf_counter()
        probe.extract(model, warm, tf, device=device, batch_size=cfg["batch"], workers=workers)  # warm-up batch
        _sync(device)
        warm_s = time.perf_counter() - t
        _sync(device)
        t = time.perf_counter()
        feats, kept = probe.extract(model, split, tf, device=device, batch_size=cfg["batch"], workers=workers)
        _sync(device)
        dt = time.perf_counter() - t
        assert feats.shape == (len(split), model.num_features) and len(kept) == len(split)
        rows.append({"what": "pipeline", "device": device, "precision": "bf16 autocast" if device == "cuda" else "fp32",
                     "images": len(split), "batch": cfg["batch"], "workers": workers, "seconds": dt,
                     "img_s": len(split) / dt, "warmup_s": warm_s})
        print(f"[extract] pipeline, {workers} workers: {len(split)} images in {dt:.1f} s = "
              f"{len(split) / dt:.1f} img/s", flush=True)
    # model only: a transformed batch already on the device
    x = torch.stack([tf(split.load(i)) for i in range(cfg["batch"])]).to(device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), amp:
        pool_features(model, x)  # warm-up
        _sync(device)
        t = time.perf_counter()
        for _ in range(cfg["model_only_batches"]):
            pool_features(model, x).float()
        _sync(device)
        dt = time.perf_counter() - t
    n = cfg["batch"] * cfg["model_only_batches"]
    rows.append({"what": "model only", "device": device, "precision": "bf16 autocast" if device == "cuda" else "fp32",
                 "images": n, "batch": cfg["batch"], "workers": None, "seconds": dt, "img_s": n / dt,
                 "warmup_s": None})
    print(f"[extract] model only: {n} images in {dt:.1f} s = {n / dt:.1f} img/s", flush=True)
    return rows


def synthetic_features(classes: int, per_class: int, dim: int, device: str, seed: int):
    """L2-normalised Gaussian clusters; noise 5× the centres' scale: nearest class mean gets ~95% (100 classes) and
    ~85% (1000 classes), so the search has something to find."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    y = torch.arange(classes).repeat_interleave(per_class)
    yt = torch.arange(classes).repeat_interleave(TEST_PER_CLASS)
    x = probe.normalize(centres[y] + NOISE * torch.randn(len(y), dim, generator=g))
    xt = probe.normalize(centres[yt] + NOISE * torch.randn(len(yt), dim, generator=g))
    return x.to(device), y.to(device), xt.to(device), yt.numpy()


def bench_probe(device: str, cfg: dict) -> dict:
    c = cfg["probe"]
    x, y, xt, yt = synthetic_features(c["classes"], c["per_class"], c["dim"], device, seed=0)
    print(f"[probe] search: {c['classes']} classes × {c['per_class']} = {len(x)} × {c['dim']} features on {device}, "
          f"{c['trials']} trials, {c['parallel']} in parallel, {c['epochs']} epochs, batch {c['batch']} …", flush=True)
    common = dict(epochs=c["epochs"], batch_size=c["batch"], seed=0, multilabel=False)
    _sync(device)
    t = time.perf_counter()
    best = probe.search(x, y, y.cpu().numpy(), c["classes"], metric="top1", trials=c["trials"],
                        parallel=c["parallel"], holdout=HOLDOUT,
                        progress=lambda f, m: print(f"[probe] {m} ({time.perf_counter() - t:.1f} s)", flush=True),
                        **common)
    _sync(device)
    search_s = time.perf_counter() - t
    t = time.perf_counter()
    out = probe.fit_and_score(x, y, xt, yt, c["classes"], lr=best["lr"], wd=best["wd"], metric="top1", **common)
    _sync(device)
    fit_s = time.perf_counter() - t
    n_fit = len(x) - len(probe.stratified_split(y.cpu().numpy(), HOLDOUT, 0)[1])
    steps = -(-n_fit // c["batch"]) * c["epochs"]
    print(f"[probe] search {search_s:.1f} s (best hold-out {best['holdout']:.2f} at lr {best['lr']:.3g}, wd "
          f"{best['wd']:.2g}); final fit + test {fit_s:.1f} s, test top-1 {out['top1']:.2f}", flush=True)
    return {"device": device, **c, "train": len(x), "fit": n_fit, "holdout": len(x) - n_fit, "test": len(xt),
            "rounds": -(-c["trials"] // c["parallel"]), "steps_per_round": steps, "search_s": search_s,
            "s_per_trial": search_s / c["trials"], "final_fit_s": fit_s, "total_s": search_s + fit_s,
            "best_lr": best["lr"], "best_wd": best["wd"], "best_holdout_top1": best["holdout"],
            "test_top1": out["top1"]}


def write(results: dict, out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    js.write_text(json.dumps(results, indent=2) + "\n")
    m, p = results["meta"], results["probe"]
    lines = [f"# Semantic linear probe: feature extraction and search ({m['device']}{', quick' if m['quick'] else ''})",
             "", f"- machine: {m['machine']}",
             f"- torch {m['torch']}, timm {m['timm']}, optuna {m['optuna']}; {m['threads']} torch threads",
             f"- measured fp32 matmul rate (1576×768·768×3072), start / end: {m['matmul_gflops_start']:.1f} / "
             f"{m['matmul_gflops_end']:.1f} GFLOP/s; 1-min load average start / end: {m['load_avg_1min_start']:.2f} / "
             f"{m['load_avg_1min_end']:.2f}; other processes' CPU use during the run: "
             + ("unknown" if m["other_processes_cores"] is None else f"{m['other_processes_cores']:.2f} cores"),
             f"- date: {m['date']}; whole run {m['wall_s']:.0f} s", "",
             f"## Feature extraction ({ARCH}, random weights, 224 px, synthetic uint8 images in memory)", "",
             "pipeline = `probe.extract` end to end (PIL, timm eval transform, forward, mean-pooled patch tokens, "
             "copy to CPU); model only = the forward on an already transformed, device-resident batch. One untimed "
             f"warm-up batch ({m['config']['warmup']} images) first.", "",
             "| what | device | precision | images | batch | workers | seconds | img/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["extraction"]:
        lines.append(f"| {r['what']} | {r['device']} | {r['precision']} | {r['images']} | {r['batch']} | "
                     f"{'–' if r['workers'] is None else r['workers']} | {r['seconds']:.1f} | {r['img_s']:.1f} |")
    lines += ["", "## Probe search (`probe.search` + `probe.fit_and_score`, synthetic L2-normalised features)", "",
              "| device | classes × per class | features | trials (parallel) | epochs | batch | fit / hold-out / test "
              "| steps per round | search s | s per trial | final fit + test s | best hold-out top-1 | test top-1 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
              f"| {p['device']} | {p['classes']} × {p['per_class']} | {p['train']:,} × {p['dim']} | {p['trials']} "
              f"({p['parallel']}) | {p['epochs']} | {p['batch']} | {p['fit']:,} / {p['holdout']:,} / {p['test']:,} "
              f"| {p['steps_per_round']:,} | {p['search_s']:.1f} | {p['s_per_trial']:.2f} | {p['final_fit_s']:.1f} "
              f"| {p['best_holdout_top1']:.2f} | {p['test_top1']:.2f} |", ""]
    if m["device"] == "cpu" and not m["quick"]:
        lines.append("Note: on the CPU the search runs on 100 classes (5,000 features), not the 1000-class / 50,000 "
                     "configuration of the CUDA run; the numbers are measured, not extrapolated.")
    lines.append("Chosen lr / wd: " + f"{p['best_lr']:.4g} / {p['best_wd']:.3g} (seed 0). Accuracies are a sanity "
                 "check of the synthetic task, not a result.")
    busy = m["other_processes_cores"]
    if m["device"] == "cpu" and busy is not None and busy > 0.25:
        lines.append(f"WARNING: other processes kept {busy:.2f} of the {os.cpu_count()} cores busy on average during "
                     "this run; OpenMP threads that wait for descheduled peers make small ops many times slower, so "
                     "these numbers understate an idle machine.")
    md.write_text("\n".join(lines) + "\n")
    return md, js


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of this script, not a benchmark")
    p.add_argument("--out", default=str(REPO / "results" / "perf"))
    p.add_argument("--tag", default=None, help="suffix of the output file names (default: 'quick' with --quick)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is visible", file=sys.stderr)
        return 2
    cfg = CONFIGS["quick" if args.quick else args.device]
    if args.device == "cuda":
        machine = f"{torch.cuda.get_device_name()}, torch CUDA {torch.version.cuda}; host {cpu_description()}"
    else:
        machine = cpu_description()
    import optuna
    import timm

    meta = {"device": args.device, "quick": args.quick, "machine": machine, "torch": torch.__version__,
            "timm": timm.__version__, "optuna": optuna.__version__, "threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name() if args.device == "cuda" else None,
            "date": time.strftime("%Y-%m-%d %H:%M"), "config": cfg, "load_avg_1min_start": load_average(),
            "matmul_gflops_start": matmul_rate(args.device) / 1e9}
    print(f"machine: {machine}; fp32 matmul {meta['matmul_gflops_start']:.1f} GFLOP/s, load average "
          f"{meta['load_avg_1min_start']}", flush=True)
    t0, machine0, own0 = time.perf_counter(), busy_cpu_seconds(), time.process_time()
    results = {"meta": meta, "extraction": bench_extraction(args.device, cfg), "probe": bench_probe(args.device, cfg)}
    meta["wall_s"] = time.perf_counter() - t0
    # cores kept busy by other processes while this ran (the machine's busy CPU time minus this process's own)
    meta["other_processes_cores"] = (None if machine0 is None else max(
        0.0, (busy_cpu_seconds() - machine0 - (time.process_time() - own0)) / meta["wall_s"]))
    meta["load_avg_1min_end"], meta["matmul_gflops_end"] = load_average(), matmul_rate(args.device) / 1e9
    tag = args.tag if args.tag is not None else ("quick" if args.quick else "")
    md, js = write(results, Path(args.out), f"semantic_{args.device}{'_' + tag if tag else ''}")
    print(md.read_text())
    print(f"wrote {md} and {js} ({meta['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
