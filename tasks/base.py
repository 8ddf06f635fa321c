"""The adapter contract: one class per task turns (spec, checkpoint, data, preset, seed) into metrics.

An adapter module holds the task's whole story; its YAML spec (tasks/specs/<name>.yaml) holds the declarative
part (dataset layout, metrics with direction, presets). The runner calls, in a fresh subprocess:

    adapter_cls.check_data(spec, root)            # raise DataError naming what is missing
    adapter_cls.make_mini(spec, out_dir, seed)    # only for --data mini: write small data in the real layout
    adapter_cls(ctx).run() -> {metric: value}     # every metric the spec declares, as plain floats
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from benchmark import checkpoint
from benchmark.errors import DataError, TaskFailed
from benchmark.registry import TaskSpec


@dataclass
class RunContext:
    spec: TaskSpec
    ckpt: Path
    ckpt_sha256: str
    data_root: Path
    preset: str
    params: dict[str, Any]
    seed: int
    subset: int  # 0 = the full split
    work_dir: Path
    cache_dir: Path  # shared between runs: feature caches keyed by checkpoint / data / transform
    device: str = "cpu"
    allow_partial: bool = False
    progress: Callable[[float, str], None] = field(default=lambda frac, msg="": None)

    def load_backbone(self, **overrides: Any):
        return checkpoint.load_backbone(self.ckpt, allow_partial=self.allow_partial, **overrides)


class TaskAdapter:
    """Base class: subclasses implement ``run`` and, for the demo/tests, ``make_mini``."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    @classmethod
    def check_data(cls, spec: TaskSpec, root: Path) -> None:
        """Default check: every path of the spec's ``dataset.layout`` exists under ``root``."""
        missing = [p for p in spec.dataset.get("layout", []) if not (root / p).exists()]
        if not root.is_dir() or missing:
            what = f"{root} does not exist" if not root.is_dir() else f"{root} lacks {', '.join(missing)}"
            raise DataError(f"task {spec.name}: {what} (expected layout: {', '.join(spec.dataset.get('layout', []))})",
                            f"point --data-root at the folder holding '{spec.dataset.get('subdir', '')}', "
                            f"or use --data mini; see {spec.docs}")

    @classmethod
    def make_mini(cls, spec: TaskSpec, out_dir: Path, seed: int) -> None:
        raise DataError(f"task {spec.name} has no mini data generator", "point --data-root at the real dataset")

    def run(self) -> dict[str, float]:
        raise NotImplementedError

    def finish(self, metrics: dict[str, float]) -> dict[str, float]:
        """Check the adapter returned exactly the declared metrics as finite floats."""
        declared = {m.name for m in self.ctx.spec.metrics}
        if set(metrics) != declared:
            raise TaskFailed(f"task {self.ctx.spec.name} returned metrics {sorted(metrics)}, "
                             f"spec declares {sorted(declared)}", "fix the adapter or its spec")
        out = {k: float(v) for k, v in metrics.items()}
        bad = [k for k, v in out.items() if not math.isfinite(v)]
        if bad:
            raise TaskFailed(f"task {self.ctx.spec.name} produced non-finite {', '.join(bad)}",
                             "check the training log in the work dir (NaN loss?)")
        return out
