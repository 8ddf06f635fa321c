"""mmengine hooks of the trained-task harness (a module of their own: importing the harness must stay light)."""

from __future__ import annotations

import math
from collections.abc import Callable

from mmengine.hooks import Hook

from benchmark.errors import TaskFailed


class NonFiniteLossHook(Hook):
    """Stops training at the first non-finite loss: a NaN run must fail loudly, never produce a number."""

    priority = "VERY_HIGH"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        loss = (outputs or {}).get("loss")
        loss = loss.detach() if hasattr(loss, "detach") else loss
        if loss is not None and not math.isfinite(float(loss)):
            raise TaskFailed(f"the training loss became {float(loss)} at iteration {runner.iter + 1}",
                             "lower the learning rate (e.g. --set lr=...) or check the data and the checkpoint")


class ProgressHook(Hook):
    """Reports training progress to the benchmark runner, from rank 0 only."""

    priority = "LOW"

    def __init__(self, report: Callable[[float, str], None], train_share: float, every: int = 5):
        self.report, self.train_share, self.every = report, train_share, every

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        it, total = runner.iter + 1, runner.max_iters
        if runner.rank == 0 and (it % self.every == 0 or it == total):
            loss = (outputs or {}).get("loss")
            msg = f"train {it}/{total}" + (f" loss {float(loss):.4g}" if loss is not None else "")
            self.report(self.train_share * it / max(total, 1), msg)
