"""The paper's reported numbers: ``results/reference/paper.csv``, its one path and its reader.

Long format, one row per number: ``model, arch, method, task, metric, value, [unit,] source``. The leaderboard
turns them into rows of kind 'reported' (the paper's numbers, never scores of this suite).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BenchmarkError

if TYPE_CHECKING:
    import pandas as pd

REFERENCE_CSV = Path(__file__).resolve().parent.parent / "results" / "reference" / "paper.csv"
REFERENCE_COLUMNS = ["model", "arch", "method", "task", "metric", "value", "source"]


def load_reference(path: str | Path = REFERENCE_CSV) -> pd.DataFrame:
    """The paper's reported numbers (long format: model, arch, method, task, metric, value, [unit,] source)."""
    import pandas as pd  # here, not at the top: the CLI imports this module for its default path only

    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"reference file {path} not found", f"restore it from git ({REFERENCE_CSV.name})")
    try:
        ref = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise BenchmarkError(f"reference file {path} is not a readable CSV ({exc})", "restore it from git") from exc
    missing = [c for c in REFERENCE_COLUMNS if c not in ref.columns]
    if missing:
        raise BenchmarkError(f"reference file {path} lacks columns {missing}",
                             f"it needs: {', '.join(REFERENCE_COLUMNS)}")
    try:
        ref["value"] = ref["value"].astype("float64")
    except ValueError as exc:
        raise BenchmarkError(f"reference file {path} has a non-numeric value ({exc})", "fix the file") from exc
    bad = ref[~ref["value"].map(math.isfinite)]
    if len(bad):
        raise BenchmarkError(f"reference file {path} has a non-finite value for {bad.iloc[0]['task']}",
                             "fix the file")
    return ref
