#!/usr/bin/env python
"""Time one full SimMIM training step (forward, backward, grad clip 5.0, AdamW step) in images/s.

Models (the official SimMIM encoders, built from timm):
  vit_b   ViT-B/16 at 224: ``beit_base_patch16_224`` with a shared relative position bias (no abs. pos-embed,
          layer scale 0.1, drop path 0.1), mask patch 32, ratio 0.6 (pretrain/configs/simmim_vit_base_224_800ep.py)
  swin_b  Swin-B at 192, window 6, mask patch 32, ratio 0.6 (pretrain/configs/simmim_swin_base_192_100ep.py)

Variants (each is the same model and batch; only the execution differs):
  official       microsoft/SimMIM's own code (``models/simmim.py`` + encoder), imported from a checkout given with
                 ``--official-src DIR`` (not shipped here), with its param groups, AdamW and clip as in
                 ``main_simmim.py`` (fp32: apex AMP needs CUDA)
  official-eq    what microsoft/SimMIM executes: attention written out (q·kᵀ + bias, softmax, ·v — timm's
                 ``fused_attn=False`` path is the same arithmetic as the official code), full 1×1-conv + PixelShuffle
                 decoder and L1 over the whole image, ``torch.optim.AdamW`` with its default per-tensor loop
                 (foreach/fused off), ``clip_grad_norm_`` per tensor
  eager          the suite's SimMIM: timm's attention (fused SDPA where timm uses it), loss on masked blocks only,
                 AdamW(foreach=True)
  fused-adamw    eager + AdamW(fused=True)
  compile        fused-adamw + ``torch.compile`` (inductor) of the encoder
  bf16           fused-adamw + ``torch.autocast(bfloat16)``
  default        what ``python -m pretrain.train`` runs on the CPU: fused-adamw in a process with
                 ``pretrain.engine.tune_cpu_malloc()`` applied (process-wide, so it runs in a child process after the
                 interleaved rounds, with the same number of timed steps)

Timing: after ``--warmup`` untimed steps per variant, ``--rounds`` rounds each run ``--steps`` timed steps of
every variant in turn (interleaved, so load from other processes hits all variants alike); the median step time
is reported. On CUDA the FLOPs of one step are counted with ``torch.utils.flop_counter.FlopCounterMode`` and MFU
is FLOP/s ÷ the GPU's dense peak for the dtype; on the CPU the achieved GFLOP/s is compared with the measured
fp32 matmul rate of this machine. Results: ``results/perf/pretrain_step_<device>.md`` and ``.csv``.

Usage: python scripts/bench_pretrain.py [--models vit_b,swin_b] [--device cpu|cuda] [--batch 8]
       [--variants official-eq,eager,fused-adamw,compile,bf16] [--rounds 3 --steps 2 --warmup 2]
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pretrain.simmim import SimMIM  # noqa: E402

MODELS = {
    "vit_b": ("beit_base_patch16_224",
              dict(img_size=224, use_abs_pos_emb=False, use_rel_pos_bias=False, use_shared_rel_pos_bias=True,
                   init_values=0.1, use_fc_norm=False, drop_path_rate=0.1), 32),
    "swin_b": ("swin_base_patch4_window7_224", dict(img_size=192, window_size=6, drop_path_rate=0.0), 32),
}
VARIANTS = ("official", "official-eq", "eager", "fused-adamw", "compile", "bf16", "default")
# Anchor: the official SimMIM ViT-B/16 step at batch 8, measured on a different 2-core CPU (AVX-512 + AMX).
STACK_OFFICIAL_VIT_B8 = 0.62
TARGET_FACTOR = 2.5
# Dense peak FLOP/s per GPU (no sparsity) by name fragment: (bf16/fp16 tensor core, tf32, fp32).
GPU_PEAKS = {"H200": (989e12, 494e12, 67e12), "H100": (989e12, 494e12, 67e12), "A100": (312e12, 156e12, 19.5e12),
             "L40S": (362e12, 183e12, 91.6e12), "A10": (125e12, 62.5e12, 31.2e12)}


def cpu_description() -> str:
    name, flags = platform.processor() or "CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("CPU", platform.processor()):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    cores = os.cpu_count()
    return (f"{name}, {cores} cores, {torch.get_num_threads()} torch threads, ISA: {'/'.join(isa) or 'unknown'}, "
            f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}")


def matmul_rate(device: str, dtype=torch.float32) -> float:
    """FLOP/s of a ViT-B-sized matmul (1576×768 · 768×3072) on this device: the practical compute ceiling."""
    a = torch.randn(1576, 768, device=device, dtype=dtype)
    w = torch.randn(3072, 768, device=device, dtype=dtype)
    for _ in range(3):
        a @ w.t()
    times = []
    for _ in range(15):
        _sync(device)
        t = time.perf_counter()
        a @ w.t()
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * 1576 * 768 * 3072 / statistics.median(times)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def build_official(model_key: str, src: str) -> torch.nn.Module:
    """The official SimMIM model, as ``models/simmim.py: build_simmim`` builds it for the two pre-train configs."""
    from functools import partial

    if src not in sys.path:
        sys.path.insert(0, src)
    from models import simmim as official

    if model_key == "vit_b":
        enc = official.VisionTransformerForSimMIM(
            img_size=224, patch_size=16, in_chans=3, num_classes=0, embed_dim=768, depth=12, num_heads=12,
            mlp_ratio=4, qkv_bias=True, drop_rate=0.0, drop_path_rate=0.1,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), init_values=0.1, use_abs_pos_emb=False,
            use_rel_pos_bias=False, use_shared_rel_pos_bias=True, use_mean_pooling=False)
        return official.SimMIM(encoder=enc, encoder_stride=16)
    enc = official.SwinTransformerForSimMIM(
        img_size=192, patch_size=4, in_chans=3, num_classes=0, embed_dim=128, depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32], window_size=6, mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_rate=0.0,
        drop_path_rate=0.0, ape=False, patch_norm=True, use_checkpoint=False)
    return official.SimMIM(encoder=enc, encoder_stride=32)


class OfficialStep:
    """microsoft/SimMIM's train_one_epoch step (no accumulation, AMP O0)."""

    def __init__(self, model_key: str, batch: int, device: str, src: str, seed: int = 0):
        from pretrain.mask import MaskGenerator

        torch.manual_seed(seed)
        self.model = build_official(model_key, src).to(device)
        skip = self.model.no_weight_decay()
        keywords = self.model.no_weight_decay_keywords()
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():  # optimizer.py: get_pretrain_param_groups
            if len(p.shape) == 1 or name.endswith(".bias") or name in skip or any(k in name for k in keywords):
                no_decay.append(p)
            else:
                decay.append(p)
        self.opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], eps=1e-8,
                                     betas=(0.9, 0.999), lr=1e-4, weight_decay=0.05)
        size, patch = (224, 16) if model_key == "vit_b" else (192, 4)
        self.masks = MaskGenerator(size, 32, patch, 0.6)
        self.batch, self.device = batch, device
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(batch, 3, size, size, generator=g).to(device)
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def __call__(self) -> float:
        mask = self.masks(self.batch, generator=self.gen)
        loss = self.model(self.x, mask)
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()
        return float(loss.detach())

    def flops(self) -> float:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            self.model(self.x, self.masks(self.batch, generator=self.gen)).backward()
        self.opt.zero_grad()
        return float(fc.get_total_flops())


class Step:
    """One model + optimizer in one execution variant."""

    def __init__(self, model_key: str, variant: str, batch: int, device: str, seed: int = 0):
        arch, kwargs, mask_patch = MODELS[model_key]
        torch.manual_seed(seed)
        self.variant, self.device, self.batch = variant, device, batch
        official = variant == "official-eq"
        self.model = SimMIM(arch, kwargs, mask_patch, 0.6, masked_only_loss=not official,
                            compile_encoder=(variant == "compile")).to(device)
        if official:
            for m in self.model.modules():
                if hasattr(m, "fused_attn"):
                    m.fused_attn = False
        params = [{"params": [p for n, p in self.model.named_parameters() if n not in self.no_decay], "weight_decay":
                   0.05}, {"params": [p for n, p in self.model.named_parameters() if n in self.no_decay],
                           "weight_decay": 0.0}]
        opt_kw = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
        if official:
            opt_kw.update(foreach=False, fused=False)
        elif variant == "eager":
            opt_kw.update(foreach=True)
        else:
            opt_kw.update(fused=True)
        self.opt = torch.optim.AdamW(params, **opt_kw)
        self.clip_foreach = not official
        self.autocast = (torch.autocast(device_type=device, dtype=torch.bfloat16) if variant == "bf16"
                         else nullcontext())
        size = self.model.img_size
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(batch, 3, size, size, generator=g).to(device)
        self.gen = torch.Generator(device=device).manual_seed(seed)

    @property
    def no_decay(self) -> set[str]:
        if not hasattr(self, "_nd"):
            self._nd = self.model.no_weight_decay_names()
        return self._nd

    def __call__(self) -> float:
        mask = self.model.mask_generator(self.batch, generator=self.gen)
        self.opt.zero_grad(set_to_none=True)
        with self.autocast:
            loss = self.model(self.x, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0, foreach=self.clip_foreach)
        self.opt.step()
        return float(loss.detach())

    def flops(self) -> float:
        from torch.utils.flop_counter import FlopCounterMode

        mask = self.model.mask_generator(self.batch, generator=self.gen)
        with FlopCounterMode(display=False) as fc:
            loss = self.model(self.x, mask)
            loss.backward()
        self.opt.zero_grad(set_to_none=True)
        return float(fc.get_total_flops())


def time_steps(step: Step, n: int, device: str) -> list[float]:
    out = []
    for _ in range(n):
        _sync(device)
        t = time.perf_counter()
        step()
        _sync(device)
        out.append(time.perf_counter() - t)
    return out


def child_default(model_key: str, args) -> dict:
    """Run in a child process: the training default (fused AdamW + malloc tuning)."""
    from pretrain.engine import tune_cpu_malloc

    tuned = tune_cpu_malloc() if args.device == "cpu" else False
    step = Step(model_key, "fused-adamw", args.batch, args.device)
    t = time.perf_counter()
    for _ in range(args.warmup):
        step()
    _sync(args.device)
    warm = time.perf_counter() - t
    return {"times": time_steps(step, args.rounds * args.steps, args.device), "warmup_s": warm, "malloc": tuned}


def run_child_default(model_key: str, args) -> dict:
    import json
    import subprocess

    cmd = [sys.executable, __file__, "--child-default", model_key, "--device", args.device, "--batch",
           str(args.batch), "--rounds", str(args.rounds), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_model(model_key: str, variants: list[str], args) -> list[dict]:
    device = args.device
    want_default = "default" in variants
    variants = [v for v in variants if v != "default"]
    steps: dict[str, Step] = {}
    compile_s: dict[str, float] = {}
    for v in variants:
        print(f"[{model_key}] building {v} …", flush=True)
        steps[v] = (OfficialStep(model_key, args.batch, device, args.official_src) if v == "official"
                    else Step(model_key, v, args.batch, device))
        t = time.perf_counter()
        for _ in range(args.warmup):
            steps[v]()
        _sync(device)
        compile_s[v] = time.perf_counter() - t
        print(f"[{model_key}] {v}: warm-up {compile_s[v]:.1f} s", flush=True)
    flops = (steps["official-eq"] if "official-eq" in steps else steps[variants[0]] if steps
             else Step(model_key, "eager", args.batch, device)).flops()
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            times[v] += time_steps(steps[v], args.steps, device)
            print(f"[{model_key}] round {r + 1}/{args.rounds} {v}: {times[v][-1]:.2f} s/step", flush=True)
    del steps
    gc.collect()
    if want_default:
        print(f"[{model_key}] default (child process) …", flush=True)
        child = run_child_default(model_key, args)
        times["default"] = child["times"]
        compile_s["default"] = child["warmup_s"]
        variants.append("default")
        print(f"[{model_key}] default: {statistics.median(child['times']):.2f} s/step "
              f"(malloc tuning {'on' if child['malloc'] else 'unavailable'})", flush=True)
    rows = []
    for v in variants:
        med = statistics.median(times[v])
        rows.append({"model": model_key, "arch": MODELS[model_key][0], "variant": v, "device": device,
                     "batch": args.batch, "median_s": med, "min_s": min(times[v]), "max_s": max(times[v]),
                     "n": len(times[v]), "img_s": args.batch / med, "warmup_s": compile_s[v],
                     "gflop_per_step": flops / 1e9, "tflops": flops / med / 1e12})
    return rows


def write_tables(rows: list[dict], args, machine: str, ceiling: float, peaks: tuple | None) -> tuple[Path, Path]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"pretrain_step_{args.device}{'_' + args.tag if args.tag else ''}"
    # speed-ups are against the official code when it was measured, else against the official-equivalent
    base = {m: next((r["img_s"] for name in ("official", "official-eq") for r in rows
                     if r["model"] == m and r["variant"] == name), None) for m in {r["model"] for r in rows}}
    for r in rows:
        b = base.get(r["model"])
        r["speedup_vs_official"] = r["img_s"] / b if b else None
        # MFU against the dense peak of the dtype the matmuls ran in (bf16 tensor cores for bf16, else fp32)
        r["mfu"] = r["tflops"] * 1e12 / (peaks[0] if r["variant"] == "bf16" else peaks[2]) if peaks else None
        r["frac_of_matmul_rate"] = r["tflops"] * 1e12 / ceiling if ceiling else None
    with open(f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    lines = [f"# SimMIM pre-training step throughput ({args.device})", "",
             f"- machine: {machine}",
             f"- torch {torch.__version__}; batch {args.batch}; step = forward + backward + clip_grad_norm(5) + "
             f"AdamW; median of {args.rounds} interleaved rounds × {args.steps} steps after {args.warmup} warm-up "
             f"steps per variant ('default' in a child process after the interleaved rounds)",
             f"- measured fp32 matmul rate (1576×768·768×3072) on this device: {ceiling / 1e9:.1f} GFLOP/s"
             + (f"; dense peaks used for MFU: bf16 {peaks[0] / 1e12:.0f}, fp32 {peaks[2] / 1e12:.1f} TFLOP/s "
                f"(TF32 off)" if peaks else ""),
             f"- date: {time.strftime('%Y-%m-%d %H:%M')}", "",
             "| model | variant | img/s | median s/step | min–max s | × official | GFLOP/step | achieved "
             "GFLOP/s | " + ("MFU |" if peaks else "of fp32 matmul rate |") + " warm-up s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = f"{r['speedup_vs_official']:.2f}×" if r["speedup_vs_official"] else "–"
        eff = (f"{100 * r['mfu']:.1f} %" if peaks else f"{100 * r['frac_of_matmul_rate']:.0f} %")
        lines.append(f"| {r['model']} | {r['variant']} | {r['img_s']:.3f} | {r['median_s']:.2f} | "
                     f"{r['min_s']:.2f}–{r['max_s']:.2f} | {sp} | {r['gflop_per_step']:.0f} | "
                     f"{1000 * r['tflops']:.1f} | {eff} | {r['warmup_s']:.0f} |")
    vit = [r for r in rows if r["model"] == "vit_b" and r["variant"] in ("eager", "fused-adamw", "compile", "default")]
    if vit and args.device == "cpu" and args.batch == 8:
        best = max(vit, key=lambda r: r["img_s"])
        target = TARGET_FACTOR * STACK_OFFICIAL_VIT_B8
        lines += ["", f"Target: ≥ {TARGET_FACTOR}× the official SimMIM step on the 2-core CPU; with an anchor "
                      f"measured elsewhere (official ViT-B/16, batch 8: {STACK_OFFICIAL_VIT_B8} img/s, measured "
                      f"on an AVX-512/AMX CPU) that is ≥ {target:.2f} img/s. Best here: {best['variant']} "
                      f"{best['img_s']:.3f} img/s → target {'MET' if best['img_s'] >= target else 'NOT met'} in "
                      f"absolute terms; {best['speedup_vs_official']:.2f}× the "
                      f"{'official' if any(r['variant'] == 'official' for r in rows) else 'official-equivalent'} "
                      f"step measured on this machine → relative target "
                      f"{'MET' if (best['speedup_vs_official'] or 0) >= TARGET_FACTOR else 'NOT met'}."]
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    return Path(f"{stem}.md"), Path(f"{stem}.csv")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="vit_b,swin_b")
    p.add_argument("--variants", default="official-eq,eager,fused-adamw,compile,default",
                   help=f"any of {','.join(VARIANTS)} (bf16 is slow without native bf16 units: ask for it)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "results" / "perf"))
    p.add_argument("--tag", default="", help="suffix of the output file names")
    p.add_argument("--official-src", help="a microsoft/SimMIM checkout: adds the 'official' variant")
    p.add_argument("--child-default", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_default:
        import json

        print(json.dumps(child_default(args.child_default, args)))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is visible", file=sys.stderr)
        return 2
    variants = [v for v in args.variants.split(",") if v]
    if args.official_src and "official" not in variants:
        variants.insert(0, "official")
    if "official" in variants and not args.official_src:
        print("error: the 'official' variant needs --official-src (a microsoft/SimMIM checkout)", file=sys.stderr)
        return 2
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        print(f"error: unknown variant(s) {bad}; choose from {VARIANTS}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        name = torch.cuda.get_device_name()
        machine = f"{name}, torch CUDA {torch.version.cuda}; host {cpu_description()}"
        peaks = next((v for k, v in GPU_PEAKS.items() if k in name), None)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        machine, peaks = cpu_description(), None
    ceiling = matmul_rate(args.device)
    print(f"machine: {machine}; fp32 matmul {ceiling / 1e9:.1f} GFLOP/s", flush=True)
    rows = []
    for m in args.models.split(","):
        rows += bench_model(m, variants, args)
    md, cs = write_tables(rows, args, machine, ceiling, peaks)
    print(md.read_text())
    print(f"wrote {md} and {cs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
