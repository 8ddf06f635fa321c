"""`benchmark reproduce-analysis --mini`: the verdicts follow the numbers, and the whole path runs on the CPU."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.analysis.reproduce import findings, findings_markdown
from tests.conftest import run_cli


def _write(out, dist_late: dict, div_late: dict, cka_off: dict, layers: int = 6):
    rows_d, rows_v = [], []
    for model in ("simmim", "supervised"):
        for layer in range(layers):
            late = layer >= layers - 2  # last third of 6 layers
            for head in range(2):
                rows_d.append(dict(model=model, layer=layer, head=head, value=dist_late[model] if late else 5.0))
                rows_v.append(dict(model=model, layer=layer, head=head, value=div_late[model] if late else 1.0))
        m = np.full((layers, layers), cka_off[model])
        np.fill_diagonal(m, 1.0)
        pd.DataFrame(m, index=pd.Index(range(layers), name="layer")).to_csv(out / f"cka_{model}.csv")
    pd.DataFrame(rows_d).to_csv(out / "attention_distance.csv", index=False)
    pd.DataFrame(rows_v).to_csv(out / "head_diversity.csv", index=False)


def test_verdicts_follow_the_measurements(tmp_path):
    # the paper's pattern: supervised global + uniform heads late, MIM layers alike
    _write(tmp_path, {"simmim": 8.0, "supervised": 20.0}, {"simmim": 0.9, "supervised": 0.1},
           {"simmim": 0.8, "supervised": 0.4})
    rows = findings(tmp_path)
    assert [r["reproduced"] for r in rows] == [True, True, True]
    assert rows[0]["mim"] == 8.0 and rows[0]["supervised"] == 20.0
    assert abs(rows[2]["mim"] - 0.8) < 1e-9  # off-diagonal mean only
    # the opposite pattern: nothing reproduces, and the report says so
    _write(tmp_path, {"simmim": 20.0, "supervised": 8.0}, {"simmim": 0.1, "supervised": 0.9},
           {"simmim": 0.4, "supervised": 0.8})
    rows = findings(tmp_path)
    assert not any(r["reproduced"] for r in rows)
    assert "0 of 3 findings reproduce" in findings_markdown(rows, iters=10)


def test_reproduce_analysis_mini_runs_end_to_end(tmp_path):
    out = run_cli("reproduce-analysis", "--mini", "--iters", "20", "--num-images", "16", "--out", tmp_path / "r",
                  timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    report = (tmp_path / "r" / "analysis" / "report.md").read_text()
    assert "Which of the paper's findings reproduce" in report and "findings reproduce at this scale" in report
    for name in ("attention_distance", "attention_entropy", "head_diversity", "cka_simmim", "cka_supervised",
                 "cka_simmim_vs_supervised", "avgdist"):
        assert (tmp_path / "r" / "analysis" / f"{name}.csv").is_file()
        assert (tmp_path / "r" / "analysis" / f"{name}.png").is_file()
    assert len(pd.read_csv(tmp_path / "r" / "analysis" / "findings.csv")) == 3
    # the SimMIM pre-training ran beside the supervised training, its output in its own log
    assert "Saving checkpoint at 20 iterations" in (tmp_path / "r" / "pretrain_simmim.log").read_text()
    assert "supervised: iteration 20/20" in out.stdout


def test_reproduce_analysis_requires_positive_iters(tmp_path):
    out = run_cli("reproduce-analysis", "--mini", "--iters", "0", "--out", tmp_path / "r")
    assert out.returncode == 2 and "--iters must be >= 1" in out.stderr
