"""Learning-rate schedules of official recipes that mmengine does not ship (importing this module registers them).

``MIMDepthOneCycleLR`` (the ``onecycle`` schedule of the depth tasks): the one-cycle curve of the paper's depth code,
SwinTransformer/MIM-Depth-Estimation train.py (``train()``). Its loop counts optimizer steps from 1
(``global_step += 1`` before the step) and sets, with H = iterations per epoch × ⌊epochs / 2⌋ and s = step / H::

    step <  H:  lr(step) = min_lr + (lr − min_lr) · s^0.9                 (rises over the first ⌊epochs/2⌋ epochs)
    step >= H:  lr(step) = max(min_lr, lr − (lr − min_lr) · (s − 1)^0.9)  (falls over the next ⌊epochs/2⌋, then
                                                                           flat at min_lr: 25 epochs = 12 + 12 + 1)

and then ``param_group['lr'] = lr(step) * param_group['lr_scale']`` for every group of its layer-decay optimizer: the
whole curve, ``min_lr`` included, is scaled by each group's layer-decay scale. Here each group's base value is its
``initial_lr`` (the layer-decay constructor's ``lr × lr_scale``), multiplied by the curve as a fraction of the peak,
``eta_min_ratio + (1 − eta_min_ratio) · s^0.9`` etc. with ``eta_min_ratio = min_lr / lr`` — the same numbers.

mmengine applies a scheduler's value of ``last_step`` k (0 at construction) to training iteration k (0-based); the
official code's step k + 1 drives that iteration. The value is a closed form of the step (not chained on the
previous lr), so a run resumed from a checkpoint's scheduler state continues on exactly the same curve.
"""

from __future__ import annotations

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler
from mmengine.registry import PARAM_SCHEDULERS

__all__ = ["MIMDepthOneCycleLR", "mim_depth_onecycle_factor"]


def mim_depth_onecycle_factor(step: int, half: int, eta_min_ratio: float, power: float = 0.9) -> float:
    """The official one-cycle lr at optimizer step ``step`` (counted from 1, as train.py's ``global_step``) as a
    fraction of the peak lr; ``half``: iterations of each half (iterations per epoch × ⌊epochs / 2⌋)."""
    s = step / half
    if step < half:
        return eta_min_ratio + (1.0 - eta_min_ratio) * s ** power
    return max(eta_min_ratio, 1.0 - (1.0 - eta_min_ratio) * (s - 1.0) ** power)


@PARAM_SCHEDULERS.register_module()
class MIMDepthOneCycleLR(LRSchedulerMixin, _ParamScheduler):
    """The paper's depth one-cycle lr (module docstring), iteration-based.

    Args:
        optimizer: the (wrapped) optimizer; each group's ``initial_lr`` (its lr at construction) is its peak.
        half: iterations of the rising half, and of the falling one (official: iterations per epoch × ⌊epochs/2⌋).
        eta_min_ratio: ``min_lr / lr``, the start and the end of the curve as a fraction of each group's peak.
        power: the exponent of both halves (official 0.9).
        begin, end, last_step, by_epoch, verbose: as mmengine's schedulers (``by_epoch`` must stay False).
    """

    def __init__(self, optimizer, half: int, eta_min_ratio: float = 0.0, power: float = 0.9, begin: int = 0,
                 end: int = INF, last_step: int = -1, by_epoch: bool = False, verbose: bool = False):
        if int(half) < 1:
            raise ValueError(f"half must be at least 1 iteration, got {half}")
        if by_epoch:
            raise ValueError("MIMDepthOneCycleLR is iteration-based: use by_epoch=False")
        self.half = int(half)
        self.eta_min_ratio = float(eta_min_ratio)
        self.power = float(power)
        super().__init__(optimizer, begin=begin, end=end, last_step=last_step, by_epoch=by_epoch, verbose=verbose)

    def _get_value(self) -> list[float]:
        factor = mim_depth_onecycle_factor(self.last_step + 1, self.half, self.eta_min_ratio, self.power)
        return [base * factor for base in self.base_values]
