"""The adapter contract: one class per task turns (spec, checkpoint, data, parameters, seed) into metrics.

An adapter module holds the task's whole story; its YAML spec (tasks/specs/<name>.yaml) holds the declarative
part (dataset layout, metrics with direction, presets). The worker (``benchmark/worker.py``) uses exactly this,
in a fresh process per run:

    cls = registry.load_adapter(spec)                     # the class named by the spec's ``adapter``
    cls.check_data(spec, root)                            # raise DataError naming what is missing
    cls.make_mini(spec, out_dir, seed)                    # only for --data mini: small data in the real layout
    params = cls.resolve_params(spec, preset, overrides)  # declared defaults < preset < --set, type-checked
    adapter = cls(RunContext(..., params=params, progress=report))
    metrics = adapter.finish(adapter.run())               # every declared metric, as finite floats
    adapter.extra                                         # JSON-able run facts stored beside the metrics

* ``params``: every parameter the adapter reads, declared once with its default and type (``Param``). Presets
  override defaults; ``benchmark run --set KEY=VALUE`` may override any declared parameter. An adapter whose
  parameters depend on the preset (e.g. the semantic tasks' ``protocol``) overrides ``declared_params``.
* ``run()`` returns ``{metric: value}``; it may return more keys than the spec declares only if it removes them
  itself — ``finish`` rejects a missing or an undeclared metric and any non-finite value.
* progress: ``ctx.progress(fraction, message)`` with a fraction in [0, 1]; only rank 0's reports are shown.
* ``extra``: a dict of facts about the run (sizes, iterations, file paths of predictions) the adapter fills.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from benchmark.errors import BenchmarkError, DataError, TaskFailed
from benchmark.registry import TaskSpec

REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()


@dataclass(frozen=True)
class Param:
    """One declared parameter: its default (``REQUIRED``: every preset must set it), type and meaning.

    ``type`` is one of int, float, bool, str, list; ``nullable`` lets ``null`` through (meaning "the adapter's
    own choice", e.g. the backbone family's layer decay); ``choices`` restricts the value (e.g. a str's names).
    """

    default: Any = REQUIRED
    type: type = float
    help: str = ""
    nullable: bool = False
    choices: tuple = ()

    def check(self, name: str, value: Any, where: str) -> Any:
        """``value`` as this parameter's type, or a BenchmarkError naming ``where`` it came from."""
        if value is None and self.nullable:
            return None
        ok, out = _coerce(self.type, value)
        if ok and self.choices and out not in self.choices:
            ok = False
        if not ok:
            shown = [str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices]
            want = f"one of {', '.join(shown)}" if self.choices else \
                f"a{'n' if self.type is int else ''} {self.type.__name__}"
            want += " or null" if self.nullable else ""
            raise BenchmarkError(f"{where}: {name}={value!r} is not {want}",
                                 f"{name}: {self.help}" if self.help else f"give {name} as {want}")
        return out


def _coerce(kind: type, value: Any) -> tuple[bool, Any]:
    if kind is bool:
        return isinstance(value, bool), value
    if isinstance(value, bool):  # True is an int to Python, never to a user
        return False, value
    if kind is int:
        return isinstance(value, int), value
    if kind is float:
        if isinstance(value, (int, float)):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return math.isfinite(float(value)), float(value)
            except ValueError:
                return False, value
        return False, value
    if kind is list:
        return isinstance(value, (list, tuple)), list(value) if isinstance(value, (list, tuple)) else value
    return isinstance(value, kind), value


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
    code_version: str = ""  # the suite's git commit: an interrupted run resumes only under the same code
    vis_backend: str = "none"  # tensorboard: trained tasks write event files (benchmark/vis.py)
    progress: Callable[[float, str], None] = field(default=lambda frac, msg="": None)

    def load_backbone(self, **overrides: Any):
        from benchmark import checkpoint  # torch: imported only when a run needs it

        return checkpoint.load_backbone(self.ckpt, allow_partial=self.allow_partial, **overrides)


class TaskAdapter:
    """Base class: subclasses declare ``params`` and implement ``run`` and, for the demo/tests, ``make_mini``."""

    # Read by the runner, not the adapter: how many seeds (0..N-1) a run without --seed uses.
    params: ClassVar[dict[str, Param]] = {
        "seeds": Param(1, int, "how many seeds (0..N-1) a run without --seed uses"),
    }

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.extra: dict[str, Any] = {}

    # -- parameters ------------------------------------------------------------------------------------------
    @classmethod
    def declared_params(cls, preset: dict[str, Any]) -> dict[str, Param]:
        """The parameters a run with this preset reads (the preset's values are given for adapters that switch)."""
        return cls.params

    @classmethod
    def resolve_params(cls, spec: TaskSpec, preset: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Declared defaults, then the preset, then ``--set`` overrides; unknown keys and wrong types refused."""
        values = spec.preset(preset)
        for key in values:
            if key not in cls.declared_params(values):
                raise BenchmarkError(f"task {spec.name}: preset '{preset}' sets '{key}', which {cls.__name__} does "
                                     f"not declare", f"fix the spec {spec.source_file}; declared: "
                                                     f"{', '.join(sorted(cls.declared_params(values)))}")
        declared = cls.declared_params({**values, **(overrides or {})})
        valid = ", ".join(sorted(declared))
        for key in values:
            if key not in declared:  # an override switched what the adapter reads (e.g. --set protocol=...)
                raise BenchmarkError(f"--set {', '.join(sorted(overrides or {}))}: task {spec.name} then no longer "
                                     f"reads '{key}', which preset '{preset}' sets",
                                     "choose a preset made for that setting (`benchmark params "
                                     f"{spec.name}` lists them)")
        for key in overrides or {}:
            if key not in declared:
                close = difflib.get_close_matches(key, list(declared), n=3)
                raise BenchmarkError(f"--set {key}=...: task {spec.name} has no parameter '{key}'",
                                     (f"did you mean {', '.join(close)}? " if close else "")
                                     + f"its parameters: {valid}")
        return cls.complete(declared, values, overrides or {}, f"task {spec.name}, preset '{preset}'")

    @classmethod
    def complete(cls, declared: dict[str, Param], values: dict[str, Any], overrides: dict[str, Any] | None = None,
                 where: str = "parameters") -> dict[str, Any]:
        """Every declared parameter: ``overrides``, else ``values``, else its default; each type-checked."""
        out: dict[str, Any] = {}
        for name, param in declared.items():
            if name in (overrides or {}):
                out[name] = param.check(name, overrides[name], f"--set {name}")
            elif name in values:
                out[name] = param.check(name, values[name], where)
            elif param.default is REQUIRED:
                raise BenchmarkError(f"{where} does not set the required parameter '{name}'",
                                     f"add it to the preset or pass --set {name}=...")
            else:
                out[name] = copy.deepcopy(param.default)
        return out

    # -- data ------------------------------------------------------------------------------------------------
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

    @classmethod
    def make_mini_full_size(cls, spec: TaskSpec, out_dir: Path, seed: int) -> None:
        """Mini data whose images have the real dataset's sizes (``benchmark plan`` measures FLOPs on them); the
        default: ``make_mini``, for tasks whose pipeline brings any image to the real input size anyway."""
        cls.make_mini(spec, out_dir, seed)

    # -- the run ---------------------------------------------------------------------------------------------
    def trained_task(self):
        """The ``TrainedTask`` this run trains (``benchmark plan`` inspects it), or None for a task without
        training (a frozen-feature probe)."""
        return None

    def run(self) -> dict[str, float]:
        raise NotImplementedError

    def finish(self, metrics: dict[str, float]) -> dict[str, float]:
        """Check the adapter returned exactly the declared metrics as finite floats (the worker calls this)."""
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
