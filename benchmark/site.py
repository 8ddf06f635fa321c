"""The leaderboard as a static site: ``benchmark leaderboard --format html --out DIR``.

One job: the results DB's rows (``ResultStore.results()`` and ``.runs()``) -> ``DIR/index.html`` and its assets.
The tables are :func:`benchmark.leaderboard.build`'s, split by suite. The page works offline from file://: plotly.js
comes from the pinned plotly package and is written once as ``DIR/plotly.min.js``; the sorting / toggle / details
script and the style are ``DIR/site.js`` and ``DIR/site.css``; analysis figures are copied under ``DIR/analysis/``.
What the page shows, and the MIM / supervised rule of the delta chart: docs/leaderboard_site.md.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from . import leaderboard as lb
from .errors import BenchmarkError
from .files import write_text_atomic
from .registry import Metric, TaskSpec

# Checkpoint `method` values (from the checkpoint's meta) that count as MIM / supervised in the delta chart;
# everything else ('random', 'unknown', ...) takes no part in it.
MIM_METHODS = frozenset({"simmim"})
SUPERVISED_METHODS = frozenset({"supervised"})
COLORS = {"MIM": "#1f77b4", "supervised": "#ff7f0e", "other": "#8c8c8c"}
ID_HEADERS = {"checkpoint": "checkpoint", "sha256": "sha256", "arch": "arch", "method": "method",
              "preset": "preset", "subset": "subset", "seeds": "seeds"}


def method_group(method: str) -> str:
    """'MIM', 'supervised' or 'other' for a checkpoint's ``method``."""
    m = str(method).strip().lower()
    return "MIM" if m in MIM_METHODS else "supervised" if m in SUPERVISED_METHODS else "other"


def write_site(results: pd.DataFrame | None, runs: pd.DataFrame | None, specs: dict[str, TaskSpec], out: str | Path,
               reference: pd.DataFrame | None = None, suite: str | None = None,
               analysis: Iterable[str | Path] = ()) -> Path:
    """Write the site into folder ``out`` (created); returns the path of its ``index.html``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BenchmarkError(f"--out {out} is a file", "with --format html, --out names a folder for index.html")
    sources = [_analysis_source(Path(d)) for d in analysis]  # bad input fails before any work
    table = lb.build(results, specs, suite=suite, reference=reference)
    meta = _Meta(results, runs)
    columns = {lb.column_name(t, m): (t, m) for t, s in specs.items() for m in s.metrics}
    by_suite: dict[str, list[str]] = {}
    for col, s in (table.attrs.get("column_suite") or {}).items():
        by_suite.setdefault(s, []).append(col)
    measured = table[table["kind"] == "measured"]
    shown = {s: cols for s, cols in by_suite.items() if measured[cols].notna().any().any()}

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchmarkError(f"cannot create --out folder {out} ({exc.strerror})", "choose a writable folder") from exc
    import plotly.offline  # here: the CSV / Markdown leaderboards do not need plotly

    write_text_atomic(out / "plotly.min.js", plotly.offline.get_plotlyjs())
    write_text_atomic(out / "site.js", SITE_JS)
    write_text_atomic(out / "site.css", SITE_CSS)

    nav, body = [], []
    for s, cols in shown.items():
        nav.append((f"suite-{s}", s))
        body.append(f'<section id="suite-{_esc(s)}"><h2>{_esc(s)}</h2>'
                    + _suite_table(table, cols, columns, specs, meta) + "</section>")
    if not shown:
        body.append('<p class="note">The results DB holds no results yet: run <code>benchmark run</code> first.</p>')
    tasks = [columns[c][0] for cols in shown.values() for c in cols if c in columns]
    tasks = [t for t in dict.fromkeys(tasks)  # charts for the tasks with a measured primary score
             if measured.get(lb.column_name(t, specs[t].primary), pd.Series(dtype=float)).notna().any()]
    if tasks:
        nav.append(("charts", "charts"))
        body.append('<section id="charts"><h2>Primary metric per task</h2><p>Measured checkpoints (mean over '
                    "seeds, error bar = std) beside the paper's reported SUP / MIM rows (hatched) where the "
                    'reference has them.</p><div class="grid">'
                    + "".join(_task_chart(table, t, specs[t].primary) for t in tasks) + "</div></section>")
        nav.append(("delta", "MIM − supervised"))
        body.append(_delta_section(table, tasks, specs))
    for i, src in enumerate(sources, 1):
        nav.append((f"analysis-{i}", f"analysis {i}"))
        body.append(_analysis_section(src, out, i))
    title = "Leaderboard" + (f": suite {suite}" if suite else "")
    index = write_text_atomic(out / "index.html", _page(title, nav, "\n".join(body), table, meta.data))
    return index


# -- run metadata -------------------------------------------------------------------------------------------------
def _when(t) -> str:
    return datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d %H:%M UTC") if pd.notna(t) and t else "—"


def _joined(values: Iterable) -> str:
    return ", ".join(dict.fromkeys(str(v) for v in values if str(v))) or "—"


class _Meta:
    """Per-cell run metadata: a short id per (row, task) and per row, its details (shown in the side panel on
    click) and a one-line summary (the cells' title attribute)."""

    def __init__(self, results: pd.DataFrame | None, runs: pd.DataFrame | None):
        self.data: dict[str, dict] = {}
        self.ids: dict[tuple, str] = {}
        if results is None or not len(results):
            return
        extra = {} if runs is None or not len(runs) else dict(zip(runs["run_id"], zip(runs["packages"], runs["extra"])))
        values = {rid: dict(zip(g["metric"], g["value"])) for rid, g in results.groupby("run_id")}
        per_run = results.drop_duplicates("run_id").assign(sha12=lambda d: d["ckpt_sha256"].str[:12])
        for (sha, preset, subset), grp in per_run.groupby(["sha12", "preset", "subset"], sort=False):
            self._add((sha, preset, int(subset)), grp, extra, values, None)
            for task, tgrp in grp.groupby("task", sort=False):
                self._add((sha, preset, int(subset), task), tgrp, extra, values, task)

    def _add(self, key: tuple, grp: pd.DataFrame, extra: dict, values: dict, task: str | None) -> None:
        first = grp.sort_values("finished_at").iloc[-1]
        packages: dict[str, list[str]] = {}
        for rid in grp["run_id"]:
            for name, version in sorted(extra.get(rid, ({}, {}))[0].items()):
                packages.setdefault(name, []).append(str(version))
        subset = int(first["subset"])
        fields = [("checkpoint", first["ckpt_label"] or first["ckpt_sha256"][:12]),
                  ("sha256", first["ckpt_sha256"][:12]), ("arch", first["arch"]), ("method", first["method"]),
                  ("task", task or _joined(grp["task"])), ("preset", first["preset"]),
                  ("subset", "full split" if subset == 0 else str(subset)),
                  ("seeds", _joined(sorted(set(grp["seed"])))),
                  ("git sha", _joined(str(g)[:12] for g in grp["git_sha"])),
                  ("wall time", f"{grp['wall_s'].sum():.1f} s" + (f" over {len(grp)} runs" if len(grp) > 1 else "")),
                  ("date", _when(grp["finished_at"].max())), ("device", _joined(grp["device"])),
                  ("packages", _joined(f"{n} {'/'.join(dict.fromkeys(v))}" for n, v in packages.items()))]
        cols = ["seed", "run", "wall s", "finished"] + (["values"] if task else ["task"]) + ["extra"]
        rows = []
        for _, r in grp.sort_values(["task", "seed"]).iterrows():
            what = (", ".join(f"{m} {v:.4g}" for m, v in values.get(r["run_id"], {}).items()) if task
                    else r["task"])
            rows.append([int(r["seed"]), int(r["run_id"]), f"{r['wall_s']:.1f}", _when(r["finished_at"]), what,
                         json.dumps(extra.get(r["run_id"], ({}, {}))[1], sort_keys=True)[:300]])
        self.ids[key] = f"m{len(self.ids)}"
        self.data[self.ids[key]] = {"title": f"{fields[0][1]}" + (f" · {task}" if task else ""),
                                    "fields": [[k, str(v)] for k, v in fields], "runs": {"columns": cols, "rows": rows}}

    def reported(self, model: str, row: pd.Series, sources: list[str]) -> str:
        key = ("reported", model)
        if key not in self.ids:
            self.ids[key] = f"m{len(self.ids)}"
            self.data[self.ids[key]] = {"title": f"{model} (reported)", "fields": [
                ["model", model], ["arch", str(row["arch"])], ["method", str(row["method"])],
                ["kind", "numbers reported by the paper, not scores of this suite"],
                ["source", _joined(sources)]]}
        return self.ids[key]

    def title(self, mid: str | None) -> str:
        if mid is None:
            return ""
        fields = self.data[mid]["fields"]
        return " · ".join(f"{k}: {v}" for k, v in fields if k not in ("arch", "method", "device"))


# -- tables -------------------------------------------------------------------------------------------------------
def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _direction(col: str, columns: dict[str, tuple[str, Metric]]) -> str:
    return columns[col][1].direction if col in columns else ("down" if col.endswith("↓") else "up")


def _best_cells(rows: pd.DataFrame, cols: list[str], columns: dict) -> set[tuple[int, str]]:
    """(row index, column) of the best value per column among the measured rows of one preset and subset, where
    at least two rows compete; ties are all best. Reported rows never take part."""
    best = set()
    measured = rows[rows["kind"] == "measured"]
    for _, grp in measured.groupby(["preset", "subset"]):
        for c in cols:
            vals = grp[c].dropna()
            if len(vals) >= 2:
                target = vals.max() if _direction(c, columns) == "up" else vals.min()
                best |= {(i, c) for i in vals.index[vals == target]}
    return best


def _suite_table(table: pd.DataFrame, cols: list[str], columns: dict, specs: dict[str, TaskSpec],
                 meta: _Meta) -> str:
    rows = table[table[cols].notna().any(axis=1)]
    best = _best_cells(rows, cols, columns)
    std, counts = table.attrs.get("std", {}), table.attrs.get("counts", {})
    head = [f'<th data-type="{"num" if c in ("subset", "seeds") else "text"}">{ID_HEADERS[c]}</th>'
            for c in ID_HEADERS]
    extra_col = {}
    for c in cols:
        task, metric = columns.get(c, (None, None))
        extra_col[c] = task is not None and metric.name != specs[task].primary.name
        label = f"{_esc(task)}<br>{_esc(metric.name)} {metric.arrow}" if task else _esc(c)
        how = "higher is better" if _direction(c, columns) == "up" else "lower is better"
        head.append(f'<th class="num{" extra" if extra_col[c] else ""}" data-type="num" '
                    f'data-dir="{_direction(c, columns)}" title="{_esc(c)}: {how}; click to sort">{label}</th>')
    body = []
    sources = table.attrs.get("sources", [])
    for idx, row in rows.iterrows():
        reported = row["kind"] == "reported"
        rkey = (row["sha256"], row["preset"], int(row["subset"]))
        row_mid = meta.reported(row["checkpoint"], row, sources) if reported else meta.ids.get(rkey)
        cells = []
        for c in ID_HEADERS:
            v = row[c]
            text = "—" if pd.isna(v) else str(int(v)) if c in ("subset", "seeds") else str(v)
            shown = _esc(text) + (' <span class="tag">reported</span>' if reported and c == "checkpoint" else "")
            cells.append(_td(shown, "" if text == "—" else text, row_mid if c == "checkpoint" else None, meta, "id"))
        for c in cols:
            v = row[c]
            task = columns.get(c, (None,))[0]
            mid = row_mid if reported or task is None else meta.ids.get((*rkey, task), row_mid)
            classes = " ".join(x for x in ("num", "extra" if extra_col[c] else "",
                                           "best" if (idx, c) in best else "") if x)
            cells.append(_td(_value_text(v, c, row, rkey, std, counts, reported), "" if pd.isna(v) else repr(float(v)),
                             mid, meta, classes))
        body.append(f'<tr class="{"reported" if reported else "measured"}">' + "".join(cells) + "</tr>")
    return ('<div class="scroll"><table class="board"><thead><tr>' + "".join(head) + "</tr></thead><tbody>"
            + "\n".join(body) + "</tbody></table></div>")


def _td(content: str, sort_value: str, mid: str | None, meta: _Meta, classes: str) -> str:
    attrs = f' class="{classes}" data-v="{_esc(sort_value)}"'
    if mid is not None:
        attrs += f' data-meta="{mid}" title="{_esc(meta.title(mid))}"'
    return f"<td{attrs}>{content}</td>"


def _value_text(v, col: str, row: pd.Series, rkey: tuple, std: dict, counts: dict, reported: bool) -> str:
    if pd.isna(v):
        return "—"
    text = lb._fmt(v)
    if reported:
        return text
    n = counts.get(rkey, {}).get(col)
    if col in std.get(rkey, {}):
        text += " ± " + lb._fmt_like(std[rkey][col], v)
    if n is not None and (n >= 2 or n < int(row["seeds"])):
        text += f' <span class="n">(n={n})</span>'
    return text


# -- charts -------------------------------------------------------------------------------------------------------
def _labels(table: pd.DataFrame) -> pd.Series:
    """Unique bar labels: the checkpoint, plus preset / subset when the table mixes them, plus the sha if needed."""
    measured = table["kind"] == "measured"
    mixed = table.loc[measured, ["preset", "subset"]].drop_duplicates().shape[0] > 1
    labels = table["checkpoint"].astype(str).copy()
    if mixed:
        labels[measured] += " · " + table["preset"] + table["subset"].map(lambda s: f" · subset {s}" if s else "")
    labels[~measured] += " (reported)"
    dup = labels.duplicated(keep=False) & measured
    labels[dup] += " · " + table["sha256"]
    return labels


def _figure_html(fig, div_id: str, height: int = 380) -> str:
    config = {"displaylogo": False, "responsive": True, "showSendToCloud": False}  # no upload to a plotly cloud
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, default_height=f"{height}px",
                       config=config)


def _task_chart(table: pd.DataFrame, task: str, metric: Metric) -> str:
    import plotly.graph_objects as go

    col = lb.column_name(task, metric)
    rows = table[table[col].notna()].assign(label=_labels(table), group=table["method"].map(method_group))
    rows = rows[(rows["kind"] == "measured") | rows["group"].isin(["MIM", "supervised"])]
    std = table.attrs.get("std", {})
    fig = go.Figure()
    for (kind, group), grp in rows.groupby(["kind", "group"], sort=False):
        errs = [std.get((r["sha256"], r["preset"], r["subset"]), {}).get(col) for _, r in grp.iterrows()]
        fig.add_trace(go.Bar(
            x=list(grp["label"]), y=list(grp[col]), name=f"{group} ({kind})",
            error_y=dict(type="data", array=errs, visible=any(e is not None for e in errs)),
            marker=dict(color=COLORS[group], pattern=dict(shape="/" if kind == "reported" else "")),
            hovertemplate="%{x}: %{y:.4g}<extra></extra>"))
    unit = f" ({metric.unit})" if metric.unit else ""
    fig.update_layout(title=f"{task}: {metric.name} {metric.arrow}", barmode="overlay", template="simple_white",
                      yaxis_title=f"{metric.name}{unit}", margin=dict(l=60, r=20, t=50, b=110),
                      xaxis=dict(categoryorder="array", categoryarray=list(rows["label"])))
    return f'<div class="chart">{_figure_html(fig, f"chart-{task}")}</div>'


def _deltas(rows: pd.DataFrame, col: str, direction: str) -> tuple[float, str] | None:
    """Best MIM minus best supervised in ``rows`` (sign-adjusted: positive = MIM better) and a hover text."""
    groups = rows["method"].map(method_group)
    best = {}
    for g in ("MIM", "supervised"):
        vals = rows.loc[(groups == g) & rows[col].notna(), col]
        if vals.empty:
            return None
        best[g] = vals.idxmax() if direction == "up" else vals.idxmin()
    mim, sup = (rows.loc[best[g]] for g in ("MIM", "supervised"))
    sign = 1.0 if direction == "up" else -1.0
    hover = f"MIM {mim['checkpoint']}: {mim[col]:.4g}<br>supervised {sup['checkpoint']}: {sup[col]:.4g}"
    return sign * (mim[col] - sup[col]), hover


def _delta_section(table: pd.DataFrame, tasks: list[str], specs: dict[str, TaskSpec]) -> str:
    import plotly.graph_objects as go

    head = '<section id="delta"><h2>MIM − supervised</h2>'
    measured = table[table["kind"] == "measured"]
    found = set(measured["method"].map(method_group))
    missing = [g for g in ("MIM", "supervised") if g not in found]
    if missing:
        methods = ", ".join(sorted(set(measured["method"].astype(str)))) or "none"
        return (head + f'<p class="note">No delta chart: the results DB holds no {" and no ".join(missing)} '
                f"checkpoint (methods found: {_esc(methods)}; MIM = method {', '.join(sorted(MIM_METHODS))}, "
                f"supervised = method {', '.join(sorted(SUPERVISED_METHODS))}).</p></section>")
    fig = go.Figure()
    for (preset, subset), grp in measured.groupby(["preset", "subset"], sort=False):
        points = [(t, _deltas(grp, lb.column_name(t, specs[t].primary), specs[t].primary.direction)) for t in tasks]
        points = [(t, d) for t, d in points if d is not None]
        if points:
            fig.add_trace(go.Bar(x=[t for t, _ in points], y=[d[0] for _, d in points],
                                 hovertext=[d[1] for _, d in points], hovertemplate="%{x}: %{y:+.4g}<br>"
                                 "%{hovertext}<extra></extra>",
                                 name=f"measured, preset {preset}" + (f" · subset {subset}" if subset else "")))
    if not fig.data:
        return (head + '<p class="note">No delta chart: no task has both a MIM and a supervised checkpoint scored '
                "with the same preset and subset.</p></section>")
    reported = table[table["kind"] == "reported"]
    paper = []
    for t in tasks:  # the paper's own gap: MIM and SUP rows of the same architecture
        prim = specs[t].primary
        pairs = (_deltas(g, lb.column_name(t, prim), prim.direction) for _, g in reported.groupby("arch", sort=False))
        d = next((p for p in pairs if p is not None), None)
        if d is not None:
            paper.append((t, d))
    if paper:
        fig.add_trace(go.Bar(x=[t for t, _ in paper], y=[d[0] for _, d in paper], hovertext=[d[1] for _, d in paper],
                             hovertemplate="%{x}: %{y:+.4g}<br>%{hovertext}<extra></extra>",
                             name="paper (reported, same arch)", marker=dict(color="#bbbbbb", pattern=dict(shape="/"))))
    fig.update_layout(barmode="group", template="simple_white", title="best MIM − best supervised, primary metric",
                      yaxis_title="Δ (+ = MIM better, metric's own unit)", margin=dict(l=60, r=20, t=50, b=110),
                      xaxis=dict(categoryorder="array", categoryarray=tasks))
    fig.add_hline(y=0, line_width=1, line_color="#444")
    note = ("<p>Per task, the primary metric of the best MIM checkpoint minus that of the best supervised one, "
            "among the measured rows of one preset and subset, sign-adjusted so that positive means MIM is better "
            f"(for ↓ metrics the difference is negated). MIM = method {', '.join(sorted(MIM_METHODS))}; supervised = "
            f"method {', '.join(sorted(SUPERVISED_METHODS))}; other methods (random, unknown) take no part. The "
            "hatched bars are the paper's reported gap between MIM and supervised models of the same architecture."
            "</p>")
    return head + note + f'<div class="chart wide">{_figure_html(fig, "chart-delta", 420)}</div></section>'


# -- analysis output ----------------------------------------------------------------------------------------------
def _analysis_source(folder: Path) -> Path:
    if not folder.is_dir():
        raise BenchmarkError(f"--analysis {folder}: no such folder", "pass the --out folder of `benchmark analyze`")
    if not (folder / "report.md").is_file() and (folder / "analysis" / "report.md").is_file():
        folder = folder / "analysis"  # the --out folder of `benchmark reproduce-analysis`
    if not (folder / "report.md").is_file() and not any(folder.glob("*.png")):
        raise BenchmarkError(f"--analysis {folder} holds no analysis output (no report.md, no .png figure)",
                             "run `benchmark analyze --out DIR` and pass that DIR")
    return folder


def _analysis_section(src: Path, out: Path, index: int) -> str:
    rel = f"analysis/{index}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', src.resolve().name)}"
    (out / rel).mkdir(parents=True, exist_ok=True)
    pngs = sorted(src.glob("*.png"))
    for p in pngs:
        shutil.copyfile(p, out / rel / p.name)
    names = {p.name for p in pngs}
    report = src / "report.md"
    body, used = _markdown(report.read_text(encoding="utf-8"), rel, names) if report.is_file() else ("", set())
    body += "".join(_img(rel, p.name, p.stem.replace("_", " ")) for p in pngs if p.name not in used)
    return f'<section id="analysis-{index}" class="analysis"><h2>Analysis: {_esc(src)}</h2>{body}</section>'


def _img(rel: str, name: str, caption: str) -> str:
    return (f'<figure><img src="{_esc(quote(f"{rel}/{name}"))}" alt="{_esc(caption)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _inline(text: str) -> str:
    text = _esc(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _markdown(text: str, rel: str, pngs: set[str]) -> tuple[str, set[str]]:
    """The few Markdown constructs of the analysis reports: headings, paragraphs, lists, tables and images of the
    report's own folder. Returns the HTML and the image files it shows."""
    out, used, para = [], set(), []
    lines = text.splitlines()

    def flush():
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i].strip()
        block_kind = "|" if line.startswith("|") else "- " if line.startswith("- ") else None
        if block_kind:
            flush()
            block = []
            while i < len(lines) and lines[i].strip().startswith(block_kind):
                block.append(lines[i].strip())
                i += 1
            out.append(_md_table(block) if block_kind == "|" else
                       "<ul>" + "".join(f"<li>{_inline(b[2:])}</li>" for b in block) + "</ul>")
            continue
        heading = re.fullmatch(r"(#{1,6})\s+(.*)", line)
        image = re.fullmatch(r"!\[([^\]]*)\]\(([^)\s]+)\)", line)
        if not line or heading or image:
            flush()
        if heading:
            level = min(len(heading[1]) + 2, 6)  # the site's own h1 / h2 stay above the report's headings
            out.append(f"<h{level}>{_inline(heading[2])}</h{level}>")
        elif image and image[2] in pngs:
            used.add(image[2])
            out.append(_img(rel, image[2], image[1]))
        elif image:
            out.append(f"<p>[{_esc(image[1])}: {_esc(image[2])} not found]</p>")
        elif line:
            para.append(line)
        i += 1
    flush()
    return "\n".join(out), used


def _md_table(block: list[str]) -> str:
    rows = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", r.strip("|"))] for r in block]
    sep = len(rows) > 1 and all(re.fullmatch(r":?-+:?", c) for c in rows[1])
    align = [' class="num"' if c.endswith(":") else "" for c in rows[1]] if sep else []
    head, body = (rows[0], rows[2:]) if sep else ([], rows)

    def cells(tag, row):
        return "".join(f"<{tag}{align[j] if j < len(align) else ''}>{_inline(c)}</{tag}>" for j, c in enumerate(row))

    return ('<div class="scroll"><table class="md">' + (f"<thead><tr>{cells('th', head)}</tr></thead>" if head else "")
            + "<tbody>" + "".join(f"<tr>{cells('td', r)}</tr>" for r in body) + "</tbody></table></div>")


# -- page ---------------------------------------------------------------------------------------------------------
def _page(title: str, nav: list[tuple[str, str]], body: str, table: pd.DataFrame, meta: dict) -> str:
    links = " · ".join(f'<a href="#{_esc(a)}">{_esc(t)}</a>' for a, t in nav)
    reported = bool((table["kind"] == "reported").any())
    foot = ""
    if reported:
        foot = ("<p>Rows marked <span class=\"tag\">reported</span> are numbers reported by Xie et al., \"Revealing "
                "the Dark Secrets of Masked Image Modeling\" (CVPR 2023), copied from results/reference/paper.csv; "
                "they are not scores of this suite, never ranked and never marked best.</p><ul>"
                + "".join(f"<li>{_esc(s)}</li>" for s in table.attrs.get("sources", [])) + "</ul>")
    legend = ("↑ higher is better, ↓ lower is better. A cell is the mean over seeds, ± the std and (n=seeds) when "
              "it rests on several. <span class=\"best\">Bold green</span>: the best value of the column among the "
              "measured rows of one preset and subset. 'mean rank' ranks those rows per task (1 = best) and averages "
              "over the suite's tasks. Click a column header to sort (again to reverse); hover a cell for its run, "
              "click it for the details.")
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    data = json.dumps(meta, ensure_ascii=False, sort_keys=True).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<link rel="stylesheet" href="site.css">
<script src="plotly.min.js"></script>
</head>
<body>
<header><h1>{_esc(title)}</h1><nav>{links}</nav>
<p class="legend">{legend}</p>
<label class="toggle"><input type="checkbox" id="all-metrics"> show every metric of every task</label></header>
<main>
{body}
</main>
<aside id="details" hidden><button type="button" id="details-close" aria-label="close">×</button>
<div id="details-body"></div></aside>
<footer>{foot}<p>Generated {generated} by <code>benchmark leaderboard --format html</code>.</p></footer>
<script type="application/json" id="site-meta">{data}</script>
<script src="site.js"></script>
</body>
</html>
"""


SITE_CSS = """body { font: 14px/1.45 system-ui, sans-serif; margin: 0 1.5em 2em; color: #222; }
header nav a { margin: 0 .2em; }
.legend, .note { color: #555; max-width: 70em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: .25em .6em; text-align: left; white-space: nowrap; }
th.num, td.num { text-align: right; }
table.board th { cursor: pointer; background: #f4f4f4; position: sticky; top: 0; vertical-align: bottom; }
table.board th[aria-sort=ascending]::after { content: " ▲"; }
table.board th[aria-sort=descending]::after { content: " ▼"; }
table.board td[data-meta] { cursor: pointer; }
table.board td:hover { background: #eef4fb; }
.extra { display: none; }
body.all-metrics .extra { display: table-cell; }
.best { font-weight: bold; color: #11772e; }
tr.reported td { font-style: italic; color: #666; background: #fafafa; }
.tag { font-size: 80%; font-style: normal; padding: 0 .4em; border-radius: .6em; background: #e6e6e6; }
.n { color: #888; font-size: 85%; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 1em; }
.chart { border: 1px solid #eee; }
figure { display: inline-block; margin: .5em 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 90%; }
#details { position: fixed; top: 1em; right: 1em; width: 36em; max-height: 90vh; overflow: auto; background: #fff;
  border: 1px solid #bbb; box-shadow: 0 2px 12px rgba(0,0,0,.2); padding: .5em 1em 1em; z-index: 10; }
#details[hidden] { display: none; }
#details-close { float: right; font-size: 140%; border: 0; background: none; cursor: pointer; }
#details dt { font-weight: bold; } #details dd { margin: 0 0 .3em 1em; word-break: break-word; }
#details td { white-space: normal; font-size: 90%; }
"""

SITE_JS = """// Sorting, the all-metrics toggle and the details panel of the leaderboard site (no dependencies).
"use strict";
const META = JSON.parse(document.getElementById("site-meta").textContent);

function sortBy(th) {
  const table = th.closest("table"), body = table.tBodies[0], i = th.cellIndex;
  const rows = Array.from(body.rows);
  const reported = rows.filter(r => r.classList.contains("reported"));  // never ranked: they stay last
  const measured = rows.filter(r => !r.classList.contains("reported"));
  const bestFirst = th.dataset.type === "text" || th.dataset.dir === "down" ? 1 : -1;
  const order = th.dataset.order ? -Number(th.dataset.order) : bestFirst;
  table.querySelectorAll("th").forEach(h => { delete h.dataset.order; h.removeAttribute("aria-sort"); });
  th.dataset.order = order;
  th.setAttribute("aria-sort", order > 0 ? "ascending" : "descending");
  const key = r => r.cells[i].dataset.v || "";
  measured.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === "" || y === "") return (x === "") - (y === "");  // empty cells last either way
    return order * (th.dataset.type === "text" ? x.localeCompare(y) : Number(x) - Number(y));
  });
  measured.concat(reported).forEach(r => body.appendChild(r));
}

function el(tag, text) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  return e;
}

function showDetails(id) {
  const m = META[id], box = document.getElementById("details-body");
  if (!m) return;
  box.replaceChildren(el("h3", m.title));
  const dl = el("dl");
  m.fields.forEach(([k, v]) => { dl.append(el("dt", k), el("dd", v)); });
  box.append(dl);
  if (m.runs && m.runs.rows.length) {
    const t = el("table"), head = el("tr");
    m.runs.columns.forEach(c => head.append(el("th", c)));
    t.append(head);
    m.runs.rows.forEach(r => { const tr = el("tr"); r.forEach(v => tr.append(el("td", String(v)))); t.append(tr); });
    box.append(el("h4", "runs"), t);
  }
  document.getElementById("details").hidden = false;
}

document.querySelectorAll("table.board th").forEach(th => th.addEventListener("click", () => sortBy(th)));
document.getElementById("all-metrics").addEventListener("change", e => {
  document.body.classList.toggle("all-metrics", e.target.checked);
  window.dispatchEvent(new Event("resize"));
});
document.addEventListener("click", e => {
  const cell = e.target.closest("td[data-meta]");
  if (cell) showDetails(cell.dataset.meta);
});
document.getElementById("details-close").addEventListener("click", () => {
  document.getElementById("details").hidden = true;
});
"""
