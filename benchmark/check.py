"""The regression check (``benchmark check``): a committed leaderboard CSV against a freshly built table.

Metric by metric and direction-aware; see :func:`compare`. The gate must not pass on missing results: a baseline
cell without a current value is MISSING, which ``benchmark check`` fails with its own exit code (see ``EXIT``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from .errors import BenchmarkError
from .leaderboard import ID_COLUMNS, column_name, read_csv, summary_names
from .registry import DIRECTIONS, Metric, TaskSpec

COMPARISON_COLUMNS = ["checkpoint", "sha256", "preset", "subset", "column", "baseline", "current", "delta",
                      "tolerance", "status", "seeds", "matched_by"]
# benchmark check's exit codes: a regression wins over missing results, which win over a seed-count mismatch
# (a failure only with --strict); 2 is bad input, as everywhere in the CLI.
EXIT = {"ok": 0, "regression": 1, "bad_input": 2, "missing": 3}
_METRIC_RE = re.compile(r"^(?P<task>[^/]+)/(?P<metric>.+?)(?: (?P<arrow>[↑↓]))?$")
_ARROW_TO_DIR = {v: k for k, v in DIRECTIONS.items()}


def _parse_metric(col: str, specs: dict[str, TaskSpec], need_arrow: bool) -> tuple[str, Metric] | None:
    m = _METRIC_RE.match(col)
    if not m or m["task"] not in specs or (need_arrow and not m["arrow"]):
        return None
    try:
        metric = specs[m["task"]].metric(m["metric"])
    except KeyError:
        return None
    if m["arrow"] and _ARROW_TO_DIR[m["arrow"]] != metric.direction:
        return None
    return m["task"], metric


def _metric_columns_of(columns, specs) -> tuple[dict[str, tuple[str, Metric]], list[str]]:
    summary = summary_names(specs)
    metrics, unknown = {}, []
    for c in columns:
        if c in ID_COLUMNS or c in summary:
            continue
        parsed = _parse_metric(str(c), specs, need_arrow=True)
        if parsed is None:
            unknown.append(str(c))
        else:
            metrics[c] = parsed
    return metrics, unknown


def compare(baseline_csv: str | Path, current: pd.DataFrame, specs: dict[str, TaskSpec], tolerance: float = 0.0,
          tolerances: dict[str, float] | None = None) -> tuple[pd.DataFrame, bool]:
    """Compare a leaderboard CSV written by :func:`benchmark.leaderboard.to_csv` (the baseline) with the current
    table (:func:`benchmark.leaderboard.build`).

    Rows are matched on (sha256, preset, subset); a baseline row whose sha256 is empty, absent, or found in no
    current row is matched on (checkpoint, preset, subset) instead (``matched_by`` tells which). Reported rows are
    skipped on both sides, and so are the suite summary columns (derived from the metric columns; a mean rank also
    depends on the other rows). Every metric column with a baseline value is compared, direction-aware: a
    REGRESSION is ``current < baseline - tol`` for ↑ and ``current > baseline + tol`` for ↓; 'improved' is the
    mirror image; anything in between is 'ok'. ``tol`` is ``tolerances[column]`` (key with or without the arrow,
    e.g. 'nyu_depth/rmse ↓' or 'nyu_depth/rmse'), else ``tolerance``. A baseline value with no current value
    (metric or whole row absent) is 'missing': reported, but NOT a regression. Columns only in the current table
    are ignored.

    Returns (comparison table with COMPARISON_COLUMNS, whether any regression happened). Raises BenchmarkError
    when the baseline file is missing, is not a leaderboard CSV, has columns that match no task/metric of
    ``specs`` (or a tolerance key does not), or when no baseline row matches any current row.
    """
    path = Path(baseline_csv)
    if not path.is_file():
        raise BenchmarkError(f"baseline {path} not found",
                             "pass a leaderboard CSV written by `benchmark leaderboard` (e.g. results/*.csv)")
    try:
        base = read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise BenchmarkError(f"baseline {path} is not a leaderboard CSV ({exc})",
                             "pass a CSV written by `benchmark leaderboard`") from exc
    if "checkpoint" not in base.columns:
        raise BenchmarkError(f"baseline {path} is not a leaderboard CSV (no 'checkpoint' column)",
                             "pass a CSV written by `benchmark leaderboard`")
    if tolerance < 0:
        raise BenchmarkError(f"tolerance {tolerance} is negative", "pass a tolerance ≥ 0")
    metrics, unknown = _metric_columns_of(base.columns, specs)
    if not metrics and not unknown:
        raise BenchmarkError(f"baseline {path} has no metric column",
                             "a baseline is a CSV written by `benchmark leaderboard` with 'task/metric ↑|↓' columns")
    _, unknown_cur = _metric_columns_of(current.columns, specs)
    unknown += [c for c in unknown_cur if c not in unknown]
    if unknown:
        raise BenchmarkError(f"unknown columns: {', '.join(unknown)}",
                             "columns must be 'task/metric ↑|↓' of a registered task (see `benchmark list`); "
                             "rebuild the baseline with the current specs")
    tol_by_col: dict[str, float] = {}
    bad_keys = []
    for k, v in (tolerances or {}).items():
        parsed = _parse_metric(str(k), specs, need_arrow=False)
        if parsed is None:
            bad_keys.append(str(k))
            continue
        if v < 0:
            raise BenchmarkError(f"tolerance for {k} is negative ({v})", "pass tolerances ≥ 0")
        tol_by_col[column_name(*parsed)] = float(v)
    if bad_keys:
        raise BenchmarkError(f"unknown tolerance keys: {', '.join(bad_keys)}",
                             "use 'task/metric' of a registered task, e.g. 'nyu_depth/rmse'")

    def measured(df: pd.DataFrame) -> pd.DataFrame:
        return df[df["kind"] != "reported"] if "kind" in df.columns else df

    base, cur = measured(base), measured(current)
    for col in metrics:  # every baseline cell a number (or empty): a typo must not become "no value"
        values = pd.to_numeric(base[col], errors="coerce")
        bad = base[col][values.isna() & base[col].notna() & (base[col].astype(str).str.strip() != "")]
        if len(bad):
            row = bad.index[0]
            raise BenchmarkError(f"baseline {path}: column '{col}' holds {bad.iloc[0]!r} (row of checkpoint "
                                 f"{base.loc[row, 'checkpoint']!r}), not a number", "fix or empty that cell")
        base[col] = values
    if not any(base[col].notna().any() for col in metrics):
        raise BenchmarkError(f"baseline {path} has no metric value (every metric cell is empty)",
                             "build the baseline from a DB holding results: `benchmark leaderboard --format csv`")
    extra = [c for c in ("preset", "subset") if c in base.columns and c in cur.columns]
    rows: list[dict] = []
    matched_any = False
    for _, b in base.iterrows():
        same = pd.Series(True, index=cur.index)
        if "preset" in extra:
            same &= cur["preset"].astype(str) == str(b["preset"])
        if "subset" in extra:
            same &= pd.to_numeric(cur["subset"], errors="coerce") == pd.to_numeric(b["subset"], errors="coerce")
        sha = b.get("sha256")
        sha = "" if sha is None or pd.isna(sha) else str(sha)
        hit, by = cur.iloc[0:0], "sha256"
        if sha and "sha256" in cur.columns:
            hit = cur[same & (cur["sha256"].astype(str) == sha)]
        if not len(hit):
            hit, by = cur[same & (cur["checkpoint"].astype(str) == str(b["checkpoint"]))], "checkpoint"
        matched_any |= bool(len(hit))
        targets = [r for _, r in hit.iterrows()] or [None]
        for r in targets:
            seeds = f"{_count(b.get('seeds'))}/{_count(r.get('seeds')) if r is not None else '-'}"
            for col, (_task, metric) in metrics.items():
                bv = b[col]
                if pd.isna(bv):
                    continue
                bv = float(bv)
                cv = float(r[col]) if r is not None and col in r.index and not pd.isna(r[col]) else math.nan
                tol = tol_by_col.get(col, float(tolerance))
                eps = 1e-9 * max(1.0, abs(bv))
                if math.isnan(cv):
                    status = "MISSING"
                else:
                    worse = cv < bv - tol - eps if metric.direction == "up" else cv > bv + tol + eps
                    better = cv > bv + tol + eps if metric.direction == "up" else cv < bv - tol - eps
                    status = "REGRESSION" if worse else "improved" if better else "ok"
                rows.append({"checkpoint": str(b["checkpoint"]),
                             "sha256": str(r["sha256"]) if r is not None and "sha256" in r.index else sha,
                             "preset": str(b["preset"]) if "preset" in b.index else "",
                             "subset": int(b["subset"]) if "subset" in b.index else 0,
                             "column": col, "baseline": bv, "current": cv, "delta": cv - bv, "tolerance": tol,
                             "status": status, "seeds": seeds, "matched_by": by if r is not None else ""})
    if not matched_any:
        raise BenchmarkError(f"no row of baseline {path} matches a current row",
                             "rows match on sha256 (or checkpoint label) with the same preset and subset; "
                             "run the baseline's checkpoints and preset first")
    out = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    return out, bool((out["status"] == "REGRESSION").any())


def _count(value) -> str:
    """A seed count as shown in the table ('?' when the CSV does not say)."""
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return "?"


def seed_mismatches(table: pd.DataFrame) -> pd.DataFrame:
    """Rows comparing a mean over one number of seeds with a mean over another (e.g. 3 in the baseline, 1 now)."""
    def differs(cell: str) -> bool:
        base, _, cur = str(cell).partition("/")
        return base.isdigit() and cur.isdigit() and base != cur

    return table[table["seeds"].map(differs).astype(bool)] if len(table) else table


def verdict(table: pd.DataFrame, regressed: bool, allow_missing: bool, strict: bool) -> tuple[int, str]:
    """(exit code, one-line verdict) of a comparison."""
    missing = int((table["status"] == "MISSING").sum())
    mismatched = len(seed_mismatches(table))
    notes = []
    if missing:
        notes.append(f"{missing} baseline value(s) have no current result" + (" (allowed)" if allow_missing else ""))
    if mismatched:
        notes.append(f"{mismatched} value(s) compare means over different seed counts (see 'seeds': baseline/current)")
    tail = ("; " + "; ".join(notes)) if notes else ""
    if regressed:
        return EXIT["regression"], "REGRESSION: at least one metric is worse than the baseline beyond tolerance" + tail
    if missing and not allow_missing:
        return EXIT["missing"], "MISSING: the gate cannot pass without every baseline result (run them, or pass " \
                                "--allow-missing)" + tail
    if mismatched and strict:
        return EXIT["missing"], "SEEDS DIFFER (--strict): run the baseline's seeds" + tail
    return EXIT["ok"], "ok: no regression beyond tolerance" + tail
