"""`benchmark collect`: store the finished results found in a work dir that the results DB does not hold yet.

Every attempt leaves ``result.json`` (metrics, the adapter's facts and its job, which carries the run's identity
and metadata) in its run dir before the runner writes the DB. A result is missing from the DB when the DB write
failed (a full disk), the runner was killed while its worker finished, or the job ran elsewhere (a cluster job
writing to a shared work dir). Collecting is idempotent: a result already stored — by its key, from this file or
a newer run — is left alone; history dirs of forced attempts (``*.attempt-*``) are never collected.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from . import registry
from .errors import BenchmarkError
from .runner import JOB_INFO, preset_label
from .store import ResultStore, RunInfo, RunKey


@dataclass
class Collected:
    path: Path
    status: str  # stored | present | skipped
    detail: str = ""


def _result_files(work_dir: Path) -> list[Path]:
    found = []
    for path in sorted(work_dir.rglob("result.json")):
        rel = path.relative_to(work_dir).parts
        if any(".attempt-" in part for part in rel) or rel[0] in ("mini_data", "cache"):
            continue
        found.append(path)
    return found


def _read(path: Path) -> tuple[dict | None, str]:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({exc})"
    job, metrics = result.get("job"), result.get("metrics")
    if not isinstance(job, dict) or not isinstance(metrics, dict) or not metrics:
        return None, "no job or metrics in it"
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in metrics.values()):
        return None, "a metric is not a finite number"
    return result, ""


def collect(work_dir: Path, db: Path) -> list[Collected]:
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        raise BenchmarkError(f"work dir not found: {work_dir}", "pass the --work-dir the runs used")
    store = ResultStore(db)
    out = []
    for path in _result_files(work_dir):
        result, why = _read(path)
        if result is None:
            out.append(Collected(path, "skipped", why))
            continue
        job = result["job"]
        try:
            spec = registry.get_task(job["task"])
        except BenchmarkError as exc:
            out.append(Collected(path, "skipped", exc.problem))
            continue
        key = RunKey(job["ckpt_sha256"], spec.name, preset_label(job["preset"], job.get("overrides") or {}),
                     int(job["subset"]), int(job["seed"]))
        finished = path.stat().st_mtime
        stored = store.stored_run(key)
        if stored is not None and (stored["finished_at"] or 0) >= finished:
            out.append(Collected(path, "present"))
            continue
        info = RunInfo(key=key, **{k: v for k, v in (job.get("info") or {}).items() if k in JOB_INFO})
        info.ckpt_path = info.ckpt_path or job.get("ckpt", "")
        info.ckpt_label = info.ckpt_label or Path(info.ckpt_path).stem
        info.suite = info.suite or spec.suite
        info.data_root, info.data_fingerprint = result.get("data_root", ""), result.get("data_fingerprint", "")
        info.extra = dict(result.get("extra") or {})
        info.started_at = info.finished_at = finished
        store.record_success(info, result["metrics"], {m.name: m.direction for m in spec.metrics})
        out.append(Collected(path, "stored", ", ".join(f"{k}={v:.4g}" for k, v in result["metrics"].items())))
    return out
