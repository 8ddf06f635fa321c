"""The depth tasks' ``onecycle`` lr (tasks/lr_schedules.py) against the paper's depth code, SwinTransformer/
MIM-Depth-Estimation train.py, re-typed below as its loop runs: every step, per layer-decay group, resumed runs."""

from __future__ import annotations

import pytest
import torch
from mmengine.registry import PARAM_SCHEDULERS

from benchmark.registry import Metric, TaskSpec
from tasks import lr_schedules  # noqa: F401 - registers MIMDepthOneCycleLR
from tasks import openmmlab as mm
from tasks.base import RunContext

MAX_LR, MIN_LR = 5e-4, 3e-5
SCALES = (0.9 ** 28, 0.9 ** 13, 0.9, 1.0)  # layer-decay groups: patch embed ... head


def official_lrs(iterations: int, epochs: int, max_lr: float, min_lr: float, scales) -> list[list[float]]:
    """train.py's loop (main() + train()): per optimizer step, each group's lr = current_lr * lr_scale."""
    global_step = 0
    half_epoch = epochs // 2
    out = []
    for _epoch in range(1, epochs + 1):
        for _batch in range(iterations):
            global_step += 1
            if global_step < iterations * half_epoch:
                current_lr = (max_lr - min_lr) * (global_step / iterations / half_epoch) ** 0.9 + min_lr
            else:
                current_lr = max(min_lr, (min_lr - max_lr) * (global_step / iterations / half_epoch - 1) ** 0.9
                                 + max_lr)
            out.append([current_lr * s for s in scales])
    return out


def _optimizer(max_lr: float = MAX_LR, scales=SCALES) -> torch.optim.Optimizer:
    """Groups as a layer-decay constructor builds them: lr = max_lr * lr_scale."""
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": max_lr * s, "lr_scale": s, "weight_decay": 0.0}
              for s in scales]
    return torch.optim.AdamW(groups, lr=max_lr)


def _suite_config(iterations: int, epochs: int) -> tuple[dict, int]:
    """The scheduler config the harness builds for the depth preset's values (``schedule: onecycle``)."""

    class _Task(mm.TrainedTask):
        pass

    spec = TaskSpec(name="t", suite="demo", description="", dataset={}, metrics=(Metric("m", "up", True),),
                    presets={"x": dict(batch_size=24, lr=MAX_LR, min_lr=MIN_LR, epochs=epochs, schedule="onecycle")})
    ctx = RunContext(spec=spec, ckpt="c.pth", ckpt_sha256="", data_root=".", preset="x",
                     params=_Task.resolve_params(spec, "x"), seed=0, subset=0, work_dir=".", cache_dir=".")
    task = _Task(ctx)
    plan = task.plan(24 * iterations + 5)  # drop_last: `iterations` batches of 24 per epoch
    assert plan.iters_per_epoch == iterations and plan.max_iters == iterations * epochs
    (cfg,) = task.schedule(plan)
    return cfg, plan.max_iters


def _run(opt, sched, steps: int) -> list[list[float]]:
    """The lr of each training iteration (mmengine: optimizer step, then the scheduler's)."""
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return seen


def _assert_same(got: list[list[float]], want: list[list[float]]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(w, rel=1e-12, abs=0), f"iteration {i}"


@pytest.mark.parametrize("iterations,epochs", [(7, 25), (3, 4), (5, 5), (1, 2)])
def test_every_iteration_and_group_matches_the_official_loop(iterations, epochs):
    cfg, n = _suite_config(iterations, epochs)
    assert cfg["type"] == "MIMDepthOneCycleLR" and cfg["half"] == iterations * (epochs // 2)
    opt = _optimizer()
    sched = PARAM_SCHEDULERS.build(cfg, default_args=dict(optimizer=opt))
    _assert_same(_run(opt, sched, n), official_lrs(iterations, epochs, MAX_LR, MIN_LR, SCALES))


def test_shape_25_epochs_rise_fall_and_flat_tail():
    iterations, epochs = 7, 25
    cfg, n = _suite_config(iterations, epochs)
    opt = _optimizer()
    lrs = [row[-1] for row in _run(opt, PARAM_SCHEDULERS.build(cfg, default_args=dict(optimizer=opt)), n)]
    half = 12 * iterations
    assert lrs[0] == pytest.approx(MIN_LR + (MAX_LR - MIN_LR) * (1 / half) ** 0.9)  # step 1, not min_lr itself
    assert all(a < b for a, b in zip(lrs[:half], lrs[1:half]))  # rising, concave (s^0.9)
    assert lrs[half - 1] == pytest.approx(MAX_LR)  # the peak at step H (iteration H - 1)
    assert all(a > b for a, b in zip(lrs[half - 1:2 * half - 1], lrs[half:2 * half - 1]))
    assert lrs[2 * half - 1:] == pytest.approx([MIN_LR] * (n - 2 * half + 1))  # the last epoch (and step 2H) flat
    mid = lrs[half // 2 - 1]  # s = 1/2: above the linear ramp's midpoint (the shape the suite used before)
    assert mid == pytest.approx(MIN_LR + (MAX_LR - MIN_LR) * 0.5 ** 0.9) and mid > (MIN_LR + MAX_LR) / 2
    down = lrs[half + half // 2 - 1]  # s = 1/2 of the falling half: lr - (lr - min_lr) * s^0.9
    assert down == pytest.approx(MAX_LR - (MAX_LR - MIN_LR) * 0.5 ** 0.9)


def test_each_group_keeps_its_layer_decay_scale_min_lr_included():
    iterations, epochs = 4, 6
    cfg, n = _suite_config(iterations, epochs)
    opt = _optimizer()
    rows = _run(opt, PARAM_SCHEDULERS.build(cfg, default_args=dict(optimizer=opt)), n)
    for row in rows:
        assert [lr / row[-1] for lr in row] == pytest.approx(list(SCALES), rel=1e-12)
    assert rows[-1] == pytest.approx([MIN_LR * s for s in SCALES], rel=1e-12)  # the scaled min_lr, as lr_scale does


@pytest.mark.parametrize("stop", [1, 40, 83, 84, 85, 170, 174])
def test_resume_from_a_mid_run_state_continues_exactly(stop):
    iterations, epochs = 7, 25
    cfg, n = _suite_config(iterations, epochs)
    opt = _optimizer()
    sched = PARAM_SCHEDULERS.build(cfg, default_args=dict(optimizer=opt))
    first = _run(opt, sched, stop)
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    # a new process: the Runner builds optimizer and scheduler afresh, then loads both states (mmengine's order)
    opt2 = _optimizer()
    sched2 = PARAM_SCHEDULERS.build(cfg, default_args=dict(optimizer=opt2))
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    _assert_same(first + _run(opt2, sched2, n - stop), official_lrs(iterations, epochs, MAX_LR, MIN_LR, SCALES))


def test_factor_at_the_turns_and_bad_arguments_are_refused():
    from tasks.lr_schedules import MIMDepthOneCycleLR, mim_depth_onecycle_factor

    assert [mim_depth_onecycle_factor(k, 5, 0.1) for k in (5, 10, 11)] == [1.0, 0.1, 0.1]
    with pytest.raises(ValueError, match="half"):
        MIMDepthOneCycleLR(_optimizer(), half=0)
    with pytest.raises(ValueError, match="by_epoch"):
        MIMDepthOneCycleLR(_optimizer(), half=3, by_epoch=True)


def test_mmseg_scope_finds_it():
    """The depth tasks build their Runner in the mmseg scope: its registry falls back to mmengine's."""
    from mmengine.registry import DefaultScope
    from mmseg.registry import PARAM_SCHEDULERS as MMSEG_SCHEDULERS

    with DefaultScope.overwrite_default_scope("mmseg"):
        sched = MMSEG_SCHEDULERS.build(dict(type="MIMDepthOneCycleLR", half=4, eta_min_ratio=0.06, by_epoch=False),
                                       default_args=dict(optimizer=_optimizer()))
    assert type(sched).__name__ == "MIMDepthOneCycleLR"
