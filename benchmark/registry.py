"""Task and suite registry: small YAML specs in ``tasks/specs``, adapters imported only when a task runs.

A spec is one file per task (``tasks/specs/<name>.yaml``); files starting with ``_`` are shared bases that a
spec pulls in with ``include: _base.yaml`` (deep-merged, the including file wins). A spec without ``adapter``
is a task that is declared but not implemented yet: it is listed, and ``run`` refuses it with that message.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import BenchmarkError

SPEC_DIR = Path(__file__).resolve().parent.parent / "tasks" / "specs"
PAPER_SUITES = ("semantic", "geometric", "combined")
DIRECTIONS = {"up": "↑", "down": "↓"}


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str  # "up" (higher is better) or "down"
    primary: bool = False
    unit: str = ""

    @property
    def arrow(self) -> str:
        return DIRECTIONS[self.direction]

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "up" else a < b


@dataclass(frozen=True)
class TaskSpec:
    name: str
    suite: str
    description: str
    metrics: tuple[Metric, ...]
    dataset: dict[str, Any]
    presets: dict[str, dict[str, Any]]
    version: str = "1"
    order: int = 10_000
    group: str | None = None
    adapter: str | None = None
    source_file: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def implemented(self) -> bool:
        return bool(self.adapter)

    @property
    def primary(self) -> Metric:
        return next((m for m in self.metrics if m.primary), self.metrics[0])

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def preset(self, name: str) -> dict[str, Any]:
        if name not in self.presets:
            raise BenchmarkError(f"task {self.name} has no preset '{name}'",
                                 f"choose one of: {', '.join(sorted(self.presets))}")
        return copy.deepcopy(self.presets[name])

    def config_hash(self, preset: str) -> str:
        """Changes whenever anything that defines the task's result changes (spec or preset)."""
        blob = json.dumps({"spec": self.raw, "preset": self.presets.get(preset)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def docs(self) -> str:
        return self.dataset.get("docs", "docs/datasets.md")


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise BenchmarkError(f"spec include cycle at {path}", "remove the circular include:")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        raise BenchmarkError(f"task spec {path} is not valid YAML"
                             + (f" (line {where.line + 1}, column {where.column + 1})" if where else ""),
                             "fix the file (a '#' comment inside {...} or [...] is a common cause)") from exc
    inc = data.pop("include", None)
    if inc:
        data = _deep_merge(_read_yaml(path.parent / inc, seen + (path,)), data)
    return data


def _parse(path: Path) -> TaskSpec:
    raw = _read_yaml(path)
    try:
        metrics = tuple(Metric(m["name"], m["direction"], bool(m.get("primary", False)), m.get("unit", ""))
                        for m in raw["metrics"])
        for m in metrics:
            if m.direction not in DIRECTIONS:
                raise ValueError(f"metric {m.name}: direction must be up or down")
        return TaskSpec(name=raw["name"], suite=raw["suite"], description=raw.get("description", ""),
                        metrics=metrics, dataset=raw.get("dataset", {}), presets=raw.get("presets", {}),
                        version=str(raw.get("version", 1)), order=int(raw.get("order", 10_000)),
                        group=raw.get("group"), adapter=raw.get("adapter"),
                        source_file=str(path), raw=raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchmarkError(f"bad task spec {path}: {exc!r}", "fix the YAML (see tasks/specs/README.md)") from exc


def spec_dirs() -> list[Path]:
    """The built-in specs plus the folders in $MIMBENCH_TASK_PATH (os.pathsep-separated): users' own tasks."""
    extra = [Path(p) for p in os.environ.get("MIMBENCH_TASK_PATH", "").split(os.pathsep) if p]
    return [SPEC_DIR, *extra]


def load_specs(spec_dir: str | None = None) -> dict[str, TaskSpec]:
    return _load_specs((spec_dir,) if spec_dir else tuple(map(str, spec_dirs())))


@lru_cache(maxsize=8)
def _load_specs(folders: tuple[str, ...]) -> dict[str, TaskSpec]:
    specs = {}
    for path in (p for folder in folders for p in sorted(Path(folder).glob("*.yaml"))):
        if path.name.startswith("_"):
            continue
        spec = _parse(path)
        if spec.name in specs:
            raise BenchmarkError(f"task {spec.name} is declared twice ({path})", "rename one of the specs")
        specs[spec.name] = spec
    return dict(sorted(specs.items(), key=lambda kv: (kv[1].order, kv[0])))


def suites(specs: dict[str, TaskSpec] | None = None) -> dict[str, list[str]]:
    specs = specs or load_specs()
    out: dict[str, list[str]] = {s: [] for s in PAPER_SUITES}
    for spec in specs.values():
        out.setdefault(spec.suite, []).append(spec.name)
    out["all"] = [n for s in PAPER_SUITES for n in out.get(s, [])]
    return out


def groups(specs: dict[str, TaskSpec] | None = None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for spec in (specs or load_specs()).values():
        if spec.group:
            out.setdefault(spec.group, []).append(spec.name)
    return out


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    return f"did you mean {', '.join(close)}?" if close else "see `benchmark list`"


def get_task(name: str, specs: dict[str, TaskSpec] | None = None) -> TaskSpec:
    specs = specs or load_specs()
    if name not in specs:
        raise BenchmarkError(f"unknown task '{name}'", _did_you_mean(name, list(specs) + list(groups(specs))))
    return specs[name]


def resolve(tasks: str | None = None, suite: str | None = None,
            specs: dict[str, TaskSpec] | None = None) -> list[TaskSpec]:
    """Task specs named by ``--tasks a,b,group`` or ``--suite name``, in a stable order, without repeats."""
    specs = specs or load_specs()
    names: list[str] = []
    if suite:
        all_suites = suites(specs)
        if suite not in all_suites:
            raise BenchmarkError(f"unknown suite '{suite}'", _did_you_mean(suite, list(all_suites)))
        names += all_suites[suite]
    if tasks:
        grp = groups(specs)
        for item in (t.strip() for t in tasks.split(",") if t.strip()):
            names += grp.get(item) or [get_task(item, specs).name]
    if not names:
        raise BenchmarkError("no task selected", "pass --suite NAME or --tasks a,b (see `benchmark list`)")
    return [specs[n] for n in dict.fromkeys(names)]


def resolve_params(spec: TaskSpec, preset: str, overrides: dict | None = None) -> dict:
    """The run's parameters as the worker will resolve them: an unknown preset, an undeclared key or a value of the
    wrong type is refused here, before anything runs. Adapter modules import their heavy libraries (torch,
    mmengine) only when they run, so this takes a fraction of a second."""
    return load_adapter(spec).resolve_params(spec, preset, overrides or {})


def load_adapter(spec: TaskSpec):
    """Import the adapter class named ``module:Class`` only now, so listing tasks imports no heavy library."""
    if not spec.implemented:
        raise BenchmarkError(f"task {spec.name} is not implemented yet",
                             "it is declared in the registry; see `benchmark list` for the implemented tasks")
    module_name, _, attr = spec.adapter.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BenchmarkError(f"task {spec.name}: cannot load adapter {spec.adapter} ({exc})",
                             "fix 'adapter' in its spec or reinstall with `make setup`") from exc
