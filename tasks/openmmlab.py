"""What every OpenMMLab adapter shares: an mmengine Runner built for one (task, checkpoint, preset, seed).

An adapter describes its model, datasets and evaluators as plain config dicts (mmpose / mmseg / mmdet types); this
module adds the rest the same way for every task:

* iteration-based training (a paper schedule in epochs is converted with the training set's length and the world
  size, so milestones and warm-up mean the same thing at any scale), AdamW + layer-wise lr decay
  (``MIMLayerDecayOptimWrapperConstructor``), warm-up, gradient clipping, AMP on CUDA;
* checkpoints in the run's work dir every ``checkpoint_interval`` iterations and automatic resume after an
  interruption (only when the work dir's config hash matches; the suite's own checkpoints are trusted, a user's
  ``--ckpt`` never is);
* a hook that stops on a non-finite loss with one clear line, and one that reports progress to the benchmark runner;
* distributed data parallel: under ``torchrun`` (or Slurm) the worker process group is initialised before the
  Runner is built (gloo on CPU, nccl on GPU); the Runner's launcher is then 'pytorch' and it only wraps the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from benchmark.errors import TaskFailed

log = logging.getLogger("benchmark")

IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class NonFiniteLossHook(Hook):
    """Stops training at the first non-finite loss: a NaN run must fail loudly, never produce a number."""

    priority = "VERY_HIGH"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        loss = (outputs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TaskFailed(f"the training loss became {float(loss)} at iteration {runner.iter + 1}",
                             "lower the learning rate (e.g. --set lr=...) or check the data and the checkpoint")


class ProgressHook(Hook):
    """Reports training progress (and the evaluation phases) to the benchmark runner, from rank 0 only."""

    priority = "LOW"

    def __init__(self, report: Callable[[float, str], None], train_share: float, every: int = 5):
        self.report, self.train_share, self.every = report, train_share, every

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        it, total = runner.iter + 1, runner.max_iters
        if runner.rank == 0 and (it % self.every == 0 or it == total):
            loss = (outputs or {}).get("loss")
            msg = f"train {it}/{total}" + (f" loss {float(loss):.4g}" if loss is not None else "")
            self.report(self.train_share * it / max(total, 1), msg)


def config_digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def iterations(params: dict, train_len: int, total_batch: int) -> tuple[int, int]:
    """(max_iters, iters_per_epoch): ``iters`` wins; else ``epochs`` over the training set at this batch size."""
    per_epoch = max(1, train_len // total_batch)  # drop_last=True, as the reference codebases
    if params.get("iters"):
        return int(params["iters"]), per_epoch
    return int(round(float(params["epochs"]) * per_epoch)), per_epoch


def optim_wrapper(params: dict, device: str) -> dict:
    """AdamW with layer-wise lr decay, the fine-tuning recipe of BEiT / SimMIM / ViTPose; AMP on CUDA."""
    cfg: dict[str, Any] = dict(
        type="AmpOptimWrapper" if device.startswith("cuda") else "OptimWrapper",
        optimizer=dict(type="AdamW", lr=float(params["lr"]), betas=(0.9, 0.999),
                       weight_decay=float(params.get("weight_decay", 0.05))),
        constructor="MIMLayerDecayOptimWrapperConstructor",
        paramwise_cfg=dict(layer_decay_rate=float(params.get("layer_decay", 1.0))))
    if device.startswith("cuda"):
        cfg["dtype"] = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if params.get("clip_grad"):
        cfg["clip_grad"] = dict(max_norm=float(params["clip_grad"]), norm_type=2)
    return cfg


def warmup(params: dict, max_iters: int) -> list[dict]:
    n = min(int(params.get("warmup_iters", 0)), max(max_iters - 1, 0))
    if n <= 0:
        return []
    return [dict(type="LinearLR", start_factor=float(params.get("warmup_ratio", 1e-3)), by_epoch=False,
                 begin=0, end=n)]


def dataloader(dataset: Any, batch_size: int, *, train: bool, workers: int = 0) -> dict:
    """Training: mmengine's InfiniteSampler, as its iteration-based loops expect (with DefaultSampler the loop sleeps
    2 s at every epoch end: on a small dataset that is most of the run). Evaluation: each sample exactly once."""
    sampler = dict(type="InfiniteSampler", shuffle=True) if train else dict(type="DefaultSampler", shuffle=False)
    return dict(batch_size=int(batch_size), num_workers=int(workers), persistent_workers=bool(workers),
                drop_last=train, dataset=dataset, sampler=sampler)


def build_runner(*, work_dir: Path, scope: str, seed: int, device: str, model: dict, train_dataloader: dict,
                 optim_wrapper_cfg: dict, param_scheduler: list[dict], max_iters: int, checkpoint_interval: int,
                 val_dataloader: dict | None = None, val_evaluator: Any = None, test_dataloader: dict | None = None,
                 test_evaluator: Any = None, report: Callable[[float, str], None] | None = None,
                 train_share: float = 0.9, log_interval: int = 10, digest_of: Any = None):
    """An mmengine Runner for one task run; resumes from ``work_dir`` when an identical run was interrupted."""
    from mmengine.runner import Runner

    from pretrain.engine import trust_work_dir

    work_dir.mkdir(parents=True, exist_ok=True)
    trust_work_dir(work_dir)  # the run's own checkpoints (mmengine pickles); user checkpoints stay weights_only
    digest = config_digest(digest_of if digest_of is not None else model)
    stamp = work_dir / "task_config.sha"
    resume = (work_dir / "last_checkpoint").exists() and stamp.exists() and stamp.read_text().strip() == digest
    if rank() == 0:
        stamp.write_text(digest + "\n")

    world = world_size()
    distributed = world > 1
    env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                   dist_cfg=dict(backend="nccl" if device.startswith("cuda") else "gloo"))
    kwargs: dict[str, Any] = {}
    if distributed and not device.startswith("cuda"):
        # mmengine passes device_ids=[LOCAL_RANK] to DDP, which only GPU modules accept
        # (the Runner reads it from its cfg, not from a keyword)
        kwargs["cfg"] = dict(model_wrapper_cfg=dict(type="MMDistributedDataParallel", device_ids=None,
                                                    broadcast_buffers=False, find_unused_parameters=False))
    ckpt_every = max(1, int(checkpoint_interval))
    runner = Runner(
        model=model, work_dir=str(work_dir), train_dataloader=train_dataloader,
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=int(max_iters), val_interval=int(max_iters) + 1),
        val_dataloader=val_dataloader, val_cfg=dict(type="ValLoop") if val_dataloader else None,
        val_evaluator=val_evaluator, test_dataloader=test_dataloader,
        test_cfg=dict(type="TestLoop") if test_dataloader else None, test_evaluator=test_evaluator,
        optim_wrapper=optim_wrapper_cfg, param_scheduler=param_scheduler,
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=log_interval, log_metric_by_epoch=False),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=ckpt_every, max_keep_ckpts=1,
                            save_last=True),
            sampler_seed=dict(type="DistSamplerSeedHook")),
        launcher="pytorch" if distributed else "none", env_cfg=env_cfg, resume=resume,
        randomness=dict(seed=int(seed), diff_rank_seed=True), default_scope=scope,
        log_processor=dict(by_epoch=False), visualizer=None, log_level="INFO", **kwargs)
    runner.register_hook(NonFiniteLossHook())
    if report is not None:
        runner.register_hook(ProgressHook(report, train_share))
    return runner


def train(runner) -> None:
    """Train; a non-finite loss or a crash names the work dir (its log and last good checkpoint)."""
    try:
        runner.train()
    except TaskFailed as exc:
        raise TaskFailed(f"{exc.problem} (log and checkpoints in {runner.work_dir})", exc.fix) from None


def pick(metrics: dict[str, float], names: dict[str, str], scale: float = 1.0) -> dict[str, float]:
    """Rename an OpenMMLab evaluator's keys to the spec's metric names (and scale fractions to percent)."""
    missing = [src for src in names.values() if src not in metrics]
    if missing:
        raise TaskFailed(f"the evaluator returned {sorted(metrics)}, expected {missing} too",
                         "this is a bug in the adapter's metric mapping; please report it")
    return {dst: float(metrics[src]) * scale for dst, src in names.items()}


def device_of(device: str) -> str:
    """cuda → the local rank's GPU under torchrun; mmengine moves the model there itself."""
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return device


def export_backbone(runner, path: Path, task: str) -> Path | None:
    """Write the fine-tuned trunk as a canonical checkpoint (rank 0): reusable with ``benchmark run --ckpt``, e.g. to
    check that the task's data is learnable (a trained backbone must beat random init)."""
    from benchmark.checkpoint import save_canonical

    if rank() != 0:
        return None
    model = getattr(runner.model, "module", runner.model)
    bb = model.backbone
    meta = dict(bb.meta)
    meta["method"] = f"{meta.get('method', 'unknown')}+{task}"
    meta["source"] = f"{meta.get('source', '')} -> fine-tuned on {task} ({runner.iter} iterations)".strip(" ->")
    state = {k: v.detach().cpu().clone() for k, v in bb.trunk.state_dict().items()}
    return save_canonical(path, state, meta)
