"""mmengine pieces of SimMIM pre-training: the model wrapper, optimizer constructor, LR schedule and hooks.

Which checkpoints a resume may unpickle is decided in :mod:`benchmark.workdir`.

Everything is registered in mmengine's ROOT registries (``MODELS``, ``OPTIM_WRAPPER_CONSTRUCTORS``,
``PARAM_SCHEDULERS``, ``HOOKS``) under names that start with ``SimMIM``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel, is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler
from mmengine.registry import HOOKS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS, PARAM_SCHEDULERS

from benchmark.errors import TaskFailed

from .simmim import SimMIM, plain

LOSS_LOG = "loss_log.jsonl"


@MODELS.register_module()
class SimMIMModel(BaseModel):
    """:class:`pretrain.simmim.SimMIM` as an mmengine model.

    ``forward(inputs, mode='loss', mask=None)`` → ``{'loss': …}`` (a mask is drawn for the batch on the inputs'
    device when none is given); ``mode='predict'`` → ``(reconstruction, mask)``; ``mode='tensor'`` → features.
    A non-finite loss raises :class:`TaskFailed` before any parameter update, so the weights (and the last
    checkpoint) stay good.
    """

    def __init__(self, arch: str, arch_kwargs: Mapping | None = None, mask_patch: int = 32, mask_ratio: float = 0.6,
                 compile_encoder: bool | Mapping = False, masked_only_loss: bool = True,
                 grad_checkpointing: bool = False, data_preprocessor: Mapping | None = None,
                 init_cfg: Mapping | None = None):
        super().__init__(data_preprocessor=dict(data_preprocessor or dict(type="BaseDataPreprocessor")),
                         init_cfg=init_cfg)
        self.simmim = SimMIM(arch, arch_kwargs, mask_patch, mask_ratio, compile_encoder=plain(compile_encoder),
                             masked_only_loss=masked_only_loss, grad_checkpointing=grad_checkpointing)
        self.current_iter = -1

    def describe(self) -> dict[str, Any]:
        """What a checkpoint of this model must match to be resumed."""
        m = self.simmim
        return {"arch": m.arch, "arch_kwargs": plain(m.arch_kwargs), "mask_patch": m.mask_patch,
                "mask_ratio": m.mask_ratio, "img_size": m.img_size}

    def forward(self, inputs: torch.Tensor, data_samples: Any = None, mode: str = "tensor",
                mask: torch.Tensor | None = None):
        if mode == "loss":
            loss = self.simmim(inputs, mask)
            if not bool(torch.isfinite(loss.detach())):
                at = f" at iteration {self.current_iter + 1}" if self.current_iter >= 0 else ""
                raise TaskFailed(f"SimMIM loss is {float(loss.detach())}{at}; training stopped before the update",
                                 "lower the learning rate (or use bf16 instead of fp16 AMP) and re-run: it resumes "
                                 "from the last good checkpoint")
            return {"loss": loss}
        if mode == "predict":
            return self.simmim.reconstruct(inputs, mask)
        if mode == "tensor":
            return self.simmim.encode(inputs, mask)
        raise ValueError(f"unknown mode {mode!r}")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if is_model_wrapper(model) else model


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class SimMIMOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Two parameter groups as microsoft/SimMIM ``build_optimizer``: weight decay on weight matrices, none on
    1-D tensors, biases, position embeddings, relative position tables / CPB MLPs / logit scales, cls and mask
    tokens (:meth:`SimMIM.no_weight_decay_names`)."""

    def __call__(self, model: torch.nn.Module):
        module = unwrap(model)
        simmim = module.simmim if hasattr(module, "simmim") else module
        no_decay = {f"simmim.{n}" for n in simmim.no_weight_decay_names()} if hasattr(module, "simmim") \
            else simmim.no_weight_decay_names()
        decay, skip = [], []
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (skip if name in no_decay else decay).append(p)
        wd = self.optimizer_cfg.get("weight_decay", 0.0)
        groups = [{"params": decay, "weight_decay": wd}, {"params": skip, "weight_decay": 0.0}]
        optimizer_cfg = dict(self.optimizer_cfg)
        optimizer_cfg["params"] = groups
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        wrapper_cfg = dict(self.optim_wrapper_cfg)
        wrapper_cfg.setdefault("type", "OptimWrapper")
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))


@PARAM_SCHEDULERS.register_module()
class SimMIMLR(LRSchedulerMixin, _ParamScheduler):
    """microsoft/SimMIM's per-iteration schedule (timm schedulers with ``t_in_epochs=False``).

    ``t < warmup_iters``: linear from ``warmup_ratio × lr`` to ``lr``. Then, ``policy='cosine'``:
    ``min + (lr − min)(1 + cos(π t / total_iters)) / 2`` with ``min = min_ratio × lr`` (timm's CosineLRScheduler,
    whose cosine runs over the whole schedule, warm-up included); ``policy='multistep'``: ``lr × gamma^k`` with
    ``k`` the number of ``milestones`` (iterations) passed. ``lr`` is each group's initial lr (already scaled by
    total batch / 512); ``warmup_ratio`` and ``min_ratio`` are the official warmup_lr / base_lr and min_lr / base_lr.
    """

    def __init__(self, optimizer, total_iters: int, warmup_iters: int = 0, warmup_ratio: float = 0.0,
                 min_ratio: float = 0.0, policy: str = "cosine", milestones: Sequence[int] = (), gamma: float = 0.1,
                 begin: int = 0, end: int = INF, last_step: int = -1, by_epoch: bool = False, verbose: bool = False):
        if policy not in ("cosine", "multistep"):
            raise ValueError(f"SimMIMLR policy must be 'cosine' or 'multistep', got {policy!r}")
        self.total_iters = int(total_iters)
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)
        self.min_ratio = float(min_ratio)
        self.policy = policy
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        super().__init__(optimizer, begin=begin, end=end, last_step=last_step, by_epoch=by_epoch, verbose=verbose)

    def factor(self, t: int) -> float:
        if t < self.warmup_iters:
            return self.warmup_ratio + t * (1.0 - self.warmup_ratio) / self.warmup_iters
        if self.policy == "multistep":
            return self.gamma ** sum(1 for m in self.milestones if t >= m)
        if t >= self.total_iters:
            return self.min_ratio
        return self.min_ratio + 0.5 * (1.0 - self.min_ratio) * (1.0 + math.cos(math.pi * t / self.total_iters))

    def _get_value(self):
        f = self.factor(self.last_step)
        return [base * f for base in self.base_values]


@HOOKS.register_module()
class SimMIMRunHook(Hook):
    """Bookkeeping of a pre-training run: tells the model its iteration (for error messages), stores the model
    description in every checkpoint's meta (checked when resuming), and appends each iteration's loss and lr to
    ``<work_dir>/loss_log.jsonl`` (rank 0; entries past a resumed iteration are dropped)."""

    priority = "ABOVE_NORMAL"

    def __init__(self, flush_interval: int = 20):
        self.flush_interval = flush_interval
        self._rows: list[str] = []

    def _path(self, runner) -> Path:
        return Path(runner.work_dir) / LOSS_LOG

    def before_train(self, runner) -> None:
        if runner.rank != 0:
            return
        path = self._path(runner)
        if path.exists():  # keep the history up to where this run starts (a resume), drop the rest
            keep = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["iter"] <= runner.iter:
                        keep.append(line)
                except (ValueError, KeyError):
                    continue
            path.write_text("".join(f"{k}\n" for k in keep))

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        unwrap(runner.model).current_iter = runner.iter

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.rank != 0 or not outputs or "loss" not in outputs:
            return
        lr = runner.optim_wrapper.get_lr()
        lr = next(iter(lr.values()))[0] if isinstance(lr, dict) else None
        loss = outputs["loss"]
        loss = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        self._rows.append(json.dumps({"iter": runner.iter + 1, "loss": loss, "lr": lr}))
        if len(self._rows) >= self.flush_interval:
            self._flush(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault("meta", {})["simmim"] = unwrap(runner.model).describe()
        self._flush(runner)

    def after_train(self, runner) -> None:
        self._flush(runner)

    def _flush(self, runner) -> None:
        if runner.rank != 0 or not self._rows:
            return
        with open(self._path(runner), "a") as fh:
            fh.write("".join(f"{r}\n" for r in self._rows))
        self._rows = []


@HOOKS.register_module()
class SimMIMWeightsDigestHook(Hook):
    """At the end of training, each rank writes the SHA-256 of its model weights to
    ``<work_dir>/weights_rank<R>.sha256`` (checks that data-parallel replicas stayed identical)."""

    priority = "LOWEST"

    def after_train(self, runner) -> None:
        h = hashlib.sha256()
        for k, v in sorted(unwrap(runner.model).state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        (Path(runner.work_dir) / f"weights_rank{runner.rank}.sha256").write_text(h.hexdigest() + "\n")


def tune_cpu_malloc() -> bool:
    """Keep freed activation memory in the process (glibc ``mallopt``) instead of unmapping it after every step.

    glibc serves allocations above its (dynamic) mmap threshold with fresh ``mmap`` pages, so each training step
    page-faults its activations in again (~100k faults per ViT-B/16 step at batch 8). Raising the mmap threshold to
    its maximum (32 MiB; every ViT-B/Swin-B activation at batch 8 is smaller) and the trim threshold keeps them in
    the heap: ~0 faults per step, 2–3 % faster steps on the 2-core CPU (results/perf). Linux/glibc only; a no-op
    elsewhere. Returns whether it was applied.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        ok = libc.mallopt(m_mmap_threshold, 32 << 20) == 1
        ok &= libc.mallopt(m_trim_threshold, 2 ** 31 - 1) == 1
        ok &= libc.mallopt(m_top_pad, 256 << 20) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False
