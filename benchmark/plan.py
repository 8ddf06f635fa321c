"""``benchmark plan``: what a run of a preset will train for a given checkpoint, where each value comes from, and what
it costs — without training.

Per task:

* the resolved recipe: every parameter after the preset, ``--set`` and the backbone family's official recipe
  (``TrainedTask.family_recipes``), each with its origin; then the numbers the harness derives from them for the
  real dataset size and ``--nproc`` (total / per-process batch, iterations, epochs, warm-up, the lr actually used);
* compute: FLOPs of one training sample (forward + backward + loss; a batch of 2, halved) and of one evaluation
  item, measured with
  ``torch.utils.flop_counter.FlopCounterMode`` on the real model at the preset's input size, on one sample of the
  task's own pipeline (mini data generated at full resolution unless ``--data-root`` is given); totals over the
  run for the real dataset size (``dataset.sizes`` of the spec, or the given data); GPU-hours on a named GPU from its
  dense bf16 peak at a stated utilisation;
* ``--config-out DIR``: the mmengine config the task would run (model, optimizer wrapper, lr schedule, loops,
  loaders with their pipelines as the built transforms print themselves), one ``DIR/<task>.py`` per task.

FLOPs count multiply-adds as 2 (torch's convention); operations torch's counter does not know (e.g. mmcv's
RoIAlign / deformable attention kernels, the interpolations) are not counted, so the figures are lower bounds.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BenchmarkError

# Dense (no sparsity) bf16 tensor-core peak per GPU, TFLOP/s, from the vendors' datasheets; V100 has no bf16: its
# fp16 peak (AMP falls back to fp16 there).
GPU_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "V100": 125.0, "L40S": 362.0, "4090": 165.0}
ASSUMED_UTILISATION = 0.35  # a typical sustained share of peak for fine-tuning with data loading; an assumption
MEASURED_UTILISATION = Path(__file__).resolve().parent.parent / "results" / "perf" / "plan_utilisation_cuda.json"
CHECKPOINT_BYTES_PER_PARAM = 12  # fp32 weights + AdamW's two moments, as mmengine's checkpoints store them
KEPT_CHECKPOINTS = 2  # the latest interval checkpoint and the last one (max_keep_ckpts=1, save_last)

log = logging.getLogger("benchmark")


@dataclass
class Value:
    value: Any
    origin: str  # "--set", "preset <name>", "family <fam>: <source>", "default", "derived"


@dataclass
class TaskPlan:
    task: str
    preset: str
    family: str
    trained: bool
    recipe: dict[str, Value] = field(default_factory=dict)
    derived: dict[str, Value] = field(default_factory=dict)
    compute: dict[str, Any] = field(default_factory=dict)
    config_file: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return dict(task=self.task, preset=self.preset, family=self.family, trained=self.trained,
                    recipe={k: dict(value=v.value, origin=v.origin) for k, v in self.recipe.items()},
                    derived={k: dict(value=v.value, origin=v.origin) for k, v in self.derived.items()},
                    compute=self.compute, config_file=self.config_file, notes=self.notes)


def gpu_rate(gpu: str) -> tuple[float, float, str]:
    """(peak FLOP/s, utilisation, where the utilisation comes from) for a GPU name; BenchmarkError if unknown."""
    key = next((k for k in GPU_PEAK_TFLOPS if k.lower() == gpu.strip().lower()), None)
    if key is None:
        raise BenchmarkError(f"unknown GPU '{gpu}'", f"use one of {', '.join(GPU_PEAK_TFLOPS)}")
    util, where = ASSUMED_UTILISATION, f"assumed {ASSUMED_UTILISATION:.0%} of peak (not measured on a {key})"
    if MEASURED_UTILISATION.exists():
        measured = json.loads(MEASURED_UTILISATION.read_text()).get(key)
        if measured:
            util = float(measured["utilisation"])
            where = f"measured {util:.0%} ({measured['where']})"
    return GPU_PEAK_TFLOPS[key] * 1e12, util, where


# ------------------------------------------------------------------------------------------------------ the recipe
def origins(spec, preset: str, overrides: dict, params: dict, filled: dict[str, str]) -> dict[str, Value]:
    preset_values = spec.preset(preset)
    source = (spec.raw.get("sources") or {}).get(preset)
    out = {}
    for key in sorted(params):
        if key in overrides:
            where = "--set"
        elif key in filled:
            where = f"family recipe: {filled[key]}"
        elif key in preset_values:
            where = f"preset {preset}" + (f" ({source})" if source else "")
        else:
            where = "default"
        out[key] = Value(params[key], where)
    return out


@dataclass
class Inspected:
    """A task set up as ``benchmark run`` would set it up, stopped before training."""

    spec: Any
    params: dict
    family: str
    arch: str
    trained: Any  # the TrainedTask, or None for a probe
    data: Any = None
    run: Any = None  # tasks.openmmlab.Plan for the real dataset size
    real_data: bool = False
    sizes: dict = field(default_factory=dict)
    train_len: int = 0


def inspect(spec, ckpt: Path, preset: str, overrides: dict, *, nproc: int, data_root: Path | None,
            work_dir: Path) -> Inspected:
    from benchmark.checkpoint import file_sha256, load_canonical
    from benchmark.families import family
    from benchmark.registry import load_adapter
    from tasks.base import RunContext

    cls = load_adapter(spec)
    params = cls.resolve_params(spec, preset, overrides)
    arch = str(load_canonical(ckpt).meta["arch"])
    root = data_root / spec.dataset.get("subdir", "") if data_root else mini_data(spec, cls, work_dir)
    cls.check_data(spec, root)
    ctx = RunContext(spec=spec, ckpt=Path(ckpt), ckpt_sha256=file_sha256(ckpt), data_root=root, preset=preset,
                     params=params, seed=0, subset=0, work_dir=work_dir / "run" / spec.name,
                     cache_dir=work_dir / "cache")
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    out = Inspected(spec=spec, params=params, family=family(arch), arch=arch, trained=cls(ctx).trained_task())
    if out.trained is None:
        return out
    out.trained.quiet_plan = True
    from mmengine.registry import init_default_scope

    import benchmark.backbone  # noqa: F401 - MIMBackbone and the layer-decay constructor in mmengine's registry

    init_default_scope(out.trained.scope)  # as TrainedTask.run: the task's registry before its datasets
    out.trained.register()
    out.data = out.trained.datasets()
    out.sizes = spec.dataset.get("sizes") or {}
    out.real_data = data_root is not None
    out.train_len = int((len(out.data.train) if out.real_data else out.sizes.get("train")) or len(out.data.train))
    out.run = out.trained.plan(out.train_len, world=nproc)
    return out


def plan_task(spec, ckpt: Path, preset: str, overrides: dict, *, nproc: int, data_root: Path | None,
              work_dir: Path, flops: bool, config_out: Path | None) -> TaskPlan:
    it = inspect(spec, ckpt, preset, overrides, nproc=nproc, data_root=data_root, work_dir=work_dir)
    trained, params = it.trained, it.params
    out = TaskPlan(task=spec.name, preset=preset, family=it.family, trained=trained is not None)
    if trained is None:
        out.recipe = origins(spec, preset, overrides, params, {})
        out.notes.append("frozen-feature probe: one backbone forward per image, no training FLOPs measured")
        return out
    resolved, filled = trained.resolve_family(dict(params), it.arch)
    p = trained.p  # the training parameters (family values filled, subclass-derived values too)
    out.recipe = origins(spec, preset, overrides, {k: p[k] for k in p if k in params or k in resolved}, filled)
    for key in sorted(set(p) - set(out.recipe)):
        out.recipe[key] = Value(p[key], "derived")
    if not it.real_data and not it.sizes.get("train"):
        out.notes.append("the spec states no real training-set size: epochs below are for the mini data")
    run, unit = it.run, it.sizes.get("unit", "samples")
    out.derived = {
        "train_size": Value(it.train_len, f"{'the given data' if it.real_data else 'spec dataset.sizes'} ({unit})"),
        "processes": Value(nproc, "--nproc"),
        "total_batch": Value(run.total_batch, "derived"),
        "per_process_batch": Value(run.per_process_batch, "derived"),
        "lr_used": Value(run.lr, "derived: lr x total_batch / batch_size"),
        "iterations": Value(run.max_iters, "derived"),
        "epochs": Value(round(run.max_iters * run.total_batch / it.train_len, 2), "derived"),
        "warmup_iters": Value(run.warmup_iters, "derived"),
    }
    model_cfg = trained.model()
    from tasks.openmmlab import optim_wrapper

    optim = optim_wrapper(p, run, "cpu")
    optim["type"] = "AmpOptimWrapper (bf16; float16 where amp_dtype says so) on CUDA, else OptimWrapper"
    if config_out is not None:
        out.config_file = str(dump_config(config_out, spec.name, model_cfg, optim, trained.schedule(run), run,
                                          it.data, p))
    model = build_model(trained, model_cfg)  # always: a broken recipe fails here, in seconds
    out.derived["parameters_M"] = Value(round(sum(t.numel() for t in model.parameters()) / 1e6, 2), "derived")
    if flops:
        out.compute = measure(model, it.data, run, it.sizes, it.real_data)
    return out


def mini_data(spec, cls, work_dir: Path) -> Path:
    """Mini data in the real layout at the real image sizes, generated once under the plan's work dir."""
    root = work_dir / "mini_full" / spec.dataset.get("mini_subdir", spec.dataset.get("subdir", spec.name))
    marker = root / ".complete"
    if not marker.exists():
        root.mkdir(parents=True, exist_ok=True)
        cls.make_mini_full_size(spec, root, seed=0)
        marker.write_text("ok\n")
    return root


def dump_config(folder: Path, task: str, model: dict, optim: dict, schedule: list, run, data, p: dict) -> Path:
    from mmengine.config import Config

    def loader(dataset, batch: int, train: bool) -> dict:
        pipeline = getattr(dataset, "pipeline", None)
        transforms = [repr(t) for t in getattr(pipeline, "transforms", [])]
        return dict(batch_size=int(batch), dataset=dict(type=type(dataset).__name__, size_of_given_data=len(dataset),
                                                        pipeline=transforms),
                    sampler=dict(type="InfiniteSampler" if train else "DefaultSampler", shuffle=train))

    first = data.evaluations[0]
    cfg = dict(model=_plain(model), optim_wrapper=_plain(optim), param_scheduler=_plain(schedule),
               train_cfg=dict(type="IterBasedTrainLoop", max_iters=run.max_iters),
               train_dataloader=loader(data.train, run.per_process_batch, True),
               test_dataloader=loader(first.dataset, int(p.get("test_batch_size", 1)), False)
               if not isinstance(first.dataset, dict) else first.dataset,
               test_evaluator=_plain(first.evaluator),
               recipe={k: _plain(v) for k, v in sorted(p.items())})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}.py"
    Config(cfg).dump(str(path))
    return path


def _plain(obj: Any) -> Any:
    """Config.dump accepts plain values only: tuples become lists, objects their repr."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


# ----------------------------------------------------------------------------------------------------- compute
def build_model(trained, model_cfg: dict):
    """The task's model as the Runner builds it (the checkpoint loaded into the backbone)."""
    import torch
    from mmengine.registry import MODELS, init_default_scope

    import benchmark.backbone  # noqa: F401 - MIMBackbone in mmengine's registry

    init_default_scope(trained.scope)
    trained.register()
    from mmengine.config import ConfigDict

    torch.manual_seed(0)
    return MODELS.build(ConfigDict(model_cfg))  # mmdet / mmseg read nested configs by attribute


def measure(model, data, run, sizes: dict, real: bool) -> dict[str, Any]:
    """FLOPs of one training sample and one evaluation item on the real model; totals for the real run."""
    import torch
    from mmengine.runner import Runner
    from torch.utils.flop_counter import FlopCounterMode

    from tasks.openmmlab import dataloader

    n_params = sum(t.numel() for t in model.parameters())
    # a batch of 2, divided: heads with BatchNorm after global pooling (UperNet's PPM) refuse a batch of 1
    train_loader = Runner.build_dataloader(dataloader(data.train, 2, train=True, collate=data.collate), seed=0)
    batch = next(iter(train_loader))
    model.train()
    with FlopCounterMode(display=False) as counter:
        inputs = model.data_preprocessor(batch, True)
        losses = model(**inputs, mode="loss") if isinstance(inputs, dict) else model(*inputs, mode="loss")
        loss, _ = model.parse_losses(losses)
        loss.backward()
    train_flops = counter.get_total_flops() / 2
    ev = data.evaluations[0]
    test_loader = Runner.build_dataloader(
        dataloader(ev.dataset, 1, train=False, collate=data.collate), seed=0)
    test_batch = next(iter(test_loader))
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.test_step(test_batch)
    eval_flops = counter.get_total_flops()
    per_eval_unit, eval_unit = eval_flops, sizes.get("test_unit", "images")  # tracking: whole sequences
    test_len = sizes.get("test") if not real else None
    train_total = train_flops * run.total_batch * run.max_iters
    eval_total = per_eval_unit * test_len if test_len else None
    return dict(params_M=round(n_params / 1e6, 2), train_gflops_per_sample=round(train_flops / 1e9, 2),
                eval_gflops_per_item=round(per_eval_unit / 1e9, 2), eval_unit=eval_unit,
                eval_items=test_len, train_pflops=round(train_total / 1e15, 3),
                eval_pflops=round(eval_total / 1e15, 3) if eval_total is not None else None,
                checkpoint_gb=round(n_params * CHECKPOINT_BYTES_PER_PARAM * KEPT_CHECKPOINTS / 1e9, 2),
                dataset_gb=sizes.get("disk_gb"))


def gpu_hours(compute: dict, nproc: int, gpu: str) -> dict[str, Any]:
    peak, util, where = gpu_rate(gpu)
    total = (compute.get("train_pflops") or 0) + (compute.get("eval_pflops") or 0)
    hours = total * 1e15 / (peak * util) / 3600
    return dict(gpu=gpu, gpu_hours=round(hours, 1), wall_hours=round(hours / max(1, nproc), 1), utilisation=where)


# ------------------------------------------------------------------------------------------------------- output
def plan(specs: list, ckpt: Path, preset: str, overrides: dict, *, nproc: int = 1, gpu: str = "H100",
         data_root: Path | None = None, flops: bool = True, config_out: Path | None = None,
         work_dir: Path | None = None) -> list[TaskPlan]:
    gpu_rate(gpu)  # an unknown GPU is refused before anything is built
    if nproc < 1:
        raise BenchmarkError(f"--nproc must be >= 1, got {nproc}", "e.g. --nproc 8 for one 8-GPU node")
    if not Path(ckpt).is_file():
        raise BenchmarkError(f"checkpoint {ckpt} does not exist", "give a canonical checkpoint (`benchmark convert`)")
    for spec in specs:  # a preset a task lacks, or a bad --set, before any model is built
        from benchmark.registry import resolve_params

        resolve_params(spec, preset, overrides)
    owned = work_dir is None
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="benchmark-plan-"))
    logging.getLogger("mmengine").setLevel(logging.WARNING)
    plans = []
    try:
        for spec in specs:
            tp = plan_task(spec, ckpt, preset, overrides, nproc=nproc, data_root=data_root, work_dir=work,
                           flops=flops, config_out=config_out)
            if tp.compute:
                tp.compute.update(gpu_hours(tp.compute, nproc, gpu))
            plans.append(tp)
    finally:
        if owned:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return plans


def render(plans: list[TaskPlan]) -> str:
    lines = []
    for tp in plans:
        lines.append(f"== {tp.task} (preset {tp.preset}, {tp.family} backbone)")
        width = max((len(k) for k in [*tp.recipe, *tp.derived]), default=10)
        for k, v in tp.recipe.items():
            lines.append(f"  {k:<{width}}  {_show(v.value):<24} {v.origin}")
        if tp.derived:
            lines.append("  -- derived for the real run")
            for k, v in tp.derived.items():
                lines.append(f"  {k:<{width}}  {_show(v.value):<24} {v.origin}")
        if tp.compute:
            c = tp.compute
            lines.append(f"  -- compute: {c['params_M']} M parameters; {c['train_gflops_per_sample']} GFLOPs per "
                         f"training sample, {c['eval_gflops_per_item']} GFLOPs per evaluation item ({c['eval_unit']})")
            ev = f" + {c['eval_pflops']} evaluation" if c.get("eval_pflops") is not None else ""
            lines.append(f"     {c['train_pflops']} PFLOPs training{ev}; {c['gpu_hours']} GPU-hours on "
                         f"{c['gpu']} ({c['wall_hours']} h wall), utilisation {c['utilisation']}")
            disk = f"; dataset {c['dataset_gb']} GB" if c.get("dataset_gb") else ""
            lines.append(f"     work-dir disk: checkpoints {c['checkpoint_gb']} GB{disk}")
        if tp.config_file:
            lines.append(f"  config: {tp.config_file}")
        lines += [f"  note: {n}" for n in tp.notes]
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "null"
    return str(value).replace(" ", "")


def to_json(plans: list[TaskPlan]) -> str:
    return json.dumps([tp.as_json() for tp in plans], indent=1, default=str)
