#!/usr/bin/env python
"""Time the suite's two trackers (tasks/tracking/model.py): per-frame tracking speed, training step, peak memory.

Trackers (``build_tracker`` on a canonical random-init checkpoint from ``benchmark.checkpoint.create_random``, seed 0:
speed and memory do not depend on the weights), at the paper sizes and head sizes (``head_channels`` 256;
``fusion_dim`` 384, ``fusion_layers`` 4, ``fusion_heads`` 8):
  vit_b    one-stream (OSTrack) on ``vit_base_patch16_224``, template 128 / search 256
  swin_b   two-stream (SwinTrack) on ``swin_base_patch4_window7_224`` (stages 1-3), template 112 / search 224

Measurements, each tracker in its own child process (so that its memory is its own):
  inference   the per-frame step of ``TrackerModel.track`` (tasks/tracking/parts.py), batch 1, ``torch.no_grad``:
              ``crop_around`` (search factor 4) of a 640x480 uint8 frame + ``normalize`` + copy to the device, the
              tracker's forward with the template crop precomputed once (factor 2) as ``track`` does, ``decode`` with
              ``hann_window()``, the box mapped back to the frame and clipped (``clip_box``). The search stays centred
              on the initial box (random weights would let the box drift; the crop's cost does not depend on where
              it is). Untimed warm-up frames first; fps = 1 / median frame time (``track`` itself reports frames / sum).
              On CUDA under bf16 autocast as ``track``; ``torch.cuda.synchronize()`` ends every frame.
  training    forward + ``loss`` (sum of the ``loss_*`` terms) + backward + gradient clipping where the design's
              recipe clips (0.1 for both designs: tasks/tracking/adapter.py ``DESIGN_DEFAULTS``) +
              ``torch.optim.AdamW`` step (the design's lr, weight decay 1e-4) on one batch of random normalized pairs
              with random boxes; drop path 0.1 (the task's default) and fusion drop path 0.1, ``train()`` mode.
              Untimed warm-up steps first; pairs/s = batch / median step time. On CUDA forward + loss under bf16
              autocast (the suite's AmpOptimWrapper with bfloat16).
  memory      CPU: peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of the phase; the kernel's high-water
              mark is reset before each phase (``/proc/self/clear_refs`` = 5) so that loading the checkpoint and the
              earlier phase do not count; where that reset is refused the peak includes them (said in the output).
              CUDA: ``torch.cuda.max_memory_allocated()`` per phase (peak stats reset before it).
  FLOPs       one forward at batch 1, counted with ``torch.utils.flop_counter.FlopCounterMode``.

Peers, for context:
  same run    plain timm ``vit_base_patch16_224`` classification forward at 224 px, batch 1, on an already
              normalized tensor (no cropping), in its own child process before and after the trackers (brackets any
              drift of the machine's speed); same warm-up / median rule, same autocast as the trackers' inference.
  published   OSTrack-256 and SwinTrack as published (GPU numbers, not re-measured here; see PUBLISHED).

The machine is named in the output (CPU model, cores, ISA, torch threads; the GPU on CUDA); the fp32 matmul rate is
measured at start and end, and the CPU time other processes took during the run is reported (2 shared cores: a
busy neighbour slows everything here).

Results: ``results/perf/tracking_<device>[_<tag>].json`` and ``.md``.

Usage: python scripts/bench_tracking.py [--device cpu|cuda] [--quick] [--trackers vit_b,swin_b]
       [--frames N --warmup-frames N --steps N --warmup-steps N --batch N]
(--quick: a few iterations at batch 2, a smoke test of the script; written with the tag 'quick')
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

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_pretrain import cpu_description, matmul_rate  # noqa: E402  (scripts/ is on sys.path when run as a script)
from bench_semantic import busy_cpu_seconds, load_average  # noqa: E402

from tasks.tracking.adapter import DESIGN_DEFAULTS  # noqa: E402

TRACKERS = {
    # key: (arch, template, search, design, published name)
    "vit_b": ("vit_base_patch16_224", 128, 256, "one-stream", "OSTrack-256"),
    "swin_b": ("swin_base_patch4_window7_224", 112, 224, "two-stream", "SwinTrack"),
}
HEAD = dict(head_channels=256, fusion_dim=384, fusion_layers=4, fusion_heads=8)
# the design's training recipe (lr, clipping, length: DESIGN_DEFAULTS; weight decay and drop path: the task's defaults)
RECIPE = {d: dict(lr=r["lr"], clip_grad=r["clip_grad"], pairs=int(r["epochs"] * r["samples_per_epoch"]))
          for d, r in DESIGN_DEFAULTS.items()}
WEIGHT_DECAY, DROP_PATH, FUSION_DROP_PATH = 1e-4, 0.1, 0.1
TEMPLATE_FACTOR, SEARCH_FACTOR = 2.0, 4.0
FRAME_W, FRAME_H = 640, 480
INIT_BOX = (280.0, 195.0, 80.0, 90.0)  # x, y, w, h in the frame: a mid-sized target near the centre
PEER_ARCH, PEER_SIZE = "vit_base_patch16_224", 224

CONFIGS = {
    "cpu": dict(frames=15, warmup_frames=3, steps=3, warmup_steps=2, batch=8, peer_iters=15, peer_warmup=3),
    "cuda": dict(frames=300, warmup_frames=30, steps=30, warmup_steps=5, batch=32, peer_iters=300, peer_warmup=30),
    "quick": dict(frames=3, warmup_frames=1, steps=2, warmup_steps=1, batch=2, peer_iters=3, peer_warmup=1),
}

# Published speeds (GPU, batch 1 tracking), as published, not re-measured. What was checked for this file:
# OSTrack's README says the speeds in its paper were measured on one RTX 2080Ti with PyTorch 1.9.0 and shows them in
# a plot only; 105.4 fps for OSTrack-256 is the paper's number. SwinTrack's README shows speed in a plot only; its
# arXiv v1 abstract gives 45 fps for the best (Swin-B, 384 px search) model, and its NeurIPS version lists
# SwinTrack-B-384 at 45 fps and SwinTrack-T-224 at 98 fps; no number for Swin-B at 224 (the size measured here) was
# found, nor the GPU in the text seen.
PUBLISHED = [
    dict(name="OSTrack-256", what="ViT-B/16 one-stream, 128 / 256, with candidate elimination", fps=105.4,
         device="RTX 2080Ti (PyTorch 1.9.0)",
         source="OSTrack paper (arXiv 2203.11991); GPU and PyTorch from the OSTrack README"),
    dict(name="SwinTrack-B-384", what="Swin-B two-stream, 384 px search", fps=45.0, device="GPU (not stated in the "
         "text checked)", source="SwinTrack paper (arXiv 2112.00995) abstract / efficiency table"),
    dict(name="SwinTrack-T-224", what="Swin-T two-stream, 112 / 224", fps=98.0, device="same GPU as above",
         source="SwinTrack paper (arXiv 2112.00995) efficiency table"),
]


# ------------------------------------------------------------------------------------------------ helpers
def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def rss_mib() -> float:
    """This process's resident set now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak(device: str) -> bool:
    """Start a new peak-memory window; True when the peak will cover only what follows."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the RSS high-water mark (Linux >= 4.0)
    except OSError:
        return False
    return max_rss_mib() <= rss_mib() * 1.05 + 16


def peak_mib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else max_rss_mib()


def forward_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def summary(times: list[float]) -> dict:
    med = statistics.median(times)
    return {"n": len(times), "median_s": med, "min_s": min(times), "max_s": max(times),
            "mean_s": statistics.mean(times)}


def autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ child: a tracker
def frames(n: int, seed: int = 0):
    """A few distinct random 640x480 RGB uint8 frames, cycled."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(FRAME_H, FRAME_W, 3), dtype=np.uint8) for _ in range(n)]


def bench_inference(tracker, device: str, cfg: dict) -> dict:
    import numpy as np

    from tasks.tracking.crops import crop_around, normalize
    from tasks.tracking.parts import clip_box

    tracker.eval()
    images = frames(4)
    init = np.asarray(INIT_BOX, dtype=np.float64)
    window = tracker.hann_window().to(device)
    S = tracker.search_size
    with torch.no_grad():
        z = crop_around(images[0], init, TEMPLATE_FACTOR, tracker.template_size)
        template = normalize(z.image)[None].to(device)  # once per sequence, as track() does: not timed

        def step(image: np.ndarray) -> tuple[float, float]:
            start = time.perf_counter()
            height, width = image.shape[:2]
            x = crop_around(image, init, SEARCH_FACTOR, S)
            search = normalize(x.image)[None].to(device)
            cropped = time.perf_counter()
            with autocast(device):
                out = tracker(template, search)
            box, _ = tracker.decode(out, window)
            cx, cy, w, h = (box[0].float().cpu().numpy() * S).tolist()
            clip_box(x.to_image(np.array([cx - w / 2, cy - h / 2, w, h])), width, height)
            _sync(device)
            end = time.perf_counter()
            return end - start, cropped - start

        t = time.perf_counter()
        for i in range(cfg["warmup_frames"]):
            step(images[i % len(images)])
        warm = time.perf_counter() - t
        reset_ok = reset_peak(device)
        total, crop = [], []
        for i in range(cfg["frames"]):
            a, b = step(images[(i + 1) % len(images)])
            total.append(a)
            crop.append(b)
            log(f"  frame {i + 1}/{cfg['frames']}: {a * 1e3:.0f} ms")
        peak = peak_mib(device)
        x = normalize(crop_around(images[1], init, SEARCH_FACTOR, S).image)[None].to(device)
        with autocast(device):
            flops = forward_flops(lambda: tracker(template, x))
    return {**summary(total), "fps": 1 / statistics.median(total), "fps_mean": len(total) / sum(total),
            "crop_median_s": statistics.median(crop), "warmup_s": warm, "peak_mib": peak, "peak_reset": reset_ok,
            "gflop_forward": flops / 1e9}


def bench_training(tracker, device: str, design: str, cfg: dict) -> dict:
    B = cfg["batch"]
    g = torch.Generator().manual_seed(0)
    template = torch.randn(B, 3, tracker.template_size, tracker.template_size, generator=g).to(device)
    search = torch.randn(B, 3, tracker.search_size, tracker.search_size, generator=g).to(device)
    centre = 0.5 + 0.1 * (torch.rand(B, 2, generator=g) - 0.5)
    size = 0.1 + 0.3 * torch.rand(B, 2, generator=g)
    gt = torch.cat([centre, size], dim=1).to(device)
    recipe = RECIPE[design]
    tracker.train()
    opt = torch.optim.AdamW(tracker.parameters(), lr=recipe["lr"], betas=(0.9, 0.999), weight_decay=WEIGHT_DECAY)

    def step() -> float:
        _sync(device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            out = tracker(template, search)
            losses = tracker.loss(out, gt)
        loss = sum(v for k, v in losses.items() if k.startswith("loss"))
        loss.backward()
        if recipe["clip_grad"]:
            torch.nn.utils.clip_grad_norm_(tracker.parameters(), recipe["clip_grad"])
        opt.step()
        _sync(device)
        return time.perf_counter() - start

    t = time.perf_counter()
    for _ in range(cfg["warmup_steps"]):
        step()
    warm = time.perf_counter() - t
    reset_ok = reset_peak(device)
    times = []
    for i in range(cfg["steps"]):
        times.append(step())
        log(f"  step {i + 1}/{cfg['steps']}: {times[-1]:.2f} s")
    peak = peak_mib(device)
    return {**summary(times), "batch": B, "pairs_s": B / statistics.median(times), "warmup_s": warm,
            "peak_mib": peak, "peak_reset": reset_ok, "lr": recipe["lr"], "clip_grad": recipe["clip_grad"],
            "recipe_pairs": recipe["pairs"], "recipe_days": recipe["pairs"] / (B / statistics.median(times)) / 86400}


def child_tracker(spec: dict) -> dict:
    from tasks.tracking.model import build_tracker

    key, device, cfg = spec["key"], spec["device"], spec["cfg"]
    arch, T, S, design, _ = TRACKERS[key]
    t = time.perf_counter()
    one = DESIGN_DEFAULTS["one-stream"]  # OSTrack's candidate elimination (keep 0.7 at blocks 3, 6, 9), as published
    ce = dict(ce_layers=one["ce_layers"], ce_keep_ratio=one["ce_keep_ratio"]) if design == "one-stream" else {}
    tracker = build_tracker(spec["ckpt"], template_size=T, search_size=S, drop_path=DROP_PATH,
                            fusion_drop_path=FUSION_DROP_PATH, **HEAD, **ce).to(device)
    build_s = time.perf_counter() - t
    params = sum(p.numel() for p in tracker.parameters())
    resident = torch.cuda.memory_allocated() / 2**20 if device == "cuda" else rss_mib()
    log(f"[{key}] built {type(tracker).__name__} ({params / 1e6:.1f} M parameters) in {build_s:.1f} s; inference …")
    inference = bench_inference(tracker, device, cfg)
    log(f"[{key}] inference {inference['fps']:.2f} fps (median {inference['median_s'] * 1e3:.0f} ms); training, "
        f"batch {cfg['batch']} …")
    training = bench_training(tracker, device, design, cfg)
    log(f"[{key}] training {training['pairs_s']:.2f} pairs/s (median {training['median_s']:.2f} s/step)")
    return {"key": key, "arch": arch, "design": design, "template": T, "search": S, "tracker": type(tracker).__name__,
            "params_m": params / 1e6, "build_s": build_s, "resident_after_build_mib": resident,
            "threads": torch.get_num_threads(), "inference": inference, "training": training}


# ------------------------------------------------------------------------------------------------ child: the peer
def child_peer(spec: dict) -> dict:
    import timm

    device, cfg = spec["device"], spec["cfg"]
    torch.manual_seed(0)
    model = timm.create_model(PEER_ARCH, pretrained=False).to(device).eval()
    resident = torch.cuda.memory_allocated() / 2**20 if device == "cuda" else rss_mib()
    x = torch.randn(1, 3, PEER_SIZE, PEER_SIZE).to(device)

    def step() -> float:
        start = time.perf_counter()
        with autocast(device):
            logits = model(x)
        logits.float().argmax(-1).cpu()
        _sync(device)
        return time.perf_counter() - start

    with torch.no_grad():
        t = time.perf_counter()
        for _ in range(cfg["peer_warmup"]):
            step()
        warm = time.perf_counter() - t
        reset_ok = reset_peak(device)
        times = [step() for _ in range(cfg["peer_iters"])]
        peak = peak_mib(device)
        with autocast(device):
            flops = forward_flops(lambda: model(x))
    log(f"[peer {spec['when']}] {PEER_ARCH} forward: {1 / statistics.median(times):.2f} fps")
    return {"key": "peer", "when": spec["when"], "arch": PEER_ARCH, "img_size": PEER_SIZE,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "resident_after_build_mib": resident,
            "threads": torch.get_num_threads(), "inference": {**summary(times), "fps": 1 / statistics.median(times),
                                                              "warmup_s": warm, "peak_mib": peak,
                                                              "peak_reset": reset_ok, "gflop_forward": flops / 1e9}}


def run_child(spec: dict) -> dict:
    """One measurement in a fresh process; its progress goes to our stderr, its result is its last stdout line."""
    t = time.perf_counter()
    res = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE, text=True,
                         cwd=REPO)
    if res.returncode != 0:
        sys.exit(f"child {spec['key']} failed (exit {res.returncode})")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = time.perf_counter() - t
    return out


# ------------------------------------------------------------------------------------------------ report
def write(results: dict, out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    js.write_text(json.dumps(results, indent=2) + "\n")
    m, cfg = results["meta"], results["meta"]["config"]
    dev = m["device"]
    mem = "peak GPU memory allocated" if dev == "cuda" else "peak RSS"
    peers = results["peer"]
    peer_s = statistics.mean(p["inference"]["median_s"] for p in peers)
    other = m["other_processes_cores"]
    lines = [f"# Tracker speed: one-stream ViT-B/16 and two-stream Swin-B ({dev}{', quick' if m['quick'] else ''})",
             "", f"- machine: {m['machine']}",
             f"- torch {m['torch']}, timm {m['timm']}; {m['threads']} torch threads"
             + (f"; {m['cuda_device']}" if m["cuda_device"] else ""),
             f"- measured fp32 matmul rate (1576×768·768×3072), start / end: {m['matmul_gflops_start']:.1f} / "
             f"{m['matmul_gflops_end']:.1f} GFLOP/s; 1-min load average start / end: {m['load_avg_1min_start']:.2f} / "
             f"{m['load_avg_1min_end']:.2f}; other processes' CPU use during the run: "
             + ("unknown" if other is None else f"{other:.2f} cores"),
             f"- date: {m['date']}; whole run {m['wall_s']:.0f} s (checkpoints {m['checkpoint_s']:.0f} s)", "",
             "## Inference: the per-frame tracking step, batch 1", "",
             f"Search crop from a {FRAME_W}×{FRAME_H} frame + normalize + forward (template precomputed) + decode "
             f"with the Hann window + box back to the frame, under `torch.no_grad`"
             + (", bf16 autocast" if dev == "cuda" else ", fp32") + f"; median of {cfg['frames']} frames after "
             f"{cfg['warmup_frames']} warm-up frames. The peer is a plain timm ViT-B/16 classification forward at "
             f"224 px, batch 1, in the same run (before and after the trackers); × peer = frame time ÷ the peer's "
             "(mean of its two runs).", "",
             "| model | T / S px | params (M) | GFLOP / forward | fps (median) | median ms (min–max) | of which "
             f"crop + normalize ms | × peer time | {mem} MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results["trackers"]:
        i = r["inference"]
        lines.append(f"| {r['key']}: {r['design']} on `{r['arch']}` | {r['template']} / {r['search']} | "
                     f"{r['params_m']:.1f} | {i['gflop_forward']:.1f} | {i['fps']:.2f} | {i['median_s'] * 1e3:.0f} "
                     f"({i['min_s'] * 1e3:.0f}–{i['max_s'] * 1e3:.0f}) | {i['crop_median_s'] * 1e3:.1f} | "
                     f"{i['median_s'] / peer_s:.2f}× | {i['peak_mib']:.0f}{'' if i['peak_reset'] else ' *'} |")
    for p in peers:
        i = p["inference"]
        lines.append(f"| peer ({p['when']}): timm `{p['arch']}` classification forward | – / {p['img_size']} | "
                     f"{p['params_m']:.1f} | {i['gflop_forward']:.1f} | {i['fps']:.2f} | {i['median_s'] * 1e3:.0f} "
                     f"({i['min_s'] * 1e3:.0f}–{i['max_s'] * 1e3:.0f}) | – | {i['median_s'] / peer_s:.2f}× | "
                     f"{i['peak_mib']:.0f}{'' if i['peak_reset'] else ' *'} |")
    lines += ["", f"## Training step, batch {cfg['batch']} of random pairs", "",
              "forward + loss + backward + gradient clipping (0.1, both designs' recipes) + AdamW step, drop path "
              "0.1, one-stream with candidate elimination (keep 0.7 at blocks 3, 6, 9), `train()` mode"
              + (", bf16 autocast" if dev == "cuda" else ", fp32")
              + f"; median of {cfg['steps']} steps after {cfg['warmup_steps']} warm-up step(s).", "",
              f"| model | batch | pairs/s | median s/step (min–max) | {mem} MiB | the design's recipe: pairs → days at "
              "this rate |", "|---|---|---|---|---|---|"]
    for r in results["trackers"]:
        t = r["training"]
        lines.append(f"| {r['key']}: {r['design']} on `{r['arch']}` | {t['batch']} | {t['pairs_s']:.2f} | "
                     f"{t['median_s']:.2f} ({t['min_s']:.2f}–{t['max_s']:.2f}) | "
                     f"{t['peak_mib']:.0f}{'' if t['peak_reset'] else ' *'} | {t['recipe_pairs'] / 1e6:.1f} M → "
                     f"{t['recipe_days']:,.0f} |")
    lines += ["", "## Published speeds (as published, not re-measured)", "",
              "| tracker | what | fps | device | source |", "|---|---|---|---|---|"]
    for p in PUBLISHED:
        lines.append(f"| {p['name']} | {p['what']} | {p['fps']:g} | {p['device']} | {p['source']} |")
    resident = ", ".join(f"{r['key']} {r['resident_after_build_mib']:.0f}" for r in results["trackers"] + peers[:1])
    phases = [r["inference"] for r in results["trackers"] + peers] + [r["training"] for r in results["trackers"]]
    own = "each phase's own peak (the high-water mark was reset before it); " if dev == "cpu" else ""
    refused = (" * = the reset was refused: this peak includes loading the checkpoint and any earlier phase."
               if any(not x["peak_reset"] for x in phases) else "")
    lines += ["", f"Memory: {own}resident after building, MiB: {resident}.{refused}", ""]
    lines += paragraph(results)
    if dev == "cpu" and other is not None and other > 0.25:
        lines += ["", f"WARNING: other processes kept {other:.2f} of the {os.cpu_count()} cores busy on average "
                  "during this run; these numbers understate an idle machine (compare the trackers with the peer, "
                  "measured under the same load, rather than in absolute terms)."]
    md.write_text("\n".join(lines) + "\n")
    return md, js


def paragraph(results: dict) -> list[str]:
    dev = results["meta"]["device"]
    if dev == "cuda":
        return ["What it means: per-frame speed of the suite's trackers on this GPU under bf16 autocast, next to the "
                "published GPU speeds (different GPUs and precisions: compare orders of magnitude, not ratios)."]
    return ["What was measured: the speed of the suite's own trackers as `TrackerModel.track` runs them "
            "(inference) and as the tracking task trains them (one optimizer step), at the paper sizes, on this "
            "CPU in fp32, with a plain ViT-B/16 classification forward measured alongside as a yardstick. What it "
            "means: these CPU numbers are for orientation only — they show the relative cost of the two designs "
            "and of tracking versus a known model on the same machine (the × peer column), and that training on a "
            "CPU is out of the question for the published schedules (last column); they are not comparable with the "
            "published GPU speeds above, which are other models' numbers on other hardware, not re-measured. The "
            "GPU numbers (`--device cuda`, bf16 autocast, batch 32 for training) are pending a GPU."]


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="a few iterations at batch 2: a smoke test, not a benchmark")
    p.add_argument("--trackers", default="vit_b,swin_b", help=f"comma-separated, of {','.join(TRACKERS)}")
    for name in ("frames", "warmup-frames", "steps", "warmup-steps", "batch"):
        p.add_argument(f"--{name}", type=int, default=None, help="override the device's default")
    p.add_argument("--out", default=str(REPO / "results" / "perf"))
    p.add_argument("--tag", default=None, help="suffix of the output file names (default: 'quick' with --quick)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child_peer(spec) if spec["key"] == "peer" else child_tracker(spec)), flush=True)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is visible", file=sys.stderr)
        return 2
    keys = [k for k in args.trackers.split(",") if k]
    if unknown := [k for k in keys if k not in TRACKERS]:
        p.error(f"unknown tracker(s) {unknown}; known: {list(TRACKERS)}")
    cfg = dict(CONFIGS["quick" if args.quick else args.device])
    for name in ("frames", "warmup_frames", "steps", "warmup_steps", "batch"):
        if getattr(args, name) is not None:
            cfg[name] = getattr(args, name)
    import timm

    from benchmark import checkpoint

    machine = cpu_description()
    if args.device == "cuda":
        machine = f"{torch.cuda.get_device_name()}, torch CUDA {torch.version.cuda}; host {machine}"
    meta = {"device": args.device, "quick": args.quick, "machine": machine, "torch": torch.__version__,
            "timm": timm.__version__, "threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name() if args.device == "cuda" else None,
            "date": time.strftime("%Y-%m-%d %H:%M"), "config": cfg, "head": HEAD, "load_avg_1min_start": load_average(),
            "matmul_gflops_start": matmul_rate(args.device) / 1e9}
    print(f"machine: {machine}; fp32 matmul {meta['matmul_gflops_start']:.1f} GFLOP/s, load average "
          f"{meta['load_avg_1min_start']}", flush=True)
    t0, machine0, own0 = time.perf_counter(), busy_cpu_seconds(), time.process_time()
    results: dict = {"meta": meta, "trackers": [], "peer": [], "published": PUBLISHED}
    with tempfile.TemporaryDirectory(prefix="bench_tracking_") as tmp:
        ckpts = {}
        for key in keys:
            arch = TRACKERS[key][0]
            print(f"[{key}] canonical random checkpoint of {arch} …", flush=True)
            sd, ck_meta = checkpoint.create_random(arch, {}, seed=0)
            ckpts[key] = str(checkpoint.save_canonical(Path(tmp) / f"{arch}.pth", sd, ck_meta))
            del sd
        meta["checkpoint_s"] = time.perf_counter() - t0
        base = {"device": args.device, "cfg": cfg}
        results["peer"].append(run_child({**base, "key": "peer", "when": "start"}))
        for key in keys:
            results["trackers"].append(run_child({**base, "key": key, "ckpt": ckpts[key]}))
        results["peer"].append(run_child({**base, "key": "peer", "when": "end"}))
    meta["wall_s"] = time.perf_counter() - t0
    # cores kept busy by other processes while this ran (the machine's busy CPU time minus this run's own, children
    # included)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = time.process_time() - own0 + children.ru_utime + children.ru_stime
    meta["other_processes_cores"] = (None if machine0 is None else max(
        0.0, (busy_cpu_seconds() - machine0 - ours) / meta["wall_s"]))
    meta["load_avg_1min_end"], meta["matmul_gflops_end"] = load_average(), matmul_rate(args.device) / 1e9
    tag = args.tag if args.tag is not None else ("quick" if args.quick else "")
    md, js = write(results, Path(args.out), f"tracking_{args.device}{'_' + tag if tag else ''}")
    print(md.read_text())
    print(f"wrote {md} and {js} ({meta['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
