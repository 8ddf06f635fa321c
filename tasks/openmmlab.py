"""The harness of every trained task: ``TrainedTask``, an adapter whose ``run()`` trains on mmengine's Runner.

A subclass supplies only what is specific to its task (see docs/adding_a_task.md):

* ``scope`` (the OpenMMLab registry: "mmpose", "mmseg", "mmdet" or "mmengine") and ``register()`` (imports that
  register the task's own modules);
* ``datasets()`` -> ``TaskData``: the built training dataset and one or more ``Evaluation``s (dataset + evaluator);
* ``model()`` -> the model config dict;
* ``metrics(results)`` -> the spec's metrics from the evaluators' outputs (``pick`` renames and scales).

The base owns, once, for every task:

* parameters: ``TrainedTask.params`` declares the shared training parameters; subclasses add theirs and may change
  a default (e.g. the schedule);
* world size and the per-process batch: ``batch_size`` is the TOTAL batch over all processes;
* the learning-rate rule: a preset's ``lr`` and ``min_lr`` are for its total ``batch_size``; when the batch used
  differs (an indivisible batch, a small training set, ``--set batch_size=``) both scale linearly by
  used / preset batch;
* length: ``iters`` if set, else ``epochs`` × (training-set size // total batch) iterations (mmengine's
  InfiniteSampler; milestones and warm-up are converted the same way, so they mean the same at any scale);
* warm-up (``warmup_iters``, else ``warmup_epochs``; linear from ``warmup_ratio`` × lr) and the ``schedule``:
  ``constant``, ``step`` (×0.1 at ``milestones_epochs``, or at ``milestones_frac`` of an ``iters`` run),
  ``cosine`` (to ``min_lr`` after the warm-up), ``onecycle`` (the paper's depth code: from ``min_lr`` up to ``lr``
  as s^0.9 over floor(epochs / 2) epochs, down as s^0.9 over as many, then ``min_lr``; each layer-decay group on its
  own scale; ``tasks.lr_schedules``; no separate warm-up);
* AdamW with layer-wise lr decay (``MIMLayerDecayOptimWrapperConstructor``), weight decay, gradient clipping, drop
  path; AMP (bf16 where supported, else fp16) on CUDA;
* checkpoints in the run's work dir every ``checkpoint_interval`` iterations and automatic resume of an identical
  interrupted run (``task_config.sha``: a digest of the model config, parameters, subset, data files and
  fingerprint, task version and the suite's git commit; the checkpoints load ``weights_only`` with an allow-list,
  see benchmark/workdir.py); the stop on a non-finite loss; progress reports; the log line; ``export_backbone``;
  ``extra`` (training-set size, iterations, total batch, lr);
* distributed data parallel: under ``torchrun`` (or Slurm) the worker initialises the process group before the
  Runner is built (gloo on CPU, nccl on GPU); the Runner's launcher is then 'pytorch' and it only wraps the model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from benchmark.data import fingerprint
from benchmark.distributed import rank, world_size
from benchmark.errors import BenchmarkError, DataError, TaskFailed
from tasks.base import REQUIRED, Param, TaskAdapter

log = logging.getLogger("benchmark")

IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]
SCHEDULES = ("constant", "step", "cosine", "onecycle")


# ------------------------------------------------------------------------------------------ what a task supplies
@dataclass
class Evaluation:
    """One scoring pass after training: its results come back under ``name`` in ``metrics(results)``."""

    name: str
    dataset: Any  # a built dataset or a dataset config
    evaluator: Any  # an evaluator config (or list of them)


@dataclass
class TaskData:
    train: Any  # the built training dataset (its length sizes an epoch)
    evaluations: list[Evaluation]
    summary: str = ""  # for the log line, e.g. "118 training instances / 40 test images"
    collate: str | None = None  # e.g. "default_collate" for stacked tensors; None: mmengine's pseudo_collate
    extra: dict[str, Any] = field(default_factory=dict)  # facts stored with the result
    digest: Any = None  # what identifies the data for resume (file names, sizes); the model config is added


@dataclass(frozen=True)
class FamilyRecipe:
    """A task's official recipe for one backbone family: the parameter values a preset leaves ``null`` take these.

    ``source`` names the official file(s) the values come from (shown by ``benchmark plan`` and docs/protocols.md).
    """

    source: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """The run's resolved scale: every number the training depends on, derived once."""

    world: int
    per_process_batch: int
    total_batch: int
    max_iters: int
    iters_per_epoch: int
    lr: float
    min_lr: float
    warmup_iters: int


# ------------------------------------------------------------------------------------------------- the harness
class TrainedTask(TaskAdapter):
    scope: ClassVar[str] = "mmengine"
    train_share: ClassVar[float] = 0.9  # the share of the progress bar training takes; evaluation the rest

    params: ClassVar[dict[str, Param]] = {
        **TaskAdapter.params,
        "batch_size": Param(REQUIRED, int, "TOTAL batch over all processes (lr is for this batch)"),
        "lr": Param(REQUIRED, float, "peak learning rate for the total batch_size"),
        "min_lr": Param(0.0, float, "final lr of cosine / onecycle (for the total batch_size)"),
        "epochs": Param(None, float, "training length in epochs (ignored when iters is set)", nullable=True),
        "iters": Param(None, int, "training length in iterations (wins over epochs)", nullable=True),
        "schedule": Param("constant", str, "lr schedule after the warm-up", choices=SCHEDULES),
        "warmup_iters": Param(None, int, "linear warm-up length in iterations", nullable=True),
        "warmup_epochs": Param(None, float, "linear warm-up length in epochs (if warmup_iters is null)",
                               nullable=True),
        "warmup_ratio": Param(1e-3, float, "the warm-up starts at warmup_ratio x lr"),
        "milestones_epochs": Param([], list, "step schedule: x0.1 at these epochs"),
        "milestones_frac": Param([], list, "step schedule with iters: x0.1 at these fractions of the run"),
        "weight_decay": Param(0.05, float, "AdamW weight decay"),
        "layer_decay": Param(1.0, float, "layer-wise lr decay rate (1: none)"),
        "no_decay_rule": Param("1d", str, "parameters without weight decay: 1d = every 1-D parameter (norms, biases) "
                                          "and position tables (MIM fine-tuning codes); norms = norm layers and "
                                          "position tables, biases decayed (mmdet / mmseg custom_keys); none = "
                                          "everything decayed (trackers)", choices=("1d", "norms", "none")),
        "clip_grad": Param(None, float, "max gradient L2 norm (null: no clipping)", nullable=True),
        "drop_path": Param(0.0, float, "stochastic depth rate of the backbone"),
        "workers": Param(0, int, "DataLoader worker processes per training process"),
        "test_batch_size": Param(1, int, "evaluation batch per process"),
        "checkpoint_interval": Param(None, int, "iterations between checkpoints (null: max(100, iters // 10))",
                                     nullable=True),
        "export_backbone": Param(False, bool, "write the fine-tuned trunk as a canonical checkpoint"),
    }

    # The official recipe per backbone family ('plain' ViT, 'beit', 'swin'; a 'beit' checkpoint without its own
    # entry takes the 'plain' one). A preset that leaves a parameter null gets the family's value at run time.
    family_recipes: ClassVar[dict[str, FamilyRecipe]] = {}
    quiet_plan = False  # `benchmark plan` reports a scaled lr itself

    @classmethod
    def family_recipe(cls, arch: str) -> tuple[str, FamilyRecipe | None]:
        """(family, its recipe or None) for a timm arch name. A recipe may also be keyed by the finer variant
        (``benchmark.families.variant``, e.g. 'eva'), which wins over its family's."""
        from benchmark.families import family, variant

        fam = family(arch)
        recipe = (cls.family_recipes.get(variant(arch)) or cls.family_recipes.get(fam)
                  or (cls.family_recipes.get("plain") if fam == "beit" else None))
        return fam, recipe

    @classmethod
    def resolve_family(cls, params: dict[str, Any], arch: str) -> tuple[dict[str, Any], dict[str, str]]:
        """``params`` with every null value that the family's recipe sets filled in, and {name: source} of those."""
        _, recipe = cls.family_recipe(arch)
        out, filled = dict(params), {}
        for key, value in (recipe.values if recipe else {}).items():
            if out.get(key) is None:
                out[key] = copy.deepcopy(value)
                filled[key] = recipe.source
        return out, filled

    def trained_task(self) -> TrainedTask:
        return self

    # -- what a subclass supplies --------------------------------------------------------------------------------
    def register(self) -> None:
        """Import the modules that register this task's own types (heads, datasets, metrics)."""

    def datasets(self) -> TaskData:
        raise NotImplementedError

    def model(self) -> dict:
        raise NotImplementedError

    def metrics(self, results: dict[str, dict[str, float]]) -> dict[str, float]:
        """The spec's metrics from ``{evaluation name: evaluator output}``."""
        raise NotImplementedError

    def before_test(self, runner) -> None:
        """After training, before the evaluations (e.g. wrap the model for test-time augmentation)."""

    def per_process_batch(self, train_len: int, world: int) -> int:
        """The batch of one process (the total batch split evenly; at least 1)."""
        return max(1, int(self.p["batch_size"]) // world)

    def training_params(self) -> dict[str, Any]:
        """The parameters as training uses them: the preset's, null values filled from the family's recipe (a
        subclass may derive more, e.g. a length from epochs x samples)."""
        if not self.family_recipes:  # nothing to fill: no need to read the checkpoint's meta
            return dict(self.ctx.params)
        return self.resolve_family(dict(self.ctx.params), str(self.meta["arch"]))[0]

    # -- helpers for subclasses ----------------------------------------------------------------------------------
    @cached_property
    def p(self) -> dict[str, Any]:
        return self.training_params()

    @cached_property
    def meta(self) -> dict[str, Any]:
        """The checkpoint's meta (arch, img_size, family ...), read once."""
        from benchmark.checkpoint import load_canonical

        return load_canonical(self.ctx.ckpt).meta

    def backbone(self, **kwargs: Any) -> dict:
        """The ``MIMBackbone`` config for this run's checkpoint."""
        return dict(type="MIMBackbone", checkpoint=str(self.ctx.ckpt), drop_path_rate=float(self.p["drop_path"]),
                    allow_partial=self.ctx.allow_partial, **kwargs)

    # -- the template ---------------------------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        from mmengine.registry import init_default_scope

        import benchmark.backbone  # noqa: F401 - MIMBackbone and the layer-decay constructor in mmengine's registry

        init_default_scope(self.scope)
        self.register()
        ctx = self.ctx
        device = device_of(ctx.device)
        data = self.datasets()
        if len(data.train) == 0:
            raise DataError(f"task {ctx.spec.name}: the training split is empty ({ctx.data_root})",
                            f"check the layout; see {ctx.spec.docs}")
        plan = self.plan(len(data.train))
        model = self.model()
        first, *more = data.evaluations
        runner = build_runner(
            work_dir=ctx.work_dir / "runner", scope=self.scope, seed=ctx.seed, device=device, model=model,
            train_dataloader=dataloader(data.train, plan.per_process_batch, train=True,
                                        workers=int(self.p["workers"]), collate=data.collate),
            optim_wrapper_cfg=optim_wrapper(self.p, plan, device), param_scheduler=self.schedule(plan),
            max_iters=plan.max_iters,
            checkpoint_interval=int(self.p["checkpoint_interval"] or max(100, plan.max_iters // 10)),
            test_dataloader=self._eval_loader(first, data), test_evaluator=first.evaluator,
            report=ctx.progress, train_share=self.train_share,
            digest_of=dict(model=model, params=self.p, subset=ctx.subset, data=data.digest, version=ctx.spec.version,
                           data_fingerprint=fingerprint(ctx.spec, ctx.data_root), code=ctx.code_version),
            vis_backend=ctx.vis_backend)
        runner.logger.info(f"{ctx.spec.name}: {data.summary or f'{len(data.train)} training samples'}, "
                           f"{plan.max_iters} iterations ({plan.iters_per_epoch}/epoch), total batch "
                           f"{plan.total_batch}, lr {plan.lr:.3g}, world size {plan.world}")
        train(runner)
        self.before_test(runner)
        results = {}
        for i, ev in enumerate(data.evaluations):
            ctx.progress(self.train_share + (1 - self.train_share) * i / len(data.evaluations),
                         f"evaluating ({ev.name})")
            if i:  # the next evaluation in the same Runner: its test loop rebuilt on this dataset / evaluator
                runner._test_dataloader = self._eval_loader(ev, data)
                runner._test_evaluator = ev.evaluator
                runner._test_loop = dict(type="TestLoop")
            results[ev.name] = runner.test()
        out = self.metrics(results)
        if self.p["export_backbone"]:
            exported = export_backbone(runner, ctx.work_dir / "backbone_finetuned.pth", ctx.spec.name)
            runner.logger.info(f"fine-tuned backbone written to {exported}")
        self.extra.update(data.extra, train_size=len(data.train), iterations=plan.max_iters,
                          total_batch=plan.total_batch, lr=plan.lr)
        return out

    def _eval_loader(self, ev: Evaluation, data: TaskData) -> dict:
        return dataloader(ev.dataset, int(self.p["test_batch_size"]), train=False, workers=int(self.p["workers"]),
                          collate=data.collate)

    def plan(self, train_len: int, world: int | None = None) -> Plan:
        """World size (default: this process group's), batch, length, learning rates and warm-up of this run (the lr
        rule lives here)."""
        p, world = self.p, world or world_size()
        per_process = self.per_process_batch(train_len, world)
        total = per_process * world
        preset_batch = int(p["batch_size"])
        factor = total / preset_batch
        if total != preset_batch and not self.quiet_plan:
            log.warning("total batch %d instead of the preset's %d: lr and min_lr scaled by %.4g", total,
                        preset_batch, factor)
        per_epoch = max(1, train_len // total)  # drop_last=True, as the reference codebases
        if p["iters"]:
            max_iters = int(p["iters"])
        elif p["epochs"] is not None:
            max_iters = int(round(float(p["epochs"]) * per_epoch))
        else:
            raise BenchmarkError(f"task {self.ctx.spec.name}: neither iters nor epochs is set",
                                 "set one in the preset or pass --set iters=N")
        if max_iters <= 0:
            raise BenchmarkError(f"task {self.ctx.spec.name}: {max_iters} training iterations",
                                 "use a positive iters / epochs")
        if p["warmup_iters"] is not None:
            warm = int(p["warmup_iters"])
        elif p["warmup_epochs"] is not None:
            warm = int(round(float(p["warmup_epochs"]) * per_epoch))
        else:
            warm = 0
        return Plan(world=world, per_process_batch=per_process, total_batch=total, max_iters=max_iters,
                    iters_per_epoch=per_epoch, lr=float(p["lr"]) * factor, min_lr=float(p["min_lr"]) * factor,
                    warmup_iters=min(warm, max(max_iters - 1, 0)))

    def schedule(self, plan: Plan) -> list[dict]:
        """The lr schedule of ``plan`` (iteration-based) from the ``schedule`` parameter."""
        p, n, kind = self.p, plan.max_iters, self.p["schedule"]
        if kind == "onecycle":  # the paper's depth code (train.py): s^0.9 up, s^0.9 down, min_lr for the rest
            from tasks import lr_schedules  # noqa: F401 - registers MIMDepthOneCycleLR

            # each half: floor(epochs / 2) epochs (25 epochs: 12 up, 12 down, 1 at min_lr); an iters run: n // 2
            half = n // 2 if p["iters"] else int(float(p["epochs"]) // 2) * plan.iters_per_epoch
            return [dict(type="MIMDepthOneCycleLR", half=max(1, half or n // 2), eta_min_ratio=plan.min_lr / plan.lr,
                         power=0.9, by_epoch=False, begin=0, end=n)]
        steps = [dict(type="LinearLR", start_factor=float(p["warmup_ratio"]), by_epoch=False, begin=0,
                      end=plan.warmup_iters)] if plan.warmup_iters > 0 else []
        if kind == "step":
            milestones = [int(round(e * plan.iters_per_epoch)) for e in p["milestones_epochs"]]
            if p["iters"]:  # a short schedule keeps the same shape, e.g. decay at 170/210 and 200/210 of it
                milestones = [int(n * f) for f in p["milestones_frac"]]
            if milestones:
                steps.append(dict(type="MultiStepLR", by_epoch=False, milestones=milestones, gamma=0.1, begin=0,
                                  end=n))
        elif kind == "cosine":  # as a ratio: every layer-decay group ends at its own scaled minimum
            begin = plan.warmup_iters
            steps.append(dict(type="CosineAnnealingLR", T_max=n - begin, eta_min_ratio=plan.min_lr / plan.lr,
                              by_epoch=False, begin=begin, end=n))
        return steps


# ------------------------------------------------------------------------------------------------ the parts
def config_digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def optim_wrapper(params: dict, plan: Plan, device: str) -> dict:
    """AdamW with layer-wise lr decay, the fine-tuning recipe of BEiT / SimMIM / ViTPose; AMP on CUDA. A task that
    declares ``backbone_lr_mult`` (the trackers, Mask2Former) scales every backbone group by it; ``no_decay_rule``
    (which parameters take no weight decay, :func:`benchmark.layer_decay.layer_decay_param_groups`), ``head_no_decay``
    (names outside the trunk without weight decay), ``swin_merge_own_layer`` (Swin patch mergings count as layers)
    and ``amp_dtype`` (the CUDA autocast type) are optional too."""
    cfg: dict[str, Any] = dict(
        type="AmpOptimWrapper" if device.startswith("cuda") else "OptimWrapper",
        optimizer=dict(type="AdamW", lr=plan.lr, betas=(0.9, 0.999), weight_decay=float(params["weight_decay"])),
        constructor="MIMLayerDecayOptimWrapperConstructor",
        paramwise_cfg=dict(layer_decay_rate=float(params["layer_decay"]),
                           trunk_lr_mult=float(params.get("backbone_lr_mult", 1.0))))
    if params.get("head_no_decay"):
        cfg["paramwise_cfg"]["head_no_decay"] = list(params["head_no_decay"])
    if params.get("swin_merge_own_layer"):  # the official Swin layer counting (depth; benchmark.swin_windows)
        cfg["paramwise_cfg"]["swin_merge_own_layer"] = True
    if params.get("no_decay_rule", "1d") != "1d":
        cfg["paramwise_cfg"]["no_decay_rule"] = str(params["no_decay_rule"])
    if device.startswith("cuda"):
        import torch

        cfg["dtype"] = params.get("amp_dtype") or ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    if params["clip_grad"]:
        cfg["clip_grad"] = dict(max_norm=float(params["clip_grad"]), norm_type=2)
    return cfg


def dataloader(dataset: Any, batch_size: int, *, train: bool, workers: int = 0, collate: str | None = None) -> dict:
    """Training: mmengine's InfiniteSampler, as its iteration-based loops expect (with DefaultSampler the loop sleeps
    2 s at every epoch end: on a small dataset that is most of the run). Evaluation: each sample exactly once."""
    sampler = dict(type="InfiniteSampler", shuffle=True) if train else dict(type="DefaultSampler", shuffle=False)
    cfg = dict(batch_size=int(batch_size), num_workers=int(workers), persistent_workers=bool(workers),
               drop_last=train, dataset=dataset, sampler=sampler)
    if collate:
        cfg["collate_fn"] = dict(type=collate)
    return cfg


def build_runner(*, work_dir: Path, scope: str, seed: int, device: str, model: dict, train_dataloader: dict,
                 optim_wrapper_cfg: dict, param_scheduler: list[dict], max_iters: int, checkpoint_interval: int,
                 test_dataloader: dict, test_evaluator: Any, report: Callable[[float, str], None] | None = None,
                 train_share: float = 0.9, log_interval: int = 10, digest_of: Any = None,
                 vis_backend: str = "none"):
    """An mmengine Runner for one task run; resumes from ``work_dir`` when an identical run was interrupted."""
    from mmengine.runner import Runner

    from benchmark.vis import visualizer_cfg
    from benchmark.workdir import trust_work_dir
    from tasks.openmmlab_hooks import NonFiniteLossHook, ProgressHook

    work_dir.mkdir(parents=True, exist_ok=True)
    trust_work_dir(work_dir)  # the run's own checkpoints (mmengine pickles); user checkpoints stay weights_only
    digest = config_digest(digest_of if digest_of is not None else model)
    stamp = work_dir / "task_config.sha"
    resume = (work_dir / "last_checkpoint").exists() and stamp.exists() and stamp.read_text().strip() == digest
    if rank() == 0:
        stamp.write_text(digest + "\n")

    distributed = world_size() > 1
    env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                   dist_cfg=dict(backend="nccl" if device.startswith("cuda") else "gloo"))
    kwargs: dict[str, Any] = {}
    if distributed and not device.startswith("cuda"):
        # mmengine passes device_ids=[LOCAL_RANK] to DDP, which only GPU modules accept
        # (the Runner reads it from its cfg, not from a keyword)
        kwargs["cfg"] = dict(model_wrapper_cfg=dict(type="MMDistributedDataParallel", device_ids=None,
                                                    broadcast_buffers=False, find_unused_parameters=False))
    from mmengine.config import ConfigDict

    if isinstance(model, dict):  # a ConfigDict, as from a config file: mmdet / mmseg read test_cfg by attribute
        model = ConfigDict(model)
    runner = Runner(
        model=model, work_dir=str(work_dir), train_dataloader=train_dataloader,
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=int(max_iters), val_interval=int(max_iters) + 1),
        test_dataloader=test_dataloader, test_cfg=dict(type="TestLoop"), test_evaluator=test_evaluator,
        optim_wrapper=optim_wrapper_cfg, param_scheduler=param_scheduler,
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=log_interval, log_metric_by_epoch=False),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=max(1, int(checkpoint_interval)),
                            max_keep_ckpts=1, save_last=True),
            sampler_seed=dict(type="DistSamplerSeedHook")),
        launcher="pytorch" if distributed else "none", env_cfg=env_cfg, resume=resume,
        randomness=dict(seed=int(seed), diff_rank_seed=True), default_scope=scope,
        log_processor=dict(by_epoch=False), visualizer=visualizer_cfg(vis_backend), log_level="INFO", **kwargs)
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
    import torch

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
