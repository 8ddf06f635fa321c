"""SimMIM pre-training on mmengine's Runner: ``python -m pretrain.train --config CONFIG [options]``.

Examples::

    python -m pretrain.train --config simmim_vit_tiny_fmnist --work-dir work_dirs/mim_tiny
    torchrun --nproc_per_node 8 -m pretrain.train --config simmim_swin_base_192_100ep --launcher pytorch \\
        --cfg-options train_dataloader.dataset.root=/data/imagenet/train
    srun -N2 --ntasks-per-node 8 python -m pretrain.train --config simmim_vit_base_224_800ep --launcher slurm

CONFIG is a path to an mmengine Python config or the name of one in ``pretrain/configs``. A run resumes from the
work dir's last checkpoint by default (``--resume auto``; ``--resume none`` starts over). Outputs in the work dir:
mmengine's logs and checkpoints, ``loss_log.jsonl``, ``loss_curve.png``, ``reconstruction.png`` and the canonical
backbone checkpoint (``--out``, default ``<work-dir>/mim.pth``).

Exit codes: 0 done; 2 bad input (one ``error:`` line, no traceback); 1 training failed (NaN loss …); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.distributed import init_cpu_dist
from benchmark.errors import BenchmarkError, CheckpointError, TaskFailed
from benchmark.vis import visualizer_cfg
from benchmark.workdir import read_own_checkpoint_meta, trust_work_dir

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
log = logging.getLogger("pretrain")


def build_parser() -> argparse.ArgumentParser:
    from mmengine.config import DictAction

    p = argparse.ArgumentParser(prog="python -m pretrain.train", description="SimMIM pre-training (mmengine Runner)")
    p.add_argument("--config", required=True, help="mmengine config file, or a name in pretrain/configs")
    p.add_argument("--work-dir", type=Path, help="default: work_dirs/<config name>")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                   help="none: one process; pytorch: under torchrun; slurm: under srun")
    p.add_argument("--resume", default="auto",
                   help="auto (default): continue from the work dir's last checkpoint if there is one; "
                        "none: start over")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, metavar="KEY=VALUE",
                   help="override config entries, e.g. simmim.iters=100 train_dataloader.batch_size=32")
    p.add_argument("--out", type=Path, help="canonical backbone checkpoint (default <work-dir>/mim.pth)")
    p.add_argument("--vis-backend", choices=["none", "tensorboard"], default=None,
                   help="tensorboard: write loss / lr curves as TensorBoard event files in the work dir "
                        "(default: the config's visualizer)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    return p


def find_config(name: str) -> Path:
    p = Path(name)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.py"):
        if cand.is_file():
            return cand
    names = sorted(c.stem for c in CONFIG_DIR.glob("*.py"))
    raise BenchmarkError(f"config not found: {name}", f"pass a config file or one of: {', '.join(names)}")


def load_config(args: argparse.Namespace):
    from mmengine.config import Config

    path = find_config(args.config)
    try:
        cfg = Config.fromfile(str(path))
    except Exception as exc:
        raise BenchmarkError(f"cannot read config {path}: {str(exc).splitlines()[0][:200]}",
                             "fix the config file") from exc
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.get("simmim") is None or cfg.get("model") is None:
        raise BenchmarkError(f"{path} is not a SimMIM pre-training config (no `simmim` / `model` section)",
                             "start from a file in pretrain/configs")
    work_dir = args.work_dir or (Path(cfg.work_dir) if cfg.get("work_dir") else Path("work_dirs") / path.stem)
    cfg.work_dir = str(work_dir)
    return cfg, path


def resolve_schedule(cfg, dataset_len: int, world_size: int, device: str) -> dict[str, Any]:
    """The official recipe → mmengine settings: scaled lrs, iteration counts, SimMIMLR, optim wrapper type."""
    s = cfg.simmim
    dl = cfg.train_dataloader
    batch = int(dl.batch_size)
    accum = int(cfg.optim_wrapper.get("accumulative_counts", 1) or 1)
    total_batch = batch * world_size * accum
    if (s.get("epochs") is None) == (s.get("iters") is None):
        raise BenchmarkError("the config must set exactly one of simmim.epochs and simmim.iters",
                             "e.g. --cfg-options simmim.iters=1000 (and simmim.epochs=None)")
    iters_per_epoch = dataset_len // (batch * world_size) if dl.get("drop_last", True) \
        else math.ceil(dataset_len / (batch * world_size))
    if iters_per_epoch < 1:
        raise BenchmarkError(f"the training set has {dataset_len} images, fewer than one batch of {batch} × "
                             f"{world_size} process(es)", "add images or lower train_dataloader.batch_size")
    if s.get("epochs") is not None:
        unit = iters_per_epoch
        total = int(s.epochs) * unit
        warmup = int(round(float(s.get("warmup_epochs", 0)) * unit))
    else:
        unit = 1
        total = int(s.iters)
        warmup = int(s.get("warmup_iters", 0))
    milestones = [int(m) * unit for m in s.get("milestones", [])]
    scale = total_batch / float(s.get("base_batch", 512))
    lr = float(s.base_lr) * scale
    warmup_lr = float(s.get("warmup_lr", 0.0)) * scale
    min_lr = float(s.get("min_lr", 0.0)) * scale
    policy = s.get("lr_policy", "cosine")
    if policy == "multistep" and milestones and warmup > min(milestones):
        raise BenchmarkError("the multistep milestones fall inside the warm-up", "fix simmim.milestones")

    amp = str(s.get("amp", "auto")).lower()
    ow = cfg.optim_wrapper
    if amp == "auto":
        if device == "cuda":
            import torch
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            amp = "none"
    if amp in ("bf16", "fp16"):
        if device != "cuda":
            raise BenchmarkError(f"simmim.amp={amp} needs a CUDA GPU (mmengine's AmpOptimWrapper)",
                                 "use simmim.amp=none on the CPU")
        ow.type = "AmpOptimWrapper"
        ow.dtype = "bfloat16" if amp == "bf16" else "float16"
    elif amp == "none":
        ow.type = ow.get("type") if ow.get("type") not in (None, "AmpOptimWrapper") else "OptimWrapper"
        ow.pop("dtype", None)
    else:
        raise BenchmarkError(f"simmim.amp must be auto, bf16, fp16 or none, got {amp!r}", "fix simmim.amp")
    ow.optimizer.lr = lr
    cfg.param_scheduler = [dict(type="SimMIMLR", total_iters=total, warmup_iters=warmup,
                                warmup_ratio=warmup_lr / lr if lr else 0.0, min_ratio=min_lr / lr if lr else 0.0,
                                policy=policy, milestones=milestones, gamma=float(s.get("gamma", 0.1)),
                                by_epoch=False)]
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=total, val_interval=total + 1)
    ck = cfg.default_hooks.checkpoint
    ck.interval = int(s.get("checkpoint_interval", 1000))
    ck.by_epoch = False
    ck.max_keep_ckpts = int(s.get("max_keep_ckpts", 3))
    return {"total_batch": total_batch, "lr": lr, "warmup_lr": warmup_lr, "min_lr": min_lr, "max_iters": total,
            "warmup_iters": warmup, "iters_per_epoch": iters_per_epoch, "milestones": milestones, "amp": amp,
            "policy": policy}


def model_description(model_cfg) -> dict[str, Any]:
    from .simmim import plain

    kw = plain(dict(model_cfg.get("arch_kwargs") or {}))
    kw.pop("num_classes", None)
    return {"arch": model_cfg.arch, "arch_kwargs": kw, "mask_patch": int(model_cfg.get("mask_patch", 32)),
            "mask_ratio": float(model_cfg.get("mask_ratio", 0.6))}


def _norm(d: dict) -> dict:
    import json
    return json.loads(json.dumps(d, sort_keys=True, default=str))


def check_resume_compatible(work_dir: Path, model_cfg) -> Path | None:
    """The work dir's last checkpoint, after checking it was made by the same model; None if there is none."""
    from mmengine.runner import find_latest_checkpoint

    latest = find_latest_checkpoint(str(work_dir))
    if not latest:
        return None
    try:
        meta = read_own_checkpoint_meta(latest)
    except Exception as exc:
        raise CheckpointError(f"cannot read the last checkpoint {latest} in {work_dir}: {str(exc)[:160]}",
                              "delete it (and the work dir's last_checkpoint file) or use --resume none") from exc
    have = meta.get("simmim")
    want = model_description(model_cfg)
    if not isinstance(have, dict):
        raise CheckpointError(f"{latest} in {work_dir} is not a SimMIM pre-training checkpoint of this suite",
                              "use another --work-dir, or --resume none to start over")
    have_cmp = {k: have.get(k) for k in want}
    if _norm(have_cmp) != _norm(want):
        def fmt(d):
            return f"{d['arch']} {d['arch_kwargs']} mask {d['mask_patch']}px/{d['mask_ratio']}"
        raise CheckpointError(f"cannot resume: {latest} was trained as {fmt(have_cmp)}, but this config builds "
                              f"{fmt(want)}", "use another --work-dir, or --resume none to start over in this one")
    return Path(latest)


def build_vis_images(cfg, train_dataset_cfg) -> Any:
    import torch
    from mmengine.registry import DATASETS

    vis = cfg.simmim.get("vis") or {}
    num = int(vis.get("num", 6))
    if num <= 0:
        return None
    ds_cfg = vis.get("dataset")
    if ds_cfg is None:  # no held-out set given: the training images, deterministically cropped
        ds_cfg = dict(train_dataset_cfg)
        ds_cfg["augment"] = False
        if ds_cfg.get("type") == "SimMIMImageFolder":
            ds_cfg["verify"] = "none"
    ds = DATASETS.build(dict(ds_cfg))
    idx = range(max(0, len(ds) - num), len(ds)) if vis.get("dataset") is None else range(min(num, len(ds)))
    return torch.stack([ds[i]["inputs"] for i in idx])


def run(args: argparse.Namespace) -> int:
    import torch
    from mmengine.dist import barrier, get_dist_info, init_dist, is_distributed
    from mmengine.registry import DATASETS
    from mmengine.runner import Runner

    from . import data as _data  # noqa: F401 - registers the datasets
    from . import engine

    cfg, cfg_path = load_config(args)
    work_dir = Path(cfg.work_dir)
    if args.launcher != "none" and not is_distributed():
        dist_cfg = dict(cfg.get("env_cfg", {}).get("dist_cfg", {}) or {})
        if torch.cuda.is_available():
            init_dist(args.launcher, **dist_cfg)
        else:
            init_cpu_dist(args.launcher, **dist_cfg)
    rank, world = get_dist_info()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work_dir.mkdir(parents=True, exist_ok=True)
    trust_work_dir(work_dir)
    if device == "cpu" and cfg.simmim.get("cpu_malloc_tuning", True):
        engine.tune_cpu_malloc()

    resume = str(args.resume).lower()
    if resume not in ("auto", "none", "off", "false", "no"):
        raise BenchmarkError(f"--resume takes 'auto' or 'none', got {args.resume!r}",
                             "the run resumes from the work dir's last checkpoint with --resume auto")
    resume_from = check_resume_compatible(work_dir, cfg.model) if resume == "auto" else None

    dl_cfg = dict(cfg.train_dataloader)
    dataset_cfg = dict(dl_cfg.pop("dataset"))
    dataset = DATASETS.build(dataset_cfg)
    plan = resolve_schedule(cfg, len(dataset), world, device)

    if world > 1 and device == "cpu" and cfg.get("model_wrapper_cfg") is None:
        # mmengine passes device_ids=[LOCAL_RANK] to DDP, which only GPU modules accept
        cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False)
    runner = Runner(
        model=cfg.model, work_dir=str(work_dir), train_dataloader=dict(dl_cfg, dataset=dataset),
        train_cfg=cfg.train_cfg, optim_wrapper=cfg.optim_wrapper, param_scheduler=cfg.param_scheduler,
        default_hooks=cfg.default_hooks, custom_hooks=cfg.get("custom_hooks"), resume=resume_from is not None,
        load_from=str(resume_from) if resume_from else None, launcher=args.launcher, env_cfg=cfg.env_cfg,
        log_processor=cfg.get("log_processor"), log_level=cfg.get("log_level", "INFO"),
        default_scope=cfg.get("default_scope", "mmengine"), randomness=cfg.get("randomness", dict(seed=0)),
        visualizer=visualizer_cfg(args.vis_backend) if args.vis_backend else cfg.get("visualizer"), cfg=cfg)
    runner.logger.info(
        f"SimMIM pre-training: config {cfg_path}, {len(dataset)} images, world size {world}, total batch "
        f"{plan['total_batch']}, lr {plan['lr']:.3g} (warmup from {plan['warmup_lr']:.3g} over "
        f"{plan['warmup_iters']} it, {plan['policy']} to {plan['min_lr']:.3g}), {plan['max_iters']} iterations "
        f"({plan['iters_per_epoch']}/epoch), amp {plan['amp']}, device {device}"
        + (f", resuming from {resume_from}" if resume_from else ""))
    try:
        runner.train()
    except TaskFailed as exc:
        last = work_dir / "last_checkpoint"
        good = last.read_text().strip() if last.exists() else "none yet"
        raise TaskFailed(f"{exc.problem}; last good checkpoint: {good}", exc.fix) from None

    if rank == 0:
        from .figures import loss_curve, reconstruction_figure

        model = engine.unwrap(runner.model)
        out = args.out or work_dir / "mim.pth"
        model.simmim.export(out, source=f"pretrain.train {cfg_path.name} ({plan['max_iters']} iterations)")
        runner.logger.info(f"canonical backbone checkpoint: {out}")
        curve = loss_curve(work_dir / engine.LOSS_LOG, work_dir / "loss_curve.png", title=cfg_path.stem)
        if curve:
            runner.logger.info(f"loss curve: {curve}")
        images = build_vis_images(cfg, dataset_cfg)
        if images is not None:
            fig = reconstruction_figure(model.simmim, images, work_dir / "reconstruction.png",
                                        seed=int(cfg.simmim.get("vis", {}).get("seed", 0)))
            runner.logger.info(f"reconstruction figure: {fig}")
    if world > 1:
        barrier()
    return 0


def one_line(exc: BenchmarkError) -> str:
    """One line for the user, also for errors re-raised by a DataLoader worker (their text holds a traceback)."""
    text = str(exc)
    if text.startswith("Caught "):
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        last = lines[-1] if lines else text
        head, sep, rest = last.partition(": ")
        text = rest if sep and head.replace(".", "").replace("_", "").isalnum() else last
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        return run(args)
    except BenchmarkError as exc:
        if args.debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1 if isinstance(exc, TaskFailed) else exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
