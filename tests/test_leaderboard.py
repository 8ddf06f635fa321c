"""Leaderboard tables (benchmark.leaderboard), reference rows (benchmark.reference) and the regression check
(benchmark.check), on small synthetic specs and the real ones."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmark import check, reference
from benchmark import leaderboard as lb
from benchmark.errors import BenchmarkError
from benchmark.registry import Metric, TaskSpec, load_specs


def _spec(name, suite, *metrics):
    return TaskSpec(name=name, suite=suite, description="", metrics=tuple(metrics), dataset={}, presets={})


# semantic: all primaries ↑ -> "semantic mean ↑"; geometric: ↑ ↓ ↑ -> "geometric mean rank ↓"
SPECS = {
    "sa": _spec("sa", "semantic", Metric("top1", "up", True), Metric("top5", "up")),
    "sb": _spec("sb", "semantic", Metric("acc", "up", True)),
    "ga": _spec("ga", "geometric", Metric("AP", "up", True), Metric("AR", "up")),
    "gb": _spec("gb", "geometric", Metric("d1", "up"), Metric("rmse", "down", True)),  # primary listed second
    "gc": _spec("gc", "geometric", Metric("AO", "up", True)),
}
SHA = {k: (c * 64) for k, c in zip("ABCDE", "abcde")}
SHA["Z"] = "0" * 6 + "f" * 58  # leading zeros must survive the CSV round trip as text


def _results(rows, preset="ci"):
    """rows: (ckpt, task, metric, seed, value[, preset])."""
    out = []
    for r in rows:
        ckpt, task, metric, seed, value = r[:5]
        m = SPECS[task].metric(metric)
        out.append(dict(ckpt_sha256=SHA[ckpt], ckpt_label=f"ckpt-{ckpt}", ckpt_path=f"/c/{ckpt}.pth", arch="vit_b",
                        method="simmim", suite=SPECS[task].suite, task=task, preset=r[5] if len(r) > 5 else preset,
                        subset=0, seed=seed, metric=metric, value=value, direction=m.direction, finished_at=1.0,
                        run_id=len(out) + 1))
    return pd.DataFrame(out)


def _geo(ckpt, ap, rmse, ao, preset="ci"):
    rows = [(ckpt, "ga", "AP", 0, ap, preset), (ckpt, "gb", "rmse", 0, rmse, preset)]
    return rows + ([(ckpt, "gc", "AO", 0, ao, preset)] if ao is not None else [])


RESULTS = _results(
    [("A", "sa", "top1", s, v) for s, v in enumerate([79.0, 80.0, 81.0])]
    + [("A", "sa", "top5", 0, 95.0), ("A", "sb", "acc", 0, 60.0), ("A", "gb", "d1", 0, 0.9),
       ("B", "sa", "top1", 0, 70.0)]
    + _geo("A", 70.0, 0.30, 60.0) + _geo("B", 75.0, 0.35, 50.0) + _geo("C", 72.0, 0.30, 55.0)
    + _geo("D", 10.0, 9.0, 1.0, preset="paper")  # alone in its preset: rank 1 there, no influence on 'ci'
    + _geo("E", 99.0, 0.01, None)  # incomplete geometric suite: no mean rank, no influence on the others
)
REFERENCE = pd.DataFrame([
    dict(model="Paper-MIM", arch="SwinV2-B", method="simmim", task=t, metric=m, value=v, source="paper, Table 1")
    for t, m, v in [("ga", "AP", 99.0), ("gb", "rmse", 0.001), ("gc", "AO", 99.0), ("sa", "top1", 90.0),
                    ("sb", "acc", 70.0), ("zz", "x", 1.0)]])  # unknown task: ignored


def _row(table, ckpt):
    return table[table["checkpoint"] == ckpt].iloc[0]


@pytest.fixture(scope="module")
def table():
    return lb.build(RESULTS, SPECS, reference=REFERENCE)


def test_columns_directions_and_order(table):
    assert list(table.columns) == lb.ID_COLUMNS + [
        "sa/top1 ↑", "sa/top5 ↑", "sb/acc ↑", "semantic mean ↑",
        "ga/AP ↑", "gb/rmse ↓", "gb/d1 ↑", "gc/AO ↑", "geometric mean rank ↓"]  # ga/AR: no value -> no column
    assert list(table["kind"]) == ["measured"] * 5 + ["reported"], "reported rows come last"
    assert _row(table, "ckpt-A")["sha256"] == SHA["A"][:12]


def test_mean_over_seeds(table):
    a = _row(table, "ckpt-A")
    assert a["sa/top1 ↑"] == pytest.approx(80.0) and a["seeds"] == 3
    assert table.attrs["std"][(SHA["A"][:12], "ci", 0)]["sa/top1 ↑"] == pytest.approx(1.0)
    assert _row(table, "ckpt-B")["seeds"] == 1


def test_suite_mean_only_when_every_task_present(table):
    assert _row(table, "ckpt-A")["semantic mean ↑"] == pytest.approx((80.0 + 60.0) / 2)
    assert math.isnan(_row(table, "ckpt-B")["semantic mean ↑"]), "B lacks sb: no mean"
    assert _row(table, "Paper-MIM")["semantic mean ↑"] == pytest.approx(80.0), "complete reported rows get a mean"
    assert math.isnan(_row(table, "ckpt-C")["semantic mean ↑"])


def test_mean_rank_for_mixed_directions(table):
    # ci rows complete on ga/gb/gc: A, B, C.  AP↑ 70/75/72 -> 3,1,2;  rmse↓ .30/.35/.30 -> 1.5,3,1.5;
    # AO↑ 60/50/55 -> 1,3,2.  Means: A 5.5/3, B 7/3, C 5.5/3.
    rank = {c: _row(table, f"ckpt-{c}")["geometric mean rank ↓"] for c in "ABC"}
    assert rank["A"] == pytest.approx(5.5 / 3) and rank["B"] == pytest.approx(7 / 3)
    assert rank["C"] == pytest.approx(5.5 / 3)
    assert _row(table, "ckpt-D")["geometric mean rank ↓"] == 1.0, "ranked within its own preset"
    assert math.isnan(_row(table, "ckpt-E")["geometric mean rank ↓"]), "E lacks gc"


def test_reference_rows_marked_and_never_ranked(table):
    ref = _row(table, "Paper-MIM")
    assert ref["kind"] == "reported" and ref["sha256"] == "" and pd.isna(ref["seeds"])
    assert math.isnan(ref["geometric mean rank ↓"])
    # the reference beats everyone, yet the measured ranks equal those of a build without it
    plain = lb.build(RESULTS, SPECS)
    pd.testing.assert_series_equal(plain["geometric mean rank ↓"], table["geometric mean rank ↓"].iloc[:5])
    assert "zz/x" not in " ".join(table.columns)


def test_suite_filter():
    geo = lb.build(RESULTS, SPECS, suite="geometric", reference=REFERENCE)
    assert not any(c.startswith(("sa/", "sb/", "semantic")) for c in geo.columns)
    assert "geometric mean rank ↓" in geo.columns
    assert "ckpt-A" in set(geo["checkpoint"])
    sem = lb.build(RESULTS, SPECS, suite="semantic")
    assert set(sem["checkpoint"]) == {"ckpt-A", "ckpt-B"}, "rows without a score in the suite are left out"
    assert list(lb.build(RESULTS, SPECS, suite="all").columns) == list(lb.build(RESULTS, SPECS).columns)
    with pytest.raises(BenchmarkError, match="unknown suite"):
        lb.build(RESULTS, SPECS, suite="nope")
    empty = lb.build(RESULTS.iloc[0:0], SPECS)
    assert empty.empty and list(empty.columns) == lb.ID_COLUMNS


def test_csv_round_trip(table, tmp_path):
    z = lb.build(_results([("Z", "sa", "top1", 0, 1.0 / 3.0)]), SPECS, reference=REFERENCE)
    path = lb.to_csv(z, tmp_path / "out" / "board.csv")
    assert [p.name for p in path.parent.iterdir()] == ["board.csv"], "no temp file left behind"
    back = lb.read_csv(path)
    assert back["sha256"].iloc[0] == "000000ffffff"
    assert back["sa/top1 ↑"].iloc[0] == 1.0 / 3.0, "floats round-trip exactly"
    pd.testing.assert_frame_equal(back, z, check_dtype=False)
    pd.testing.assert_frame_equal(lb.read_csv(lb.to_csv(table, tmp_path / "t.csv")), table, check_dtype=False)


def test_markdown_content(table, tmp_path):
    text = lb.to_markdown(table, tmp_path / "board.md")
    assert (tmp_path / "board.md").read_text(encoding="utf-8") == text
    lines = text.splitlines()
    assert lines[0].startswith("# ")
    assert "↑ higher is better" in text and "↓ lower is better" in text
    assert "## semantic" in lines and "## geometric" in lines, "one table per suite"
    geo = lines[lines.index("## geometric"):]
    header = next(line for line in geo if line.startswith("| checkpoint"))
    assert "gb/rmse ↓" in header and "geometric mean rank ↓" in header and "| kind |" not in header
    assert "sa/top1" not in header, "a suite's table holds only its own columns"
    row_a = next(line for line in geo if line.startswith("| ckpt-A "))
    sem = lines[lines.index("## semantic"):lines.index("## geometric")]
    assert "80.00 ± 1.00" in next(line for line in sem if line.startswith("| ckpt-A ")), "mean ± std with 3 seeds"
    assert "| 0.300 (n=1) |" in row_a and "| 1.833 |" in row_a, "3 decimals below 10"
    assert "| 3 |" in row_a and "| 70.00 (n=1) |" in row_a, "ckpt-A has 3 seeds of sa/top1, 1 of the geometric tasks"
    assert "(n=" not in next(line for line in sem if line.startswith("| ckpt-A ")).split("80.00 ± 1.00")[1][:3]
    assert "— : no value" in text and "'mean rank' ranks" in text
    row_b = next(line for line in geo if line.startswith("| ckpt-B "))
    assert "±" not in row_b
    assert any(line.startswith("| Paper-MIM (reported) ") for line in lines)
    assert any(line.startswith("(reported):") for line in lines) and "- paper, Table 1" in lines
    assert lb._fmt(123.456) == "123.5" and lb._fmt(75.2) == "75.20" and lb._fmt(2.05) == "2.050"


# -- the committed reference file ---------------------------------------------------------------------------------
def test_reference_file_matches_real_specs():
    specs = load_specs()
    ref = reference.load_reference()
    for t, m in zip(ref["task"], ref["metric"]):
        assert t in specs, f"paper.csv names unknown task {t}"
        specs[t].metric(m)  # raises KeyError for an unknown metric
    assert not ref.duplicated(["model", "task", "metric"]).any()
    assert {"SwinV2-B 1K-SUP", "SwinV2-B 1K-MIM", "SwinV2-L 1K-MIM"} <= set(ref["model"])
    assert "k12_voc2007" not in set(ref["task"]) and not any("tracking" in t for t in ref["task"])
    b_mim = ref[ref["model"] == "SwinV2-B 1K-MIM"].set_index(["task", "metric"])["value"]
    assert b_mim[("nyu_depth", "rmse")] == 0.304 and b_mim[("coco_pose", "AP")] == 77.6
    pets = ref[(ref["task"] == "k12_pets")]
    assert set(pets["metric"]) == {"mean_per_class_acc"} and pets["source"].str.contains("did not name").all()
    board = lb.build(None, specs, suite="all", reference=ref)
    assert set(board["kind"]) == {"reported"} and len(board) == ref["model"].nunique()
    assert "geometric mean rank ↓" in board.columns and board["geometric mean rank ↓"].isna().all()
    combined = board.set_index("checkpoint").loc["SwinV2-B 1K-MIM", "combined mean ↑"]
    assert combined == pytest.approx((52.9 + 49.3 + 51.7) / 3)
    assert "(reported)" in lb.render_markdown(board)


# -- check.compare() ----------------------------------------------------------------------------------------------
@pytest.fixture()
def baseline(tmp_path, table):
    return lb.to_csv(table, tmp_path / "baseline.csv")


def _with(table, ckpt, **changes):
    cur = table.copy()
    for col, v in changes.items():
        cur.loc[cur["checkpoint"] == ckpt, col] = v
    return cur


def _status(cmp, ckpt, col):
    return cmp[(cmp["checkpoint"] == ckpt) & (cmp["column"] == col)]["status"].item()


def test_check_identical_is_clean(baseline, table):
    cmp, regressed = check.compare(baseline, table, SPECS)
    assert not regressed and set(cmp["status"]) == {"ok"}
    assert list(cmp.columns) == check.COMPARISON_COLUMNS
    assert "Paper-MIM" not in set(cmp["checkpoint"]), "reported rows are not checked"
    assert not cmp["column"].str.contains("mean").any(), "summary columns are not checked"
    assert set(cmp["matched_by"]) == {"sha256"}


def test_check_detects_regressions_in_both_directions(baseline, table):
    cmp, regressed = check.compare(baseline, _with(table, "ckpt-A", **{"ga/AP ↑": 69.0}), SPECS)
    assert regressed and _status(cmp, "ckpt-A", "ga/AP ↑") == "REGRESSION"
    assert cmp[cmp["column"] == "ga/AP ↑"]["delta"].iloc[0] == pytest.approx(-1.0)
    cmp, regressed = check.compare(baseline, _with(table, "ckpt-B", **{"gb/rmse ↓": 0.36}), SPECS)
    assert regressed and _status(cmp, "ckpt-B", "gb/rmse ↓") == "REGRESSION"


def test_check_improvement_is_not_a_regression(baseline, table):
    cur = _with(table, "ckpt-A", **{"ga/AP ↑": 71.0, "gb/rmse ↓": 0.2})
    cmp, regressed = check.compare(baseline, cur, SPECS)
    assert not regressed
    assert _status(cmp, "ckpt-A", "ga/AP ↑") == "improved" and _status(cmp, "ckpt-A", "gb/rmse ↓") == "improved"


def test_check_tolerances(baseline, table):
    cur = _with(table, "ckpt-A", **{"ga/AP ↑": 69.5, "gb/rmse ↓": 0.32})
    assert check.compare(baseline, cur, SPECS)[1]
    cmp, regressed = check.compare(baseline, cur, SPECS, tolerance=1.0)
    assert not regressed and _status(cmp, "ckpt-A", "ga/AP ↑") == "ok"
    # per-column keys, with or without the arrow, override the global tolerance
    cmp, regressed = check.compare(baseline, cur, SPECS, tolerance=1.0, tolerances={"gb/rmse": 0.01})
    assert regressed and _status(cmp, "ckpt-A", "gb/rmse ↓") == "REGRESSION"
    assert _status(cmp, "ckpt-A", "ga/AP ↑") == "ok"
    cmp, regressed = check.compare(baseline, cur, SPECS, tolerances={"ga/AP ↑": 0.5, "gb/rmse ↓": 0.05})
    assert not regressed
    with pytest.raises(BenchmarkError, match="unknown tolerance keys"):
        check.compare(baseline, cur, SPECS, tolerances={"ga/nope": 1.0})


def test_check_missing_fails_the_gate_unless_allowed(baseline, table):
    cur = _with(table, "ckpt-A", **{"sb/acc ↑": math.nan})
    cur = cur[cur["checkpoint"] != "ckpt-C"]
    cmp, regressed = check.compare(baseline, cur, SPECS)
    assert not regressed
    assert _status(cmp, "ckpt-A", "sb/acc ↑") == "MISSING"
    assert set(cmp[cmp["checkpoint"] == "ckpt-C"]["status"]) == {"MISSING"}
    code, line = check.verdict(cmp, regressed, allow_missing=False, strict=False)
    assert code == check.EXIT["missing"] == 3 and line.startswith("MISSING")
    code, line = check.verdict(cmp, regressed, allow_missing=True, strict=False)
    assert code == 0 and "have no current result (allowed)" in line
    worse = _with(cur, "ckpt-B", **{"gb/rmse ↓": 9.0})
    assert check.verdict(*check.compare(baseline, worse, SPECS), allow_missing=False, strict=False)[0] == 1


def test_check_reports_seed_count_differences_and_strict_fails_them(baseline, table):
    cmp, regressed = check.compare(baseline, table.assign(seeds=1), SPECS)
    assert not regressed and set(cmp[cmp["checkpoint"] == "ckpt-A"]["seeds"]) == {"3/1"}
    assert len(check.seed_mismatches(cmp)) > 0
    code, line = check.verdict(cmp, regressed, allow_missing=False, strict=False)
    assert code == 0 and "different seed counts" in line
    assert check.verdict(cmp, regressed, allow_missing=False, strict=True)[0] == 3


def test_check_refuses_a_baseline_without_values_or_with_text(tmp_path, table):
    ids = [c for c in table.columns if c in lb.ID_COLUMNS]
    with pytest.raises(BenchmarkError, match="has no metric column"):
        check.compare(lb.to_csv(table[ids], tmp_path / "ids.csv"), table, SPECS)
    blank = table.copy()
    blank[[c for c in table.columns if "/" in c]] = math.nan
    with pytest.raises(BenchmarkError, match="has no metric value"):
        check.compare(lb.to_csv(blank, tmp_path / "blank.csv"), table, SPECS)
    text = table.astype({"ga/AP ↑": object})
    text.loc[text["checkpoint"] == "ckpt-A", "ga/AP ↑"] = "n/a"
    with pytest.raises(BenchmarkError, match="column 'ga/AP ↑' holds 'n/a'.*ckpt-A.*not a number"):
        check.compare(lb.to_csv(text, tmp_path / "text.csv"), table, SPECS)


def test_check_falls_back_to_checkpoint_label(tmp_path, table):
    base = table.copy()
    base["sha256"] = ""  # e.g. a hand-written baseline without hashes
    path = lb.to_csv(base, tmp_path / "nosha.csv")
    cmp, regressed = check.compare(path, _with(table, "ckpt-B", **{"gc/AO ↑": 40.0}), SPECS)
    assert regressed and set(cmp["matched_by"]) == {"checkpoint"}


def test_check_errors(tmp_path, baseline, table):
    with pytest.raises(BenchmarkError, match="not found"):
        check.compare(tmp_path / "nope.csv", table, SPECS)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(BenchmarkError, match="not a leaderboard CSV"):
        check.compare(tmp_path / "other.csv", table, SPECS)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(BenchmarkError, match="not a leaderboard CSV"):
        check.compare(tmp_path / "empty.csv", table, SPECS)
    odd = table.assign(**{"ga/bogus ↑": 1.0, "nosuch/AP ↑": 2.0, "gb/rmse ↑": 3.0})
    with pytest.raises(BenchmarkError, match=r"unknown columns: .*ga/bogus ↑.*nosuch/AP ↑.*gb/rmse ↑") as exc:
        check.compare(lb.to_csv(odd, tmp_path / "odd.csv"), table, SPECS)
    assert "\n" not in str(exc.value)
    other = table.assign(sha256="f" * 12, checkpoint="someone-else")
    with pytest.raises(BenchmarkError, match="no row of baseline"):
        check.compare(baseline, other, SPECS)
    with pytest.raises(BenchmarkError, match="no row of baseline"):
        check.compare(baseline, table.assign(preset="other"), SPECS)


def test_reference_errors_are_one_line(tmp_path):
    with pytest.raises(BenchmarkError, match="not found"):
        reference.load_reference(tmp_path / "nope.csv")
    (tmp_path / "cols.csv").write_text("model,task\nA,x\n")
    with pytest.raises(BenchmarkError, match="lacks columns"):
        reference.load_reference(tmp_path / "cols.csv")
    head = ",".join(reference.REFERENCE_COLUMNS)
    (tmp_path / "nan.csv").write_text(f"{head}\nA,a,m,sa,top1,abc,paper\n")
    with pytest.raises(BenchmarkError, match="non-numeric"):
        reference.load_reference(tmp_path / "nan.csv")
    (tmp_path / "inf.csv").write_text(f"{head}\nA,a,m,sa,top1,inf,paper\n")
    with pytest.raises(BenchmarkError, match="non-finite value for sa"):
        reference.load_reference(tmp_path / "inf.csv")


def test_cli_default_reference_is_the_one_path():
    from benchmark import cli

    action = next(a for p in cli.build_parser()._subparsers._group_actions for n, sp in p.choices.items()
                  if n == "leaderboard" for a in sp._actions if a.dest == "reference")
    assert action.const == str(reference.REFERENCE_CSV) and reference.REFERENCE_CSV.is_file()
