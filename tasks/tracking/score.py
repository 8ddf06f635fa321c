"""Score the raw results of ANY tracker on GOT-10k val or LaSOT test (``benchmark score-tracking``).

Two result layouts are read, per sequence:

* the got10k toolkit's: ``<results>/<seq>/<seq>_001.txt`` (and ``_002`` … for the repeated runs of a
  non-deterministic tracker, pooled as the toolkit does);
* pytracking's / the LaSOT toolkit's: ``<results>/<seq>.txt``.

A file holds one ``x,y,w,h`` line per frame, frame 1 included (commas, tabs or spaces between numbers). The scores are
the suite's own (tasks/tracking/metrics.py, the official definitions). GOT-10k test has no public ground truth: only
its evaluation server scores it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from benchmark.errors import BenchmarkError, DataError

from .metrics import SequenceResult, got10k_scores, lasot_scores
from .sequences import Sequence, got10k_sequences, lasot_sequences

_SEPARATOR = re.compile(r"[,\s]+")


def read_boxes(path: Path, frames: int, exact: bool) -> np.ndarray:
    """(N, 4) boxes of one result file; every line must parse and there must be one per frame (``exact``) or at
    least one per frame (LaSOT's toolkit cuts longer files)."""
    rows = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in _SEPARATOR.split(line.strip())]
        except ValueError:
            values = []
        if len(values) != 4:
            raise BenchmarkError(f"{path}, line {no}: {line.strip()[:60]!r} is not 'x,y,w,h'",
                                 "write one box per line, four numbers, frame 1 included")
        rows.append(values)
    if len(rows) < frames or (exact and len(rows) != frames):
        raise BenchmarkError(f"{path} has {len(rows)} boxes for a sequence of {frames} frames",
                             "write one box per frame, frame 1 (the given box) included")
    return np.asarray(rows, dtype=np.float64)


def _runs(results: Path, seq: Sequence, exact: bool) -> list[np.ndarray] | None:
    folder = results / seq.name
    files = sorted(folder.glob(f"{seq.name}_[0-9][0-9][0-9].txt")) if folder.is_dir() else []
    if files:
        return [read_boxes(f, len(seq), exact) for f in files]
    flat = results / f"{seq.name}.txt"
    return [read_boxes(flat, len(seq), exact)] if flat.is_file() else None


def score_results(dataset: str, root: Path, results: Path, split: str | None = None) -> dict:
    """The metrics (percent) of the result files in ``results`` for ``dataset`` ('got10k' | 'lasot') at ``root``."""
    if not Path(results).is_dir():
        raise BenchmarkError(f"results folder not found: {results}", "pass the folder holding the tracker's files")
    if dataset == "got10k":
        split = split or "val"
        if split == "test":
            raise BenchmarkError("GOT-10k test has no public ground truth",
                                 "submit the results zip to the GOT-10k evaluation server, or score --split val")
        if split != "val":
            raise BenchmarkError(f"GOT-10k split {split!r} cannot be scored here", "use --split val")
        sequences = got10k_sequences(root, "val")
    elif dataset == "lasot":
        if split not in (None, "test"):
            raise BenchmarkError(f"LaSOT split {split!r} cannot be scored here", "LaSOT is scored on test")
        sequences = lasot_sequences(root, "test")
    else:
        raise BenchmarkError(f"unknown tracking dataset {dataset!r}", "use got10k or lasot")
    if not sequences:
        raise DataError(f"{root}: the {dataset} split lists no sequence", "check the split file")
    scored, missing = [], []
    for seq in sequences:
        runs = _runs(Path(results), seq, exact=dataset == "got10k")
        if runs is None:
            missing.append(seq.name)
            continue
        scored += [SequenceResult(name=seq.name, pred=run, gt=seq.boxes, visible=seq.visible, cover=seq.cover,
                                  resolution=seq.resolution) for run in runs]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise BenchmarkError(f"{results} has no result for {len(missing)} of {len(sequences)} sequences: {shown}",
                             "write <results>/<seq>/<seq>_001.txt or <results>/<seq>.txt for every sequence")
    scores = got10k_scores(scored) if dataset == "got10k" else lasot_scores(scored)
    keys = ("AO", "SR50", "SR75") if dataset == "got10k" else ("success_auc", "precision", "norm_precision")
    return {"dataset": dataset, "sequences": len(sequences), "runs": len(scored),
            **{k: float(scores[k]) for k in keys}}
