"""Leaderboards (pandas, CSV, Markdown) with the paper's reference rows.

Table layout (:func:`build`)
    One row per (checkpoint, preset, subset). Identifying columns: ``checkpoint`` (label), ``sha256`` (first 12
    hex digits), ``arch``, ``method``, ``kind`` ('measured' | 'reported'), ``preset``, ``subset`` (0 = full split)
    and ``seeds`` (how many distinct seeds the row's results come from; empty for reported rows). Then one column
    per task metric, named ``"{task}/{metric} {arrow}"`` (``coco_pose/AP ↑``, ``nyu_depth/rmse ↓``), ordered by
    suite (semantic, geometric, combined, then the others), task (registry order) and metric (primary first, then
    the spec's order). A cell is the mean over the seeds of that key; the Markdown adds ``± std`` when there are
    two or more seeds. Only metrics declared in the task specs appear, and only columns with at least one value.

Suite summary columns
    For every suite with at least one task column in the table, one column follows that suite's metric columns:

    * if the primary metrics of all of the suite's tasks share one direction, ``"{suite} mean ↑"`` (or ``↓``) is the
      mean of the row's primary-metric values;
    * if they mix directions (geometric: AP ↑, RMSE ↓, AO ↑), a mean of raw values is meaningless, so the column is
      ``"{suite} mean rank ↓"``: for each task of the suite, the row's rank (1 = best, direction-aware, ties get the
      average rank) among the *measured* rows that have the same preset and subset and a score on every task of
      the suite; the cell is the mean of these ranks over the suite's tasks.

    Either way the cell is filled only when the row has a primary-metric score for EVERY task of that suite (as
    declared in the specs, not only the ones in the table); otherwise it is empty (NaN). Reported rows never enter
    a rank and their mean-rank cell stays empty; a plain mean is shown for them when they are complete.

Reference rows
    ``results/reference/paper.csv`` holds the numbers the paper reports (read by :mod:`benchmark.reference`). They
    become rows with kind 'reported', after the measured rows; they are the paper's numbers, never scores of this
    suite, and the Markdown marks them with "(reported)" and a footnote.

The regression check (``benchmark check``) compares a leaderboard CSV written here with a fresh table: see
:mod:`benchmark.check`.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .errors import BenchmarkError
from .files import write_text_atomic
from .registry import DIRECTIONS, PAPER_SUITES, Metric, TaskSpec, suites

ID_COLUMNS = ["checkpoint", "sha256", "arch", "method", "kind", "preset", "subset", "seeds"]
RANK_SUFFIX = " mean rank ↓"


# -- names and order ----------------------------------------------------------------------------------------------
def column_name(task: str, metric: Metric) -> str:
    return f"{task}/{metric.name} {metric.arrow}"


def _suite_order(specs: dict[str, TaskSpec]) -> list[str]:
    present = list(dict.fromkeys(s.suite for s in specs.values()))
    return [s for s in PAPER_SUITES if s in present] + sorted(s for s in present if s not in PAPER_SUITES)


def _selected_tasks(specs: dict[str, TaskSpec], suite: str | None) -> list[str]:
    all_suites = suites(specs)
    if suite is not None and suite not in all_suites:
        raise BenchmarkError(f"unknown suite '{suite}'", f"choose one of: {', '.join(sorted(all_suites))}")
    chosen = set(all_suites[suite]) if suite is not None else set(specs)
    return [t for s in _suite_order(specs) for t in all_suites[s] if t in chosen]


def _metric_columns(specs: dict[str, TaskSpec], tasks: list[str]) -> list[tuple[str, str, Metric]]:
    out = []
    for t in tasks:
        spec = specs[t]
        ordered = [spec.primary] + [m for m in spec.metrics if m is not spec.primary]
        out += [(column_name(t, m), t, m) for m in ordered]
    return out


def summary_names(specs: dict[str, TaskSpec]) -> dict[str, str]:
    """Summary column name -> suite, for every suite of ``specs``."""
    names = {}
    for s, tasks in suites(specs).items():
        if s == "all" or not tasks:
            continue
        dirs = {specs[t].primary.direction for t in tasks}
        names[f"{s} mean {DIRECTIONS[dirs.pop()]}" if len(dirs) == 1 else f"{s}{RANK_SUFFIX}"] = s
    return names


# -- build --------------------------------------------------------------------------------------------------------
def build(results: pd.DataFrame | None, specs: dict[str, TaskSpec], suite: str | None = None,
          reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """The leaderboard of ``results`` (ResultStore.results()), optionally one suite's tasks only ('all' = the three
    paper suites), with the ``reference`` rows (benchmark.reference.load_reference()) appended as kind 'reported'."""
    tasks = _selected_tasks(specs, suite)
    mcols = _metric_columns(specs, tasks)
    known = {(t, m.name): c for c, t, m in mcols}
    rows: list[dict] = []
    std: dict[tuple, dict[str, float]] = {}
    counts: dict[tuple, dict[str, int]] = {}  # seeds per cell: a row's cells may rest on different seed counts

    if results is not None and len(results):
        need = {"ckpt_sha256", "task", "preset", "subset", "seed", "metric", "value"}
        if not need <= set(results.columns):
            raise BenchmarkError(f"results table lacks columns {sorted(need - set(results.columns))}",
                                 "pass ResultStore.results()")
        res = results.copy()
        res["column"] = [known.get((t, m)) for t, m in zip(res["task"], res["metric"])]
        res = res[res["column"].notna()]
        if "finished_at" not in res.columns:
            res["finished_at"] = 0.0
        for c in ("ckpt_label", "arch", "method"):
            if c not in res.columns:
                res[c] = ""
        latest = (res.sort_values("finished_at", kind="stable").groupby("ckpt_sha256").last())
        for (sha, preset, subset), grp in res.groupby(["ckpt_sha256", "preset", "subset"], sort=False):
            meta = latest.loc[sha]
            row = {"checkpoint": str(meta["ckpt_label"] or sha[:12]), "sha256": str(sha)[:12],
                   "arch": str(meta["arch"]), "method": str(meta["method"]), "kind": "measured",
                   "preset": str(preset), "subset": int(subset), "seeds": int(grp["seed"].nunique())}
            cell_std = {}
            for col, vals in grp.groupby("column")["value"]:
                row[col] = float(vals.mean())
                if len(vals) >= 2:
                    cell_std[col] = float(vals.std(ddof=1))
            counts[(row["sha256"], row["preset"], row["subset"])] = grp.groupby("column")["seed"].nunique().to_dict()
            rows.append(row)
            if cell_std:
                std[(row["sha256"], row["preset"], row["subset"])] = cell_std
        rows.sort(key=lambda r: (r["preset"], r["subset"], r["checkpoint"], r["sha256"]))

    sources: list[str] = []
    if reference is not None and len(reference):
        ref = reference.copy()
        ref["column"] = [known.get((t, m)) for t, m in zip(ref["task"], ref["metric"])]
        ref = ref[ref["column"].notna()]
        for model, grp in ref.groupby("model", sort=False):
            first = grp.iloc[0]
            row = {"checkpoint": str(model), "sha256": "", "arch": str(first["arch"]), "method": str(first["method"]),
                   "kind": "reported", "preset": "paper", "subset": 0, "seeds": pd.NA}
            row.update({c: float(v) for c, v in zip(grp["column"], grp["value"])})
            rows.append(row)
            if "source" in grp.columns:
                for src in grp["source"].astype(str):
                    if src and src not in sources:
                        sources.append(src)

    table = pd.DataFrame(rows, columns=ID_COLUMNS + [c for c, _, _ in mcols])
    present = [c for c, _, _ in mcols if table[c].notna().any()]
    summary = _suite_summaries(table, specs, {t for c, t, _ in mcols if c in present})
    order = list(ID_COLUMNS)
    suite_of = {c: specs[t].suite for c, t, _ in mcols}
    for i, c in enumerate(present):
        order.append(c)
        s = suite_of[c]
        if i + 1 == len(present) or suite_of[present[i + 1]] != s:
            order += [name for name, (sname, _) in summary.items() if sname == s]
    for name, (_, values) in summary.items():
        table[name] = values
    table = table[order].reset_index(drop=True)
    table = table.astype({"subset": "int64", "seeds": "Int64"})
    for c in order[len(ID_COLUMNS):]:
        table[c] = table[c].astype("float64")
    column_suite = {c: suite_of[c] for c in present}
    column_suite.update({name: sname for name, (sname, _) in summary.items()})
    table.attrs = {"suite": suite, "std": std, "sources": sources, "column_suite": column_suite, "counts": counts}
    return table


def _suite_summaries(table: pd.DataFrame, specs: dict[str, TaskSpec],
                     tasks_in_table: set[str]) -> dict[str, tuple[str, pd.Series]]:
    out: dict[str, tuple[str, pd.Series]] = {}
    all_suites = suites(specs)
    names = {s: n for n, s in summary_names(specs).items()}
    for s in _suite_order(specs):
        stasks = all_suites.get(s, [])
        if not any(t in tasks_in_table for t in stasks):
            continue
        prim = [column_name(t, specs[t].primary) for t in stasks]
        vals = table.reindex(columns=prim).astype("float64")
        complete = vals.notna().all(axis=1)
        name = names[s]
        if not name.endswith(RANK_SUFFIX):
            out[name] = (s, vals.mean(axis=1).where(complete))
            continue
        result = pd.Series(math.nan, index=table.index, dtype="float64")
        pool = complete & (table["kind"] == "measured")
        for _, idx in table[pool].groupby(["preset", "subset"]).groups.items():
            ranks = [vals.loc[idx, c].rank(ascending=specs[t].primary.direction == "down", method="average")
                     for c, t in zip(prim, stasks)]
            result.loc[idx] = pd.concat(ranks, axis=1).mean(axis=1)
        out[name] = (s, result)
    return out


# -- files --------------------------------------------------------------------------------------------------------
def to_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """Write the table as UTF-8 CSV (full float precision, empty cells for missing values), atomically."""
    return write_text_atomic(path, table.to_csv(index=False, na_rep="", lineterminator="\n"))


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a CSV written by :func:`to_csv` back (text columns stay text, floats round-trip exactly)."""
    text_cols = ("checkpoint", "sha256", "arch", "method", "kind", "preset")
    df = pd.read_csv(path, dtype={c: str for c in text_cols}, keep_default_na=False, na_values=[""],
                     float_precision="round_trip", encoding="utf-8")
    for c in text_cols:
        if c in df.columns:
            df[c] = df[c].fillna("")
    return df


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "—"
    v = float(v)
    a = abs(v)
    return f"{v:.3f}" if a < 10 else f"{v:.2f}" if a < 100 else f"{v:.1f}"


def _fmt_like(s: float, v: float) -> str:
    a = abs(v)
    return f"{s:.3f}" if a < 10 else f"{s:.2f}" if a < 100 else f"{s:.1f}"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(table: pd.DataFrame, title: str | None = None) -> str:
    """The Markdown text of :func:`to_markdown`: a title, a legend, one table per suite (only the rows with a score
    in that suite, so tables stay readable), and a footnote for reported rows."""
    suite = table.attrs.get("suite")
    title = title or ("Leaderboard" + (f": suite {suite}" if suite else ""))
    column_suite = table.attrs.get("column_suite") or {}
    metric_cols = [c for c in table.columns if c not in ID_COLUMNS]
    sections: dict[str, list[str]] = {}
    for c in metric_cols:
        sections.setdefault(column_suite.get(c, ""), []).append(c)
    legend = ["↑ higher is better, ↓ lower is better; a cell is the mean over seeds (± std with ≥ 2 seeds); "
              "`seeds` is the most seeds any cell of the row rests on, and a cell resting on fewer says so, e.g. "
              "`24.00 (n=1)`."]
    if any(c.endswith(RANK_SUFFIX) for c in metric_cols):
        legend.append("'mean rank' ranks the measured rows of one preset and subset per task (1 = best) and averages "
                      "the ranks over the suite's tasks.")
    legend.append("— : no value (the task has no result for this row; a suite column is filled only when every task "
                  "of the suite has one; reported rows have no seed count).")
    if "kind" in table and (table["kind"] == "reported").any():
        legend.append("Rows marked (reported) are the paper's numbers, not scores of this suite.")
    lines = [f"# {title}", "", " ".join(legend), ""]
    any_reported = False
    for name, cols in sections.items():
        rows = table[table[cols].notna().any(axis=1)] if len(table) else table
        if len(sections) > 1:
            lines += [f"## {name or 'other'}", ""]
        text, reported = _markdown_table(rows, [c for c in ID_COLUMNS if c != "kind"] + cols, table.attrs)
        any_reported |= reported
        lines += text + [""]
    if any_reported:
        lines += ["(reported): numbers reported by Xie et al., \"Revealing the Dark Secrets of Masked Image "
                  "Modeling\" (CVPR 2023), copied from results/reference/paper.csv; they are not scores of this "
                  "suite and never enter a rank."]
        lines += [f"- {s}" for s in table.attrs.get("sources", [])]
    return "\n".join(lines).rstrip("\n") + "\n"


def _markdown_table(table: pd.DataFrame, cols: list[str], attrs: dict) -> tuple[list[str], bool]:
    std, counts = attrs.get("std", {}), attrs.get("counts", {})
    lines = ["| " + " | ".join(_cell(c) for c in cols) + " |",
             "|" + "|".join("---" if c in ID_COLUMNS[:5] else "---:" for c in cols) + "|"]
    any_reported = False
    for _, row in table.iterrows():
        reported = row.get("kind") == "reported"
        any_reported |= reported
        key = (row.get("sha256"), row.get("preset"), row.get("subset"))
        key_std = std.get(key, {}) if not reported else {}
        key_n = counts.get(key, {}) if not reported else {}
        cells = []
        for c in cols:
            v = row[c]
            if c == "checkpoint":
                cells.append(_cell(v) + (" (reported)" if reported else ""))
            elif c in ("sha256", "arch", "method", "preset"):
                cells.append(_cell("" if pd.isna(v) else v))
            elif c in ("subset", "seeds"):
                cells.append("—" if pd.isna(v) else str(int(v)))
            else:
                text = _fmt(v)
                if c in key_std and not pd.isna(v):
                    text += " ± " + _fmt_like(key_std[c], v)
                if c in key_n and not pd.isna(row.get("seeds")) and key_n[c] < int(row["seeds"]):
                    text += f" (n={key_n[c]})"
                cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return lines, any_reported


def to_markdown(table: pd.DataFrame, path: str | Path, title: str | None = None) -> str:
    """Write the Markdown leaderboard atomically; returns its text."""
    text = render_markdown(table, title)
    write_text_atomic(path, text)
    return text
